"""Webhooks through the launched service: an admin registers an endpoint over HTTP, a shopper's job runs
through the real runner and generator, and a receiver on 127.0.0.1 gets each cut and the job's outcome,
signed the Standard Webhooks way, from the JobRunner replica's deliverer."""

from __future__ import annotations

import json
import time

import pytest
from standardwebhooks import Webhook

from db.engine import make_sessionmaker
from serve_app.admin.auth.service import create_user
from tests.unit.test_webhooks import receiving

pytestmark = pytest.mark.integration

PASSWORD = "webhook admin's long password"


def test_a_registered_endpoint_gets_each_cut_and_the_outcome_of_a_job_signed(service, service_engine):
    with make_sessionmaker(service_engine).begin() as session:
        create_user(session, "webhook-admin", PASSWORD)
    with service.client() as client, receiving() as receiver:
        token = client.post("/admin/login", data={"username": "webhook-admin", "password": PASSWORD}).json()
        admin = {"Authorization": f"Bearer {token['access_token']}"}
        created = client.post("/admin/webhooks", headers=admin, json={
            "url": receiver.url + "/hooks", "events": ["job.completed", "cut.completed"], "description": "shop"})
        assert created.status_code == 201, created.text
        endpoint = created.json()
        try:
            job_id = client.post("/generate", json={"family_id": "lana-fria", "color_id": "lana-fria-azul-marino",
                                                    "cuts": ["recto", "cruzado"], "seed": 31}).json()["job_id"]
            deadline = time.monotonic() + 60
            while len([body for _, body in receiver.requests if json.loads(body)["data"]["job_id"] == job_id]) < 3:
                assert time.monotonic() < deadline, f"only {len(receiver.requests)} deliveries arrived"
                time.sleep(0.1)
            mine = [(headers, body) for headers, body in receiver.requests
                    if json.loads(body)["data"]["job_id"] == job_id]
            events = [Webhook(endpoint["secret"]).verify(body, headers) for headers, body in mine]
            assert sorted((e["type"], e.get("cut")) for e in events) == [
                ("cut.completed", "cruzado"), ("cut.completed", "recto"), ("job.completed", None)]
            final = next(e for e in events if e["type"] == "job.completed")
            polled = client.get(f"/jobs/{job_id}").json()
            assert final["data"]["status"] == "completed" and final["data"]["result_urls"] == polled["result_urls"]
            assert len({headers["webhook-id"] for headers, _ in mine}) == 3  # one message id per event
            history = client.get(f"/admin/webhooks/{endpoint['id']}/deliveries", headers=admin).json()
            attempts = [a for d in history["items"] if d["job_id"] == job_id for a in d["attempts"]]
            assert len(attempts) == 3 and all(200 <= a["status_code"] < 300 for a in attempts), history
        finally:  # later modules on the shared service post jobs: no deliveries to a receiver that is gone
            assert client.delete(f"/admin/webhooks/{endpoint['id']}", headers=admin).status_code in (200, 204)
