"""The render cache: a cut whose every input matches a completed cut is not rendered again.

The real API (FastAPI app, no Ray), PostgreSQL, local storage and the real runner with the in-process
render chain and the tiny-random model; the generator's calls are counted where the chain calls it.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import pytest
from PIL import Image
from sqlalchemy import select, text

from db import jobs
from db.models import GenerationJob, RenderCacheEntry
from deployments.generation import CutGenerator
from deployments.storage import LocalStorage
from serve_app.deps import Services
from serve_app.jobqueue.render_cache import RenderSettings
from serve_app.jobqueue.worker import JobWorker
from serve_app.settings import Settings
from tests.in_process import ADMIN_SECRET, admin_headers, catalog_services, job_worker, render_chain, run_job, run_jobs
from tests.unit.test_api import call
from tests.upload_files import image_bytes

NAVY = {"family_id": "lana-fria", "color_id": "lana-fria-azul-marino"}


class CountingGenerator:
    """The real generator, counting its calls: a cache hit must not reach it."""

    def __init__(self, inner: CutGenerator) -> None:
        self.inner, self.calls = inner, 0

    def generate(self, *args):
        self.calls += 1
        return self.inner.generate(*args)


@dataclass
class Shop:
    services: Services
    generator: CountingGenerator
    admin: dict
    sessions: object
    database_url: str

    def runner(self, **settings) -> JobWorker:
        """A runner over the shared generator; `settings` change what it renders with (and its cache keys)."""
        configured = self.services.settings.model_copy(update=settings)
        storage = self.services.storage
        return job_worker(self.sessions, self.database_url, self.services.catalog,
                          render_chain(self.generator, storage), concurrency=4, storage=storage,
                          cut_attempts=1, render=RenderSettings.of(configured))

    def job(self, runner: JobWorker | None = None, **body) -> dict:
        """POST /generate, run it to the end, and return GET /jobs/{id}."""
        accepted = call(self.services, "POST", "/generate", json={**NAVY, "cuts": ["recto"], "seed": 7, **body})
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        assert run_job(runner or self.runner(), self.sessions, job_id).status == "completed"
        return call(self.services, "GET", f"/jobs/{job_id}").json()


@pytest.fixture
def shop(sessions, database_url, tmp_path, model) -> Shop:
    storage = LocalStorage(tmp_path, "http://testserver/media")
    settings = Settings(data_dir=tmp_path, model_profile="tiny-random", image_size=64)
    services = catalog_services(sessions, storage, settings, jwt_secret=ADMIN_SECRET)
    return Shop(services, CountingGenerator(CutGenerator(model, storage)), admin_headers(sessions), sessions,
                database_url)


def _cached(job: dict) -> list[bool | None]:
    return [cut["cached"] for cut in job["progress"]]


def test_the_same_request_twice_is_served_from_the_cache_without_a_generator_call(shop):
    first = shop.job(cuts=["recto", "cruzado"])
    assert shop.generator.calls == 2 and _cached(first) == [False, False]
    again = shop.job(cuts=["recto", "cruzado"])
    assert shop.generator.calls == 2  # nothing was rendered
    assert again["status"] == "completed" and _cached(again) == [True, True]
    assert again["job_id"] != first["job_id"] and again["result_urls"] == first["result_urls"]
    assert [cut["seed"] for cut in again["progress"]] == [7, 8]
    image = call(shop.services, "GET", again["result_urls"][1].removeprefix("http://testserver"))
    with Image.open(io.BytesIO(image.content)) as jpeg:
        assert jpeg.format == "JPEG" and jpeg.size == (64, 64)


def test_a_cache_hit_reveals_no_job_id(shop):
    """A hit hands one job's stored render to another caller; its URL must not lead back to that job (a job
    id reads, streams and cancels the job), so result keys are named by a random token, not the job id."""
    first = shop.job(cuts=["recto", "cruzado"])
    again = shop.job(cuts=["recto", "cruzado"])
    assert _cached(again) == [True, True] and again["result_urls"] == first["result_urls"]
    with shop.sessions() as s:
        job_ids = list(s.scalars(select(GenerationJob.job_id)))
    assert len(job_ids) == 2
    for url in again["result_urls"]:
        key = shop.services.storage.key_for_url(url)
        assert key.startswith("generated/lana-fria/lana-fria-azul-marino/") and key.endswith(".jpg")
        for job_id in job_ids:
            hidden = (job_id, job_id.replace("-", ""), hashlib.sha256(job_id.encode()).hexdigest()[:32],
                      hashlib.md5(job_id.encode()).hexdigest())
            assert not any(form in url for form in hidden)
        for segment in key.split("/"):  # no part of the key is a job id the API knows
            assert call(shop.services, "GET", f"/jobs/{segment}").status_code == 404
    tokens = {shop.services.storage.key_for_url(url).split("/")[3] for url in first["result_urls"]}
    assert len(tokens) == 1 and len(next(iter(tokens))) == 32  # one random name per job, 128 bits


def test_only_the_cuts_the_cache_has_skip_the_generator(shop):
    shop.job(cuts=["recto"])
    mixed = shop.job(cuts=["recto", "cruzado"])  # recto at seed 7 is known; cruzado at seed 8 is not
    assert shop.generator.calls == 2 and _cached(mixed) == [True, False]


def _admin(shop: Shop, method: str, path: str, **kwargs) -> None:
    response = call(shop.services, method, path, headers=shop.admin, **kwargs)
    assert response.status_code == 200, response.text


# Each changes one input between two otherwise equal requests: (body of the second, its runner's settings).
CHANGES = {
    "seed": lambda shop: ({"seed": 8}, {}),
    "cut": lambda shop: ({"cuts": ["cruzado"]}, {}),
    "image size": lambda shop: ({}, {"image_size": 128}),
    "steps": lambda shop: ({}, {"num_inference_steps": 2}),
    "watermark": lambda shop: ({}, {"watermark_text": "OTRA CASA"}),
    "model profile": lambda shop: ({}, {"model_profile": "full-random"}),
    "cache version": lambda shop: ({}, {"render_cache_version": "2"}),
    "color words (admin PATCH)": lambda shop: (
        _admin(shop, "PATCH", "/admin/colors/lana-fria-azul-marino", json={"english": "midnight blue"}) or {}, {}),
    "family words (admin PATCH)": lambda shop: (
        _admin(shop, "PATCH", "/admin/fabrics/lana-fria", json={"fabric": "tropical wool"}) or {}, {}),
    "swatch (admin PUT)": lambda shop: (
        _admin(shop, "PUT", "/admin/colors/lana-fria-azul-marino/swatch",
               files={"file": ("photo", image_bytes("PNG", color=(200, 10, 10)), "image/png")}) or {}, {}),
}


@pytest.mark.parametrize("change", CHANGES)
def test_changing_any_input_renders_the_cut_again(shop, change):
    first = shop.job()
    assert shop.generator.calls == 1 and _cached(first) == [False]
    body, settings = CHANGES[change](shop)
    second = shop.job(shop.runner(**settings), **body)
    assert shop.generator.calls == 2 and _cached(second) == [False]
    assert second["result_urls"] != first["result_urls"]


@pytest.mark.parametrize("path, body, left", [
    ("/admin/colors/lana-fria-azul-marino", {"english": "midnight blue"}, ["lana-fria-negro"]),
    ("/admin/fabrics/lana-fria", {"fabric": "tropical wool"}, []),
    ("/admin/fabrics/lana-fria", {"display_name": "Lana fresca"}, ["lana-fria-azul-marino"] * 2 + ["lana-fria-negro"]),
])
def test_an_admin_edit_of_the_prompt_words_drops_the_entries_it_retires(shop, path, body, left):
    shop.job(cuts=["recto", "cruzado"])
    shop.job(color_id="lana-fria-negro", cuts=["recto"])
    assert _entry_colors(shop) == ["lana-fria-azul-marino"] * 2 + ["lana-fria-negro"]
    _admin(shop, "PATCH", path, json=body)
    assert _entry_colors(shop) == left  # a display name is not in the prompt: nothing to drop


def _entry_colors(shop: Shop) -> list[str]:
    with shop.sessions() as s:
        return sorted(s.scalars(select(RenderCacheEntry.color_id)))


def test_the_same_photo_uploaded_twice_is_one_swatch_to_the_cache(shop):
    def upload() -> str:
        response = call(shop.services, "POST", "/upload-swatch",
                        files={"file": ("swatch", image_bytes("PNG", color=(20, 120, 60)), "image/png")})
        assert response.status_code == 201, response.text
        return response.json()["swatch_url"]

    first, second = upload(), upload()
    assert first != second  # two uploads, two keys, one content
    shop.job(swatch_url=first)
    again = shop.job(swatch_url=second)
    assert shop.generator.calls == 1 and _cached(again) == [True]
    catalog_swatch = shop.job()  # the catalog's swatch is another photo
    assert shop.generator.calls == 2 and _cached(catalog_swatch) == [False]


def test_a_cached_image_that_is_gone_is_rendered_again(shop):
    first = shop.job()
    shop.services.storage.delete(shop.services.storage.key_for_url(first["result_urls"][0]))
    again = shop.job()
    assert shop.generator.calls == 2 and _cached(again) == [False]
    assert shop.job()["result_urls"] == again["result_urls"]  # the new render is the entry now
    assert shop.generator.calls == 2


def test_no_cache_when_the_model_is_only_known_once_loaded_or_the_cache_is_off():
    assert RenderSettings.of(Settings(model_profile="auto")) is None
    assert RenderSettings.of(Settings(model_profile="tiny-random", render_cache=False)) is None
    pretrained = RenderSettings.of(Settings(model_profile="pretrained"))
    other_weights = RenderSettings.of(Settings(model_profile="pretrained", base_model="/models/my-sdxl"))
    assert pretrained is not None and other_weights is not None and pretrained.model != other_weights.model


def _combinations(shop: Shop) -> set[tuple[str, str]]:
    families = call(shop.services, "GET", "/catalog").json()["families"]
    return {(color["color_id"], cut.cut_id) for family in families for color in family["colors"]
            for cut in shop.services.catalog.cuts}


def test_the_catalog_prewarm_queues_exactly_the_missing_views_and_makes_them_instant(shop):
    assert call(shop.services, "POST", "/admin/renders/prewarm").status_code == 401
    # A smaller shop keeps the test quick: one family, three of its colors; inactive ones are not pre-rendered.
    for path in ("/admin/fabrics/lino", "/admin/fabrics/tweed", "/admin/colors/lana-fria-negro"):
        _admin(shop, "PATCH", path, json={"status": "inactive"})
    seed = shop.services.settings.catalog_seed
    shop.job(seed=seed)  # navy's recto default view is already rendered
    answer = call(shop.services, "POST", "/admin/renders/prewarm", headers=shop.admin)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    everything = _combinations(shop)
    assert len(everything) == 6
    queued = {(job["color_id"], job["cut"]) for job in body["enqueued"]}
    assert queued == everything - {(NAVY["color_id"], "recto")}
    assert (body["seed"], body["combinations"], body["cached"], body["in_flight"]) == (seed, 6, 1, 0)
    with shop.sessions() as s:  # catalog work: the batch lane, behind shoppers' jobs
        assert {job.lane for job in jobs.get_jobs(s, [job["job_id"] for job in body["enqueued"]])} == {"batch"}
    repeated = call(shop.services, "POST", "/admin/renders/prewarm", headers=shop.admin).json()
    assert repeated["enqueued"] == [] and repeated["in_flight"] == 5  # still queued: not again

    run_jobs(shop.runner(), shop.sessions, [job["job_id"] for job in body["enqueued"]])
    assert shop.generator.calls == 6
    done = call(shop.services, "POST", "/admin/renders/prewarm", headers=shop.admin).json()
    assert (done["enqueued"], done["cached"], done["in_flight"]) == ([], 6, 0)
    default_view = shop.job(color_id="lana-fria-gris-perla", cuts=["cruzado"], seed=seed)
    assert _cached(default_view) == [True] and shop.generator.calls == 6


def test_an_entry_that_ages_out_between_its_look_up_and_the_record_is_a_miss(shop):
    """The prune may delete an entry (and then its image) after a runner found it; the hit is recorded only
    with the entry still there (same transaction), else the cut renders: never a link to a deleted image."""
    first = shop.job()
    runner = shop.runner()
    found = runner.cache.lookup

    def found_then_pruned(*look_up):
        hit = found(*look_up)
        with shop.sessions.begin() as s:
            s.execute(text("DELETE FROM render_cache"))  # what the prune does to an entry unused too long
        return hit

    runner.cache.lookup = found_then_pruned
    again = shop.job(runner)
    assert shop.generator.calls == 2 and _cached(again) == [False]  # rendered, not pointed at the old image
    assert again["result_urls"] != first["result_urls"]
