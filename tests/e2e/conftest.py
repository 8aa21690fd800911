"""Browser tests: Debian's Chromium, driven by Playwright, against the real service (`make run`'s app).

The service is tests/integration's session fixture, imported: under `make test` the browser tests get
an instance and database of their own, so what they add to the catalog cannot disturb the integration
tests' assertions about it. Chromium is the system one (`apt-get install chromium`); Playwright never
downloads a browser here. Every step's screenshot lands in test-artifacts/e2e/<test>/.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy.orm import sessionmaker

from db.engine import make_sessionmaker
from serve_app.admin.auth.service import create_user
from tests.integration.conftest import Service, service, service_database_url, service_engine  # noqa: F401

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e"
NO_CHROMIUM = "no Chromium: apt-get install chromium"
ADMIN_USER, ADMIN_PASSWORD = "e2e-admin", "a long e2e password"
DESKTOP = {"width": 1200, "height": 900}
PHONE = {"width": 390, "height": 844}


def chromium_path() -> str | None:
    """SASTRE_CHROMIUM, else Debian's chromium on the PATH."""
    configured = os.environ.get("SASTRE_CHROMIUM")
    if configured:
        return configured if Path(configured).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser():
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
    """One test's browser tab: screenshots per step, and the page's uncaught JavaScript errors."""

    page: object
    folder: Path
    js_errors: list[str] = field(default_factory=list)
    steps: int = 0

    def shot(self, step: str) -> Path:
        self.steps += 1
        path = self.folder / f"{self.steps:02d}-{step}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


def _visit(browser, service: Service, request: pytest.FixtureRequest, viewport: dict) -> Iterator[Visit]:
    folder = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    context = browser.new_context(base_url=service.base_url, viewport=viewport)
    context.set_default_timeout(15_000)
    page = context.new_page()
    visit = Visit(page, folder)
    page.on("pageerror", lambda error: visit.js_errors.append(str(error)))
    try:
        yield visit
        assert not visit.js_errors, f"JavaScript errors on the page: {visit.js_errors}"
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


@pytest.fixture(scope="session")
def service_sessions(service_engine) -> sessionmaker:  # noqa: F811
    return make_sessionmaker(service_engine)


@pytest.fixture(scope="session")
def admin_account(service_sessions) -> tuple[str, str]:
    """An admin user, made the way an operator does (`serve_app.cli create-admin` calls create_user)."""
    with service_sessions.begin() as session:
        create_user(session, ADMIN_USER, ADMIN_PASSWORD)
    return ADMIN_USER, ADMIN_PASSWORD
