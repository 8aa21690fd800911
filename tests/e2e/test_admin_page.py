"""The admin page at `/admin` in a real Chromium: log in, add a color the shop then offers, retry a failed job."""

from __future__ import annotations

import re
import time

import pytest
from sqlalchemy import text

from db.job_failures import NOT_IN_CATALOG
from tests.e2e.conftest import wait_until

pytestmark = pytest.mark.integration

NAVY = {"family_id": "lana-fria", "color_id": "lana-fria-azul-marino"}


def _log_in(visit, account, viewport_name: str = "") -> None:
    page = visit.page
    page.goto("/admin")
    page.get_by_label("Username").fill(account[0])
    page.get_by_label("Password").fill(account[1])
    visit.shot("login")
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Fabrics and colors").wait_for()


def test_a_wrong_password_is_refused_in_plain_words(visit, admin_account):
    page = visit.page
    page.goto("/admin")
    page.get_by_label("Username").fill(admin_account[0])
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert alert.inner_text() == "Wrong username or password."
    assert page.locator("#admin-app").is_hidden()
    visit.shot("refused")


def test_a_color_added_by_an_admin_is_offered_in_the_shop(visit, admin_account, service):
    page = visit.page
    _log_in(visit, admin_account)
    linen = page.locator('details.family[data-family="lino"]')
    linen.locator("summary").click()
    form = linen.get_by_role("form", name="Add a color to Lino Irlandés")
    form.get_by_label("Color name").fill("Verde salvia")
    form.get_by_label("Hex").fill("#8a9a7b")
    form.get_by_label("Swatch code (optional)").fill("210L-0999")
    form.get_by_label("Color in English, for the prompt").fill("sage green")
    visit.shot("new-color-filled")
    form.get_by_role("button", name="Add color").click()
    assert page.get_by_role("alert").inner_text() == "Color “Verde salvia” added to Lino Irlandés."
    row = page.locator('form.color-row[data-color="lino-verde-salvia"]')
    row.wait_for()
    assert row.get_by_label("Name").input_value() == "Verde salvia"
    visit.shot("color-added")

    page.goto("/")
    chip = page.locator(".fabric-card", has_text="Lino Irlandés").get_by_text("Verde salvia")
    chip.click()
    assert page.locator("#color-lino-verde-salvia").is_checked()
    card = page.locator(".fabric-card.selected")
    assert card.locator(".fabric-color-name").inner_text() == "Verde salvia · 210L-0999"
    wait_until(page, "document.querySelector('.fabric-card.selected .fabric-swatch').naturalWidth > 0")
    visit.shot("shop-offers-new-color")


def test_an_admin_uploads_a_swatch_photo_for_a_color(visit, admin_account):
    """Needs PUT /admin/colors/{color_id}/swatch (being added)."""
    from tests.e2e.test_shop import _plaid_png

    page = visit.page
    _log_in(visit, admin_account)
    tweed = page.locator('details.family[data-family="tweed"]')
    tweed.locator("summary").click()
    row = tweed.locator("form.color-row").first
    before = row.locator("img.swatch-thumb").get_attribute("src")
    row.locator('input[type="file"]').set_input_files(
        {"name": "tweed.png", "mimeType": "image/png", "buffer": _plaid_png()})
    alert = page.get_by_role("alert")
    wait_until(page, "document.getElementById('notice').textContent.length > 0")
    visit.shot("swatch-uploaded")
    assert alert.inner_text().startswith("New swatch photo for"), alert.inner_text()
    after = page.locator('details.family[data-family="tweed"] form.color-row').first.locator("img.swatch-thumb")
    assert after.get_attribute("src") != before


def _failed_job(service, service_sessions) -> str:
    """A job that failed as the runner records it (the same shape test_admin gives one)."""
    with service.client() as client:
        job_id = client.post("/generate", json={**NAVY, "cuts": ["recto"], "seed": 7}).json()["job_id"]
        deadline = time.monotonic() + 30
        while client.get(f"/jobs/{job_id}").json()["status"] != "completed":
            assert time.monotonic() < deadline, "the job did not finish"
            time.sleep(0.3)
    with service_sessions.begin() as session:
        session.execute(text("UPDATE generation_jobs SET status='failed', error_message=:code, error_detail=:why, "
                             "result_urls=NULL, cut_progress='{}'::jsonb WHERE job_id=:j"),
                        {"j": job_id, "code": NOT_IN_CATALOG.message,
                         "why": "NotInCatalog: fabric lana-fria/lana-fria-azul-marino is no longer in the catalog"})
    return job_id


def test_a_slow_first_history_load_never_overwrites_the_admins_search(visit, admin_account, service, service_sessions):
    """The page's own unfiltered load, answered after the admin's search, must not replace its results.

    CI saw the race: the table the search had drawn was swapped for another a moment later, and the row
    a test (or an admin) was about to click was gone. Here the first load is held back on purpose.
    """
    job_id = _failed_job(service, service_sessions)
    page = visit.page
    held = []

    def hold_unfiltered(route):
        if "status=" in route.request.url:
            route.continue_()
        else:
            held.append(route)

    page.route(re.compile(r"/admin/generations\?"), hold_unfiltered)
    _log_in(visit, admin_account)
    deadline = time.monotonic() + 15
    while not held:
        assert time.monotonic() < deadline, "the page never asked for its history"
        page.wait_for_timeout(50)
    filters = page.get_by_role("form", name="Filter the history")
    filters.get_by_label("Status").select_option("failed")
    filters.get_by_role("button", name="Show jobs").click()
    row = page.locator(f'tr[data-job="{job_id}"]')
    row.wait_for()
    drawn = row.element_handle()

    with page.expect_response(lambda response: response.request.url == held[0].request.url):
        held[0].continue_()
    page.wait_for_timeout(300)  # the stale answer's JSON is parsed and, before the fix, drawn by now
    assert drawn.evaluate("row => row.isConnected"), "the search's results were replaced by the stale first load"
    statuses = page.locator("tbody .status-pill").all_inner_texts()
    assert statuses and set(statuses) == {"failed"}, statuses
    visit.shot("search-kept")


def test_a_failed_job_is_found_in_the_history_and_retried(phone_visit, admin_account, service, service_sessions):
    job_id = _failed_job(service, service_sessions)
    page = phone_visit.page
    _log_in(phone_visit, admin_account)
    filters = page.get_by_role("form", name="Filter the history")
    filters.get_by_label("Status").select_option("failed")
    filters.get_by_role("button", name="Show jobs").click()
    row = page.locator(f'tr[data-job="{job_id}"]')
    # The first, unfiltered load lists this job too (among the shared service's completed ones): wait for
    # the search's answer, every listed row failed, rather than for the row alone.
    wait_until(page, "(() => { const pills = [...document.querySelectorAll('tbody .status-pill')];"
                     " return pills.length > 0 && pills.every(pill => pill.textContent.trim() === 'failed'); })()")
    assert set(page.locator("tbody .status-pill").all_inner_texts()) == {"failed"}
    assert row.count() == 1
    assert row.locator(".error-text").inner_text() == NOT_IN_CATALOG.message  # the code, and for admins the reason:
    assert "no longer in the catalog" in row.locator(".error-detail").inner_text()
    assert row.locator(".status-pill").inner_text() == "failed"
    row.scroll_into_view_if_needed()
    phone_visit.shot("failed-job-listed")
    row.get_by_role("button", name="Retry").click()
    assert page.get_by_role("alert").inner_text() == f"Job {job_id[:8]} is queued again."
    row.locator('.status-pill[data-status="completed"]').wait_for(timeout=30_000)
    assert row.get_by_role("button", name="Retry").count() == 0 and row.get_by_role("link", name="recto").count() == 1
    row.scroll_into_view_if_needed()
    phone_visit.shot("retried-and-completed")
    with service.client() as client:
        assert client.get(f"/jobs/{job_id}").json()["status"] == "completed"
