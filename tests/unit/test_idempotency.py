"""Idempotency keys on POST /generate: they expire, and their fingerprint covers the whole request."""

from __future__ import annotations

from sqlalchemy import text

from db import jobs
from serve_app.settings import Settings
from tests.unit.test_api import NAVY, api, call  # noqa: F401  (api is a fixture)


def _age(sessions, job_id: str, hours: float) -> None:
    with sessions.begin() as s:
        s.execute(text("UPDATE generation_jobs SET created_at = now() - make_interval(secs => :s) WHERE job_id = :j"),
                  {"s": hours * 3600, "j": job_id})


def test_an_idempotency_key_expires_after_24_hours_and_then_makes_a_new_job(api, sessions):
    first = call(api, "POST", "/generate", json={**NAVY, "seed": 5}, headers={"Idempotency-Key": "order-20"})
    _age(sessions, first.json()["job_id"], 23.9)
    replay = call(api, "POST", "/generate", json={**NAVY, "seed": 5}, headers={"Idempotency-Key": "order-20"})
    assert replay.json()["job_id"] == first.json()["job_id"] and replay.headers["idempotent-replayed"] == "true"
    _age(sessions, first.json()["job_id"], 24.1)
    fresh = call(api, "POST", "/generate", json={**NAVY, "seed": 5}, headers={"Idempotency-Key": "order-20"})
    assert fresh.status_code == 202 and "idempotent-replayed" not in fresh.headers
    assert fresh.json()["job_id"] != first.json()["job_id"]
    again = call(api, "POST", "/generate", json={**NAVY, "seed": 5}, headers={"Idempotency-Key": "order-20"})
    assert again.json()["job_id"] == fresh.json()["job_id"]  # the key now belongs to the new job
    with sessions() as s:
        old = jobs.get_job(s, first.json()["job_id"])
        assert old.status == "pending" and s.query(jobs.GenerationJob).count() == 2


def test_an_expired_key_is_free_even_for_another_body(api, sessions):
    first = call(api, "POST", "/generate", json={**NAVY, "seed": 5}, headers={"Idempotency-Key": "order-21"})
    _age(sessions, first.json()["job_id"], 25)
    other = call(api, "POST", "/generate", json={**NAVY, "seed": 6}, headers={"Idempotency-Key": "order-21"})
    assert other.status_code == 202 and other.json()["job_id"] != first.json()["job_id"]


def test_the_idempotency_ttl_is_a_setting(api, sessions, tmp_path):
    api.settings = Settings(max_pending_jobs=3, data_dir=tmp_path, idempotency_ttl_hours=1)
    first = call(api, "POST", "/generate", json=NAVY, headers={"Idempotency-Key": "order-22"})
    _age(sessions, first.json()["job_id"], 1.1)
    fresh = call(api, "POST", "/generate", json=NAVY, headers={"Idempotency-Key": "order-22"})
    assert fresh.json()["job_id"] != first.json()["job_id"]


def test_the_fingerprint_covers_every_field_that_changes_the_result(api, sessions):
    swatch = call(api, "GET", "/catalog").json()["families"][0]["colors"][0]["swatch_url"]
    both = {**NAVY, "cuts": ["recto", "cruzado"], "seed": 5}
    first = call(api, "POST", "/generate", json=both, headers={"Idempotency-Key": "order-23"})
    assert first.status_code == 202
    for changed in ({**both, "cuts": ["cruzado", "recto"]}, {**both, "seed": 6}, {**both, "seed": None},
                    {**both, "swatch_url": swatch}, {**both, "color_id": "lana-fria-gris-carbon"},
                    {**both, "cuts": ["recto"]}):
        response = call(api, "POST", "/generate", json=changed, headers={"Idempotency-Key": "order-23"})
        assert response.status_code == 409, changed
    same = call(api, "POST", "/generate", json=dict(reversed(list(both.items()))), headers={"Idempotency-Key": "order-23"})
    assert same.json()["job_id"] == first.json()["job_id"]  # field order in the JSON is not a difference
