"""Data ages out: finished jobs, their renders and unused render-cache entries go, in small batches, and
nothing a kept, pending, processing or recent job (or a live cache entry) names goes with them.
Real PostgreSQL, real LocalStorage and an S3 bucket (moto)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from db import jobs, cached_renders
from deployments.storage import LocalStorage, S3Storage
from serve_app.jobqueue.retention import DAY, Lifetimes, prune
from tests.job_rows import queue_job
from tests.unit.test_api import api  # noqa: F401 (a fixture)

LIFETIMES = Lifetimes(finished_seconds=DAY, failed_seconds=2 * DAY, render_cache_seconds=DAY, batch=2)


def _job(sessions, storage, name: str, status: str, age_days: float, *, cuts=("recto",), kept=False,
         keys: dict | None = None, own_swatch=False) -> str:
    """A job `age_days` old in `status`; each cut completed with an object of its own (or the key in `keys`)."""
    with sessions.begin() as s:
        job = queue_job(s, cuts=list(cuts), seed=1, swatch_url=None,
                              swatch_key=None)
        progress = {}
        for cut in cuts:
            key = (keys or {}).get(cut) or f"generated/f/c/{name}/{cut}.jpg"
            if not (keys or {}).get(cut):
                storage.put(key, b"jpeg " + name.encode(), "image/jpeg")
            progress[cut] = {"status": "completed", "seed": 1, "key": key, "url": storage.url_for(key)}
        swatch = None
        if own_swatch:
            swatch = f"jobs/{job.job_id}/swatch.png"
            storage.put(swatch, b"png", "image/png")
        finished = status in ("completed", "failed", "canceled")
        s.execute(text("UPDATE generation_jobs SET status = :status, kept = :kept, swatch_key = :swatch, "
                       "cut_progress = CAST(:progress AS jsonb), created_at = now() - :age * interval '1 day', "
                       "completed_at = CASE WHEN :finished THEN now() - :age * interval '1 day' END "
                       "WHERE job_id = :job_id"),
                  {"status": status, "kept": kept, "swatch": swatch, "progress": json.dumps(progress),
                   "age": age_days, "finished": finished, "job_id": job.job_id})
        return job.job_id


def _entry(sessions, name: str, object_key: str, unused_days: float) -> None:
    with sessions.begin() as s:
        cached_renders.remember(s, key_hash=name, family_id="f", color_id="c", cut="recto", seed=1, swatch_sha256="s",
                              template_sha256="t", prompt="p", model="m", image_size=64, steps=1, detector="canny",
                              watermark="W", object_key=object_key, job_id=name)
        s.execute(text("UPDATE render_cache SET used_at = now() - :d * interval '1 day' WHERE key_hash = :k"),
                  {"d": unused_days, "k": name})


def _remaining(sessions) -> tuple[set[str], set[str]]:
    with sessions() as s:
        return (set(s.scalars(text("SELECT job_id FROM generation_jobs"))),
                set(s.scalars(text("SELECT key_hash FROM render_cache"))))


def _ages_out_only_what_no_one_needs(sessions, storage, exists) -> None:
    old = [_job(sessions, storage, f"old{i}", "completed", 3) for i in range(5)]  # more than one batch
    canceled = _job(sessions, storage, "canceled", "canceled", 3, own_swatch=True)
    failed_old = _job(sessions, storage, "failed-old", "failed", 3, own_swatch=True)
    failed_young = _job(sessions, storage, "failed-young", "failed", 1.5, own_swatch=True)  # failures live 2 days
    recent = _job(sessions, storage, "recent", "completed", 0.5)
    kept = _job(sessions, storage, "kept", "completed", 30, kept=True)
    pending = _job(sessions, storage, "pending", "pending", 30, own_swatch=True)  # a cut from an earlier attempt
    processing = _job(sessions, storage, "processing", "processing", 30)
    # Old jobs that reused (cache hits) the renders of jobs that stay: those objects stay.
    hit_recent = _job(sessions, storage, "hit-recent", "completed", 3, keys={"recto": "generated/f/c/recent/recto.jpg"})
    hit_kept = _job(sessions, storage, "hit-kept", "completed", 3, keys={"recto": "generated/f/c/kept/recto.jpg"})
    # A recent job that reused an old job's render: the old job goes, its object stays.
    origin = _job(sessions, storage, "origin", "completed", 3)
    reuser = _job(sessions, storage, "reuser", "completed", 0.5, keys={"recto": "generated/f/c/origin/recto.jpg"})
    # Cache entries: one used lately keeps its old job's object; an unused one goes with its object.
    cached_live = _job(sessions, storage, "cached-live", "completed", 3)
    _entry(sessions, "live", "generated/f/c/cached-live/recto.jpg", unused_days=0.1)
    cached_dead = _job(sessions, storage, "cached-dead", "completed", 3)
    _entry(sessions, "dead", "generated/f/c/cached-dead/recto.jpg", unused_days=2)
    with sessions() as s:
        swatches = dict(s.execute(text("SELECT job_id, swatch_key FROM generation_jobs WHERE swatch_key IS NOT NULL")).all())

    pruned = prune(sessions, storage, LIFETIMES)

    job_ids, entries = _remaining(sessions)
    assert job_ids == {failed_young, recent, kept, pending, processing, reuser}
    assert entries == {"live"}
    gone = [f"generated/f/c/{name}/recto.jpg" for name in
            (*(f"old{i}" for i in range(5)), "canceled", "failed-old", "cached-dead")]
    stay = [f"generated/f/c/{name}/recto.jpg" for name in
            ("failed-young", "recent", "kept", "pending", "processing", "origin", "cached-live")]
    assert [key for key in gone if exists(key)] == []
    assert [key for key in stay if not exists(key)] == []
    assert not exists(swatches[canceled]) and not exists(swatches[failed_old])
    assert exists(swatches[failed_young]) and exists(swatches[pending])
    assert (pruned.jobs, pruned.cache_entries, pruned.objects) == (12, 1, 8 + 2)
    assert {hit_recent, hit_kept, origin, cached_live, cached_dead} & job_ids == set()
    # Nothing left to age out: a second prune deletes nothing.
    assert prune(sessions, storage, LIFETIMES).jobs == 0


def test_finished_jobs_renders_and_unused_cache_entries_age_out_locally(sessions, tmp_path):
    storage = LocalStorage(tmp_path, "http://testserver/media")
    _ages_out_only_what_no_one_needs(sessions, storage, storage.exists)
    folders = {path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*") if path.is_dir()}
    assert "generated/f/c/old0" not in folders and "generated/f/c/recent" in folders  # no empty folders left
    assert not any(folder.startswith("jobs/") and not any((tmp_path / folder).iterdir()) for folder in folders)


def test_finished_jobs_renders_and_unused_cache_entries_age_out_in_s3(sessions, s3_server):
    storage = S3Storage(s3_server.new_bucket(), endpoint_url=s3_server.endpoint_url, region="us-east-1",
                        access_key_id="testing", secret_access_key="testing")
    _ages_out_only_what_no_one_needs(sessions, storage, storage.exists)


def test_a_cache_hit_is_only_recorded_while_its_entry_is_there(sessions, tmp_path):
    """The hit path marks its entry used in the transaction that records it: a pruned entry is a miss."""
    storage = LocalStorage(tmp_path, "http://testserver/media")
    _job(sessions, storage, "origin", "completed", 0.1)
    _entry(sessions, "e", "generated/f/c/origin/recto.jpg", unused_days=2)
    with sessions.begin() as s:
        assert cached_renders.touch(s, "generated/f/c/origin/recto.jpg") is True  # a hit: used now
    assert prune(sessions, storage, LIFETIMES).cache_entries == 0  # it ages from that hit
    with sessions.begin() as s:
        s.execute(text("UPDATE render_cache SET used_at = now() - interval '2 days'"))
    assert prune(sessions, storage, LIFETIMES).cache_entries == 1
    with sessions.begin() as s:
        assert cached_renders.touch(s, "generated/f/c/origin/recto.jpg") is False
    assert storage.exists("generated/f/c/origin/recto.jpg")  # its job still names it


@pytest.mark.parametrize("setting", ["job_retention_days", "failed_job_retention_days", "render_cache_retention_days"])
def test_lifetimes_come_from_settings(setting, tmp_path):
    from serve_app.settings import Settings

    lifetimes = Lifetimes.of(Settings(data_dir=tmp_path, **{setting: 0.5}))
    field = {"job_retention_days": "finished_seconds", "failed_job_retention_days": "failed_seconds",
             "render_cache_retention_days": "render_cache_seconds"}[setting]
    assert getattr(lifetimes, field) == 0.5 * DAY


def test_an_admin_keeps_a_job_from_ageing_out_and_can_let_it_go(api, sessions, tmp_path):
    """POST /admin/generations/{id}/keep (admin token required) keeps an old job and its render through
    a prune; DELETE lets it age again."""
    from tests.unit.test_api import SECRET, admin_token, call

    api.jwt_secret = SECRET
    proof = _job(sessions, api.storage, "proof", "completed", 3)
    other = _job(sessions, api.storage, "other", "completed", 3)
    assert call(api, "POST", f"/admin/generations/{proof}/keep").status_code == 401
    bearer = {"Authorization": f"Bearer {admin_token(sessions)}"}
    kept = call(api, "POST", f"/admin/generations/{proof}/keep", headers=bearer)
    assert kept.status_code == 200 and kept.json()["kept"] is True and kept.json()["job_id"] == proof
    missing = call(api, "POST", "/admin/generations/no-such-job/keep", headers=bearer)
    assert missing.status_code == 404 and "not found" in missing.json()["detail"]
    assert prune(sessions, api.storage, LIFETIMES).jobs == 1
    job_ids, _ = _remaining(sessions)
    assert proof in job_ids and other not in job_ids
    assert api.storage.exists("generated/f/c/proof/recto.jpg")
    assert not api.storage.exists("generated/f/c/other/recto.jpg")
    released = call(api, "DELETE", f"/admin/generations/{proof}/keep", headers=bearer)
    assert released.status_code == 200 and released.json()["kept"] is False
    assert prune(sessions, api.storage, LIFETIMES).jobs == 1
    assert not api.storage.exists("generated/f/c/proof/recto.jpg")
