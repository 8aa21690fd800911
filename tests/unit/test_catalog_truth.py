"""The database is the catalog's truth: the prompt words the runner uses and the swatches the shop shows.

The real API (FastAPI app, no Ray) and the real runner with the tiny-random model, on PostgreSQL and
local storage or S3 (boto3 against moto); the prompt is read where the renderer receives it.
"""

from __future__ import annotations

import io

import httpx
import psycopg
import pytest
from PIL import Image

from catalog.data import load_catalog
from catalog.loader import sync_catalog
from db import fabrics
from db.migrate import upgrade
from deployments.generation import CutGenerator
from deployments.storage import UPLOAD_PREFIX, LocalStorage, S3Storage, Storage
from serve_app.bootstrap import adopt_swatch_urls
from serve_app.deps import Services
from serve_app.jobqueue.worker import CutTask, JobWorker
from serve_app.settings import Settings
from tests.conftest import fresh_database
from tests.in_process import ADMIN_SECRET, admin_headers, catalog_services, job_worker, render_chain, run_job
from tests.unit.test_api import call
from tests.upload_files import image_bytes

COLLECTION = "SASTRE 2026-27"
VELVET = {"family_id": "terciopelo", "display_name": "Terciopelo de seda", "fabric": "silk velvet"}
BURGUNDY = {"color_id": "terciopelo-burdeos", "name": "Burdeos", "english": "deep burgundy red",
            "hex_value": "#5E2430", "swatch_code": "770V-0001"}


ON_BOTH_STORAGES = pytest.mark.parametrize("service", ["local", "s3"], indirect=True)


class Recording:
    """Wraps a renderer and keeps every task it was given."""

    def __init__(self, inner) -> None:
        self.inner, self.tasks = inner, []

    async def render(self, task: CutTask) -> dict:
        self.tasks.append(task)
        return await self.inner.render(task)


@pytest.fixture
def service(request, sessions, database_url, tmp_path, model):
    """The app and the runner on local storage, or on S3 where a test asks with `ON_BOTH_STORAGES`."""
    if getattr(request, "param", "local") == "local":
        storage: Storage = LocalStorage(tmp_path, "http://testserver/media")
    else:
        s3_server = request.getfixturevalue("s3_server")
        storage = S3Storage(s3_server.new_bucket(), endpoint_url=s3_server.endpoint_url, region="us-east-1",
                            access_key_id="testing", secret_access_key="testing")
    services = catalog_services(sessions, storage, Settings(data_dir=tmp_path), jwt_secret=ADMIN_SECRET)
    renderer = Recording(render_chain(CutGenerator(model, storage), storage))
    runner = job_worker(sessions, database_url, services.catalog, renderer, storage=storage, cut_attempts=1)
    return services, runner, admin_headers(sessions)


@pytest.fixture
def velvet(service):
    """`service` with the velvet family and its burgundy color made by an admin, as most tests here start."""
    services, _, admin = service
    _velvet(services, admin)
    return service


def _render(services: Services, runner: JobWorker, sessions, color_id: str, family_id: str = "terciopelo"):
    accepted = call(services, "POST", "/generate", json={"family_id": family_id, "color_id": color_id,
                                                         "cuts": ["recto"], "seed": 11})
    assert accepted.status_code == 202, accepted.text
    job = run_job(runner, sessions, accepted.json()["job_id"])
    assert job.status == "completed", job.error_message
    return job, runner.renderer.tasks[-1]


def _assert_renders_with_its_swatch(services: Services, runner: JobWorker, sessions, color_id: str) -> CutTask:
    job, task = _render(services, runner, sessions, color_id)
    assert job.cut_progress["recto"]["ip_adapter_fallback"] is False  # the swatch was there: its fabric shows
    return task


def _velvet(services: Services, admin: dict, **color) -> dict:
    assert call(services, "POST", "/admin/fabrics", json=VELVET, headers=admin).status_code == 201
    made = call(services, "POST", "/admin/fabrics/terciopelo/colors", json={**BURGUNDY, **color}, headers=admin)
    assert made.status_code == 201, made.text
    return made.json()


def _upload(services: Services, fmt: str = "PNG") -> str:
    upload = call(services, "POST", "/upload-swatch", files={"file": ("swatch", image_bytes(fmt), "image/png")})
    assert upload.status_code == 201, upload.text
    return upload.json()["swatch_url"]


def _put_swatch(services: Services, headers: dict, color_id: str, data: bytes) -> httpx.Response:
    return call(services, "PUT", f"/admin/colors/{color_id}/swatch", headers=headers,
                files={"file": ("photo", data, "application/octet-stream")})


def _expire_every_upload(storage: Storage) -> None:
    """What a day does to temp-uploads/: the local sweep, or the bucket's lifecycle rule."""
    if isinstance(storage, LocalStorage):
        storage.delete_older_than(UPLOAD_PREFIX, 0)
        return
    listed = storage.client.list_objects_v2(Bucket=storage.bucket, Prefix=UPLOAD_PREFIX).get("Contents", [])
    for item in listed:
        storage.delete(item["Key"])
    assert not storage.client.list_objects_v2(Bucket=storage.bucket, Prefix=UPLOAD_PREFIX).get("Contents")


def _fetch(services: Services, url: str) -> httpx.Response:
    if isinstance(services.storage, LocalStorage):
        return call(services, "GET", url.removeprefix("http://testserver"))
    return httpx.get(url)


def _shop_color(services: Services, color_id: str) -> dict:
    families = call(services, "GET", "/catalog").json()["families"]
    return next(c for f in families for c in f["colors"] if c["color_id"] == color_id)


def _shown_key(services: Services, color_id: str) -> str | None:
    """The key behind the swatch URL the shop lists (presigned URLs differ from call to call)."""
    return services.storage.key_for_url(_shop_color(services, color_id)["swatch_url"])


# -- prompt words -----------------------------------------------------------------------------------

def test_an_admin_created_family_and_color_render_with_the_admins_words(service, sessions):
    services, runner, admin = service
    made = _velvet(services, admin)
    assert made["english"] == "deep burgundy red"
    _, task = _render(services, runner, sessions, "terciopelo-burdeos")
    assert task.prompt.startswith("deep burgundy red silk velvet single-breasted")
    assert "Burdeos" not in task.prompt and "Terciopelo" not in task.prompt


def test_renamed_prompt_words_show_in_the_next_jobs_prompt(velvet, sessions):
    services, runner, admin = velvet
    _, before = _render(services, runner, sessions, "terciopelo-burdeos")
    family = call(services, "PATCH", "/admin/fabrics/terciopelo", json={"fabric": "crushed velvet"},
                  headers=admin)
    color = call(services, "PATCH", "/admin/colors/terciopelo-burdeos", json={"english": "wine red"}, headers=admin)
    assert family.status_code == color.status_code == 200
    assert family.json()["fabric"] == "crushed velvet" and color.json()["english"] == "wine red"
    _, after = _render(services, runner, sessions, "terciopelo-burdeos")
    assert before.prompt.startswith("deep burgundy red silk velvet ")
    assert after.prompt.startswith("wine red crushed velvet ")


def test_a_shipped_color_renders_with_the_words_in_the_database(service, sessions):
    services, runner, admin = service
    _, seeded = _render(services, runner, sessions, "lana-fria-azul-marino", family_id="lana-fria")
    assert seeded.prompt.startswith("navy blue fine worsted cool wool ")
    call(services, "PATCH", "/admin/colors/lana-fria-azul-marino", json={"english": "midnight navy"}, headers=admin)
    _, edited = _render(services, runner, sessions, "lana-fria-azul-marino", family_id="lana-fria")
    assert edited.prompt.startswith("midnight navy fine worsted cool wool ")
    with sessions.begin() as s:
        sync_catalog(s, load_catalog())  # a restart keeps the admin's words
    listed = call(services, "GET", "/admin/fabrics/lana-fria/colors", headers=admin).json()
    assert listed[0]["english"] == "midnight navy"


@pytest.mark.parametrize("words", [None, "", " navy", "navy ", "navy\nblue", "navy\x00", "n" * 81, 7])
def test_prompt_words_are_required_printable_and_short(service, sessions, words):
    services, _, admin = service
    def given(body: dict, field: str) -> dict:  # None: the field left out
        return {**{k: v for k, v in body.items() if k != field}, **({} if words is None else {field: words})}

    assert call(services, "POST", "/admin/fabrics", json=given(VELVET, "fabric"), headers=admin).status_code == 422
    refused = call(services, "POST", "/admin/fabrics/lana-fria/colors", json=given(BURGUNDY, "english"), headers=admin)
    assert refused.status_code == 422 and "detail" in refused.json()
    for path, field in (("/admin/fabrics/lana-fria", "fabric"), ("/admin/colors/lana-fria-negro", "english")):
        assert call(services, "PATCH", path, json={field: words}, headers=admin).status_code == 422
    with sessions() as s:
        assert not fabrics.family_exists(s, "terciopelo") and not fabrics.color_exists(s, "terciopelo-burdeos")
        family, color = fabrics.find_family_and_color(s, "lana-fria", "lana-fria-negro")
        assert (family.fabric, color.english) == ("fine worsted cool wool", "black")


def test_upgrading_an_install_backfills_the_prompt_words(server_url):
    with fresh_database(server_url, "0004_lease_token") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO fabric_families (family_id, display_name, collection) VALUES "
                         "('tweed', 'Tweed de Donegal', 'C'), ('pana', 'Pana', 'C')")
            conn.execute("INSERT INTO colors (fabric_family_id, color_id, name, hex_value) VALUES "
                         "(1, 'tweed-burdeos', 'Burdeos', '#5E2430'), (2, 'pana-mostaza', 'Mostaza', '#C8A13A')")
        upgrade(url)
        with psycopg.connect(url) as conn:
            families = dict(conn.execute("SELECT family_id, fabric FROM fabric_families").fetchall())
            colors = dict(conn.execute("SELECT color_id, english FROM colors").fetchall())
            nullable = conn.execute("SELECT table_name, is_nullable FROM information_schema.columns "
                                    "WHERE column_name IN ('fabric', 'english')").fetchall()
    # Shipped ids get the shipped English words; an admin's own rows keep what the runner used to render.
    assert families == {"tweed": "Donegal tweed", "pana": "Pana"}
    assert colors == {"tweed-burdeos": "burgundy", "pana-mostaza": "Mostaza"}
    assert sorted(nullable) == [("colors", "NO"), ("fabric_families", "NO")]


# -- catalog swatches -------------------------------------------------------------------------------

@ON_BOTH_STORAGES
def test_an_admin_added_swatch_outlives_the_upload_expiry(service, sessions):
    services, runner, admin = service
    upload = _upload(services)
    made = _velvet(services, admin, swatch_url=upload)
    key = services.storage.key_for_url(made["swatch_url"])
    assert key == f"{COLLECTION}/770V-0001.png"

    _expire_every_upload(services.storage)
    assert not services.storage.exists(services.storage.key_for_url(upload))
    listed = _shop_color(services, "terciopelo-burdeos")
    assert UPLOAD_PREFIX not in listed["swatch_url"]
    fetched = _fetch(services, listed["swatch_url"])
    assert fetched.status_code == 200
    with Image.open(io.BytesIO(fetched.content)) as image:
        assert image.format == "PNG" and image.size == (64, 48)
    assert _assert_renders_with_its_swatch(services, runner, sessions, "terciopelo-burdeos").swatch_key == key


@ON_BOTH_STORAGES
def test_a_patched_swatch_url_is_copied_into_the_collection(velvet, sessions):
    services, runner, admin = velvet
    upload = _upload(services, "JPEG")
    patched = call(services, "PATCH", "/admin/colors/terciopelo-burdeos", json={"swatch_url": upload}, headers=admin)
    assert patched.status_code == 200, patched.text
    _expire_every_upload(services.storage)
    assert _shown_key(services, "terciopelo-burdeos") == f"{COLLECTION}/770V-0001.jpg"
    assert not services.storage.exists(f"{COLLECTION}/770V-0001.png")  # the woven sample it replaced
    assert _fetch(services, _shop_color(services, "terciopelo-burdeos")["swatch_url"]).status_code == 200
    _assert_renders_with_its_swatch(services, runner, sessions, "terciopelo-burdeos")


@ON_BOTH_STORAGES
def test_put_swatch_files_it_under_the_swatch_code_and_replaces_the_previous_type(velvet, sessions):
    services, runner, admin = velvet
    storage = services.storage
    as_jpeg = _put_swatch(services, admin, "terciopelo-burdeos", image_bytes("JPEG", size=(40, 30)))
    assert as_jpeg.status_code == 200, as_jpeg.text
    assert as_jpeg.json()["color_id"] == "terciopelo-burdeos" and as_jpeg.json()["english"] == "deep burgundy red"
    assert storage.key_for_url(as_jpeg.json()["swatch_url"]) == f"{COLLECTION}/770V-0001.jpg"
    assert not storage.exists(f"{COLLECTION}/770V-0001.png")
    as_webp = _put_swatch(services, admin, "terciopelo-burdeos", image_bytes("WEBP", size=(40, 30)))
    assert storage.key_for_url(as_webp.json()["swatch_url"]) == f"{COLLECTION}/770V-0001.webp"
    assert not storage.exists(f"{COLLECTION}/770V-0001.jpg")  # no orphan of the type it replaced
    shown = _fetch(services, _shop_color(services, "terciopelo-burdeos")["swatch_url"])
    with Image.open(io.BytesIO(shown.content)) as image:
        assert image.format == "WEBP" and image.size == (40, 30)
    # The same type again keeps the key, never the URL: no browser or CDN shows the replaced photo.
    again = _put_swatch(services, admin, "terciopelo-burdeos", image_bytes("WEBP", size=(48, 36)))
    assert storage.key_for_url(again.json()["swatch_url"]) == f"{COLLECTION}/770V-0001.webp"
    if isinstance(storage, LocalStorage):  # a presigned URL (S3 here) is made anew on every call anyway
        assert again.json()["swatch_url"] != as_webp.json()["swatch_url"]
        assert _shop_color(services, "terciopelo-burdeos")["swatch_url"] == again.json()["swatch_url"]
    with Image.open(io.BytesIO(_fetch(services, again.json()["swatch_url"]).content)) as image:
        assert image.size == (48, 36)

    codeless = call(services, "POST", "/admin/fabrics/terciopelo/colors", headers=admin,
                    json={"color_id": "terciopelo-negro", "name": "Negro", "english": "black",
                          "hex_value": "#111111"})
    assert codeless.json()["swatch_url"] is None  # no swatch code: no sample
    uncoded = _put_swatch(services, admin, "terciopelo-negro", image_bytes("PNG"))
    assert storage.key_for_url(uncoded.json()["swatch_url"]) == f"{COLLECTION}/terciopelo-negro.png"
    _assert_renders_with_its_swatch(services, runner, sessions, "terciopelo-negro")


@ON_BOTH_STORAGES
def test_bad_swatches_are_refused_and_write_nothing(velvet, sessions):
    services, _, admin = velvet
    storage = services.storage
    before = _shown_key(services, "terciopelo-burdeos")
    not_image = _put_swatch(services, admin, "terciopelo-burdeos", b"<?php echo 1; ?>")
    assert not_image.status_code == 415 and "detail" in not_image.json()
    unknown = _put_swatch(services, admin, "nope", image_bytes("PNG"))
    assert unknown.status_code == 404
    assert not storage.exists(f"{COLLECTION}/nope.png")
    not_multipart = call(services, "PUT", "/admin/colors/terciopelo-burdeos/swatch", headers=admin, json={})
    assert not_multipart.status_code == 415
    anonymous = _put_swatch(services, {}, "terciopelo-burdeos", image_bytes("PNG"))
    assert anonymous.status_code == 401

    gone = storage.url_for(f"{UPLOAD_PREFIX}00000000-0000-0000-0000-000000000000.png")
    overlong = storage.url_for(f"{COLLECTION}/x.png").replace("/x.png", "/" + "x" * 300 + ".png")
    for body in ({"swatch_url": gone}, {"swatch_url": overlong}, {"swatch_url": "http://169.254.169.254/x.png"}):
        missing = call(services, "PATCH", "/admin/colors/terciopelo-burdeos", json=body, headers=admin)
        assert missing.status_code == 422 and "detail" in missing.json()
        created = call(services, "POST", "/admin/fabrics/terciopelo/colors", headers=admin,
                       json={**BURGUNDY, "color_id": "terciopelo-x", **body})
        assert created.status_code == 422
    assert _shown_key(services, "terciopelo-burdeos") == before == f"{COLLECTION}/770V-0001.png"
    with sessions() as s:
        assert not fabrics.color_exists(s, "terciopelo-x")


def test_a_swatch_stored_for_an_edit_that_fails_is_removed(velvet, sessions, monkeypatch):
    services, _, admin = velvet
    storage = services.storage

    def database_refuses(*args, **kwargs):
        raise RuntimeError("the database went away mid-edit")

    monkeypatch.setattr(fabrics, "update_color", database_refuses)
    failed = _put_swatch(services, admin, "terciopelo-burdeos", image_bytes("JPEG"))
    assert failed.status_code == 500 and failed.json() == {"detail": "internal error"}
    assert not storage.exists(f"{COLLECTION}/770V-0001.jpg")
    assert storage.exists(f"{COLLECTION}/770V-0001.png")  # the color's swatch is untouched


@ON_BOTH_STORAGES
def test_start_up_moves_an_older_versions_swatch_url_into_the_collection(velvet, sessions):
    services, _, admin = velvet
    upload = _upload(services, "JPEG")
    with sessions.begin() as s:  # as an older version left it: a URL, pointing into temp-uploads/
        _, color = fabrics.get_color(s, "terciopelo-burdeos")
        fabrics.update_color(s, color, {"swatch_url": upload, "swatch_key": None})
    assert adopt_swatch_urls(services.sessions, services.storage, COLLECTION) == 1
    _expire_every_upload(services.storage)
    with sessions() as s:
        _, color = fabrics.get_color(s, "terciopelo-burdeos")
        assert (color.swatch_key, color.swatch_url) == (f"{COLLECTION}/770V-0001.jpg", None)
    assert _fetch(services, _shop_color(services, "terciopelo-burdeos")["swatch_url"]).status_code == 200
    assert adopt_swatch_urls(services.sessions, services.storage, COLLECTION) == 0
