"""The shop page at `/` in a real Chromium: what a customer sees from choosing a cloth to downloading renders."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image, ImageDraw

from db import jobs
from tests.e2e.conftest import wait_until

pytestmark = pytest.mark.integration

OLIVE = "lino-oliva"  # Lino Irlandés, Oliva
RENDER_TIMEOUT_MS = 30_000


def _choose(page, color_id: str, cuts: list[str]) -> None:
    page.goto("/")
    page.locator(".fabric-card").first.wait_for()
    page.locator(f'label[for="color-{color_id}"]').click()
    for box in page.locator('input[name="cut"]').all():
        box.set_checked(box.get_attribute("value") in cuts)


def _job(service, page) -> dict:
    job_id = page.locator("#results").get_attribute("data-job-id")
    with service.client() as client:
        return client.get(f"/jobs/{job_id}").json()


def _wait_for_renders(page) -> None:
    """The settled state: the job completed and every slot shows its render, loaded (the page swaps a
    render in only once it has loaded, so a slot keeps its preview until then)."""
    page.locator('#job-status[data-status="completed"]').wait_for(timeout=RENDER_TIMEOUT_MS)
    wait_until(page, """() => [...document.querySelectorAll('img.render')].every(
        i => i.dataset.stage === 'render' && i.complete && i.naturalWidth > 0)""", timeout=RENDER_TIMEOUT_MS)


def _shown(page, selector: str) -> list[dict]:
    """Each matching image as the browser has it: its src, whether it decoded, its stage."""
    return page.eval_on_selector_all(selector, """imgs => imgs.map(img => ({
        src: img.currentSrc || img.src, loaded: img.complete && img.naturalWidth > 0, stage: img.dataset.stage}))""")


def test_the_page_says_plainly_that_images_are_not_real_renders(visit, service):
    page = visit.page
    page.goto("/")
    banner = page.locator("#health-banner")
    banner.wait_for()
    assert "random weights" in banner.inner_text() and "not real renders" in banner.inner_text()
    with service.client() as client:
        catalog = client.get("/catalog").json()
    assert page.locator(".fabric-card h3").all_inner_texts() == [f["display_name"] for f in catalog["families"]]
    assert page.locator(".chip-name").all_inner_texts() == [c["name"] for f in catalog["families"] for c in f["colors"]]
    swatches = _shown(page, ".fabric-swatch")
    assert all(s["loaded"] for s in swatches), swatches  # the catalog's swatch images, not broken icons
    visit.shot("catalog")

    # By keyboard alone: Tab past the skip link to the chosen color, arrow to the next, with a visible ring.
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("ArrowRight")
    focused = page.evaluate("document.activeElement.id")
    assert focused == f"color-{catalog['families'][0]['colors'][1]['color_id']}"
    assert page.locator(f"#{focused}").is_checked()
    ring = page.eval_on_selector(f'label[for="{focused}"]', "l => getComputedStyle(l).outlineStyle")
    assert ring == "solid"
    visit.shot("keyboard-focus")


def test_two_cuts_render_and_replace_what_was_shown_with_download_links(visit, service):
    page = visit.page
    _choose(page, OLIVE, [])
    page.get_by_role("button", name="Render my suit").click()
    assert page.get_by_role("alert").inner_text() == "Choose at least one cut."
    visit.shot("no-cut-refused")
    _choose(page, OLIVE, ["recto", "cruzado"])
    assert page.locator(".fabric-card.selected h3").inner_text() == "Lino Irlandés"
    visit.shot("chosen-olive-linen-two-cuts")
    page.get_by_role("button", name="Render my suit").click()
    page.locator(".render-slot").nth(1).wait_for()
    visit.shot("accepted")
    _wait_for_renders(page)
    job = _job(service, page)
    assert job["status"] == "completed" and job["color_id"] == OLIVE and job["cuts"] == ["recto", "cruzado"]
    shown = _shown(page, "img.render")
    assert [s["src"] for s in shown] == job["result_urls"] and all(s["loaded"] for s in shown), shown
    links = [a.get_attribute("href") for a in page.get_by_role("link", name="Download").all()]
    assert links == job["result_urls"]
    assert page.locator("#job-status").inner_text().startswith("Ready — 2 of 2 cuts done")
    visit.shot("renders")


def test_previews_appear_within_a_second_of_asking(visit, service):
    """Needs GET /preview (issue 13, item 1)."""
    page = visit.page
    _choose(page, OLIVE, ["recto", "cruzado"])
    started = time.monotonic()
    page.get_by_role("button", name="Render my suit").click()
    try:
        wait_until(
            page,
            """() => { const imgs = [...document.querySelectorAll('img.render')];
                       return imgs.length === 2 && imgs.every(i => i.complete && i.naturalWidth > 0); }""",
            timeout=1000)
        elapsed = time.monotonic() - started  # before the screenshot, which is not the page's time
    finally:
        visit.shot("previews")
    shown = _shown(page, "img.render")
    # Either both are previews, or a render was quicker still; never a broken image.
    assert all(s["loaded"] for s in shown) and elapsed < 1.0, (elapsed, shown)
    assert any("/preview" in s["src"] for s in shown) or _job(service, page)["status"] == "completed", shown
    _wait_for_renders(page)
    visit.shot("renders")


def test_a_waiting_job_shows_its_place_in_the_queue_and_when_it_should_start(visit, service, service_sessions):
    """Other shops' jobs queued first (one each, so fair turns put them all ahead): the page says how many
    renders are ahead, from GET /jobs' `queue_position`, and the job still completes."""
    page = visit.page
    _choose(page, OLIVE, ["recto"])
    with service_sessions.begin() as session:  # 120 one-cut jobs from 120 other shops, distinct seeds
        for n in range(120):
            jobs.create_job(session, family_id="lana-fria", color_id="lana-fria-azul-marino", cuts=["cruzado"],
                            seed=700_000 + n, client=f"10.0.{n // 250}.{n % 250 + 1}")
    page.get_by_role("button", name="Render my suit").click()
    status = page.locator("#job-status")
    status.filter(has_text="ahead of yours").wait_for(timeout=10_000)
    visit.shot("queued-behind-others")
    words = status.inner_text()
    assert words.startswith("Waiting for a free tailor… ") and " render" in words, words
    page.locator('#job-status[data-status="completed"]').wait_for(timeout=RENDER_TIMEOUT_MS)


def _plaid_png() -> bytes:
    """A customer's swatch photo: a red and cream tartan, 320 px."""
    image = Image.new("RGB", (320, 320), (226, 214, 190))
    draw = ImageDraw.Draw(image)
    for x in range(0, 320, 40):
        draw.rectangle([x, 0, x + 14, 320], fill=(160, 28, 36))
        draw.rectangle([0, x, 320, x + 14], fill=(160, 28, 36))
        draw.line([x + 26, 0, x + 26, 320], fill=(20, 40, 30), width=3)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_uploaded_swatch_is_shown_and_used_for_the_render(visit, service):
    page = visit.page
    _choose(page, OLIVE, ["recto"])
    page.locator("#swatch-file").set_input_files(
        {"name": "my-tartan.png", "mimeType": "image/png", "buffer": _plaid_png()})
    thumb = page.get_by_role("img", name="Your swatch photo")
    thumb.wait_for()
    wait_until(page, "document.querySelector('.swatch-thumb').naturalWidth > 0")
    assert "will be used for the render" in page.locator("#swatch-status").inner_text()
    uploaded = thumb.get_attribute("src")
    assert "/temp-uploads/" in uploaded
    visit.shot("swatch-uploaded")
    page.get_by_role("button", name="Render my suit").click()
    _wait_for_renders(page)
    job = _job(service, page)
    assert job["status"] == "completed" and job["swatch_url"]  # the job rendered from the customer's photo
    assert _shown(page, "img.render")[0]["src"] == job["result_urls"][0]
    visit.shot("rendered-with-swatch")


def test_a_too_large_file_and_a_text_file_posing_as_jpeg_are_refused_in_plain_words(phone_visit, service):
    page = phone_visit.page
    page.goto("/")
    page.locator(".fabric-card").first.wait_for()
    before = service.stored_uploads()

    # 6 MB: refused in the browser before anything is sent.
    page.locator("#swatch-file").set_input_files(
        {"name": "huge.jpg", "mimeType": "image/jpeg", "buffer": b"\xff\xd8\xff" + b"\0" * (6 * 1024 * 1024)})
    notice = page.get_by_role("alert")
    notice.wait_for()
    assert "6.0 MB" in notice.inner_text() and "at most 5 MB" in notice.inner_text()
    phone_visit.shot("too-large-refused")

    # Text named .jpg, dropped on the drop zone: the type looks right, so the server decides and says why.
    page.evaluate("""() => {
        const data = new DataTransfer();
        data.items.add(new File(["this is not a photo, just text\\n"], "notes.jpg", {type: "image/jpeg"}));
        document.getElementById("dropzone").dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
    }""")
    wait_until(page, "document.getElementById('swatch-error').textContent.includes('refused')")
    text = notice.inner_text()
    assert text == "The photo was refused: Not an image we can read: upload a JPEG, PNG or WebP file.", text
    assert page.locator("#swatch-status img").count() == 0
    assert service.stored_uploads() == before
    phone_visit.shot("text-file-refused")
