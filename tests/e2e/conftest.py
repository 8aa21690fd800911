"""Browser tests: Debian's Chromium, driven by Playwright, against the real service (`make run`'s app).

The service is tests/integration's `service` fixture, imported: the main shared service, which the
browser tests meet after the integration tests that use it (tests/services.py orders them so), and
whose catalog those tests leave as they found it. Chromium is the system one (`apt-get install
chromium`); Playwright never downloads a browser here. Every step's screenshot lands in
test-artifacts/e2e/<test>/.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy.orm import sessionmaker

from db.admin_users import find_user
from db.engine import make_sessionmaker
from serve_app.admin.auth.service import create_user
from tests.integration.conftest import Service, service, service_database_url, service_engine  # noqa: F401

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e"
NO_CHROMIUM = "no Chromium: apt-get install chromium"
ADMIN_USER, ADMIN_PASSWORD = "e2e-admin", "a long e2e password"
CSP_REPORTER = """document.addEventListener("securitypolicyviolation", (event) => console.error(
  `Content Security Policy refused ${event.blockedURI || "inline code"} (${event.violatedDirective})`));"""
DESKTOP = {"width": 1200, "height": 900}
PHONE = {"width": 390, "height": 844}


def chromium_path() -> str | None:
    """SASTRE_CHROMIUM, else Debian's chromium on the PATH."""
    configured = os.environ.get("SASTRE_CHROMIUM")
    if configured:
        return configured if Path(configured).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    """Chromium for one module: Playwright's sync API keeps an event loop running in the main thread
    while it is open, and later modules' `asyncio.run` (floods of requests) refuse to start beside it."""
    executable = chromium_path()
    if executable is None:
        pytest.skip(NO_CHROMIUM)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: tests run as root in CI containers, where Chromium's sandbox cannot start.
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@dataclass
class Visit:
    """One test's browser tab: screenshots per step, the page's uncaught JavaScript errors and anything
    its Content Security Policy refused (Chromium reports each refusal on the console)."""

    page: object
    folder: Path
    js_errors: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)
    steps: int = 0

    def shot(self, step: str) -> Path:
        self.steps += 1
        path = self.folder / f"{self.steps:02d}-{step}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


def wait_until(page, predicate: str, timeout: float = 15_000) -> None:
    """`page.wait_for_function`, without its `eval`: Playwright polls the predicate with `eval` inside the
    page, which the pages' CSP refuses (as it should), while `page.evaluate` goes through DevTools, which
    a CSP does not govern. Polls every 50 ms; `timeout` in milliseconds, as Playwright's."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(predicate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"still false after {timeout:g} ms: {predicate}")
        page.wait_for_timeout(50)


def _visit(browser, service: Service, request: pytest.FixtureRequest, viewport: dict) -> Iterator[Visit]:
    folder = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    context = browser.new_context(base_url=service.base_url, viewport=viewport)
    context.set_default_timeout(15_000)
    page = context.new_page()
    visit = Visit(page, folder)
    page.on("pageerror", lambda error: visit.js_errors.append(str(error)))
    page.on("console", lambda message: visit.csp_violations.append(message.text)
            if "Content Security Policy" in message.text else None)
    # The DOM's own report of each refusal, in case a console message is ever worded otherwise.
    page.add_init_script(CSP_REPORTER)
    try:
        yield visit
        assert not visit.js_errors, f"JavaScript errors on the page: {visit.js_errors}"
        assert not visit.csp_violations, f"Content Security Policy violations: {visit.csp_violations}"
    finally:
        if getattr(request.node, "rep_call_failed", False):
            visit.shot("at-failure")
        context.close()


@pytest.fixture
def visit(browser, service, request) -> Iterator[Visit]:
    yield from _visit(browser, service, request, DESKTOP)


@pytest.fixture
def phone_visit(browser, service, request) -> Iterator[Visit]:
    yield from _visit(browser, service, request, PHONE)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.rep_call_failed = report.failed
    return report


@pytest.fixture(scope="module")
def service_sessions(service_engine) -> sessionmaker:  # noqa: F811
    return make_sessionmaker(service_engine)


@pytest.fixture(scope="module")
def admin_account(service_sessions) -> tuple[str, str]:
    """An admin user, made the way an operator does (`serve_app.cli create-admin` calls create_user),
    once per service: modules that share it share the account."""
    with service_sessions.begin() as session:
        if find_user(session, ADMIN_USER) is None:
            create_user(session, ADMIN_USER, ADMIN_PASSWORD)
    return ADMIN_USER, ADMIN_PASSWORD
