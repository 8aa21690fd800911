"""The admin API over HTTP against the running service and its database."""

from __future__ import annotations

import base64
import json
import random
import time
import uuid

import pytest
from jose import jwt
from sqlalchemy import delete, select, text

from catalog.data import load_catalog
from db.engine import make_sessionmaker
from db.models import AdminLoginFailure, AdminUser, Color, FabricFamily
from serve_app.admin.auth.service import create_user
from tests.integration.test_service import NAVY, _wait

pytestmark = pytest.mark.integration
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def sessions(service_engine):
    return make_sessionmaker(service_engine)


@pytest.fixture(scope="module")
def admin(service, sessions) -> str:
    with sessions.begin() as s:
        create_user(s, "ops-admin", PASSWORD)
    with service.client() as client:
        response = client.post("/admin/login", data={"username": "ops-admin", "password": PASSWORD})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    return body["access_token"]


@pytest.fixture
def client(service, admin):
    with service.client(headers={"Authorization": f"Bearer {admin}"}) as client:
        yield client


@pytest.fixture
def catalog_restored(client):
    """The families a test adds are deleted when it ends, whatever it asserted: the browser tests share
    this service and compare the shop page with its whole catalog."""
    before = {family["family_id"] for family in client.get("/admin/fabrics").json()}
    yield
    added = {family["family_id"] for family in client.get("/admin/fabrics").json()} - before
    deleted = {family: client.delete(f"/admin/fabrics/{family}").status_code for family in added}
    assert deleted == dict.fromkeys(added, 204)


def _secret(service) -> str:
    return (service.data_dir / "jwt_secret").read_text().strip()


def test_token_claims(service, admin):
    claims = jwt.get_unverified_claims(admin)
    assert jwt.get_unverified_header(admin)["alg"] == "HS256"
    assert claims["sub"] == "ops-admin" and claims["iss"] == "sastre"
    assert claims["exp"] - claims["iat"] == 3600
    assert jwt.decode(admin, _secret(service), algorithms=["HS256"], issuer="sastre")["sub"] == "ops-admin"


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _bad_tokens(service, admin, sessions) -> dict[str, dict]:
    secret = _secret(service)
    now = int(time.time())
    good = {"sub": "ops-admin", "iat": now, "exp": now + 600, "iss": "sastre"}
    header, payload, signature = admin.split(".")
    with sessions.begin() as s:
        create_user(s, "leaver", PASSWORD)
    leaver = jwt.encode({**good, "sub": "leaver"}, secret, algorithm="HS256")
    with sessions.begin() as s:
        s.execute(delete(AdminUser).where(AdminUser.username == "leaver"))
    return {
        "no header": {},
        "wrong scheme": {"Authorization": f"Basic {base64.b64encode(b'ops-admin:' + PASSWORD.encode()).decode()}"},
        "malformed": {"Authorization": "Bearer not-a-jwt"},
        "alg none": {"Authorization": f"Bearer {_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(good)}."},
        "HS512": {"Authorization": f"Bearer {jwt.encode(good, secret, algorithm='HS512')}"},
        "wrong secret": {"Authorization": f"Bearer {jwt.encode(good, 'not-the-secret', algorithm='HS256')}"},
        "tampered payload": {"Authorization": f"Bearer {header}.{_b64({**good, 'sub': 'root'})}.{signature}"},
        "expired": {"Authorization": f"Bearer {jwt.encode({**good, 'iat': now - 7200, 'exp': now - 3600}, secret)}"},
        "not yet valid": {"Authorization": f"Bearer {jwt.encode({**good, 'nbf': now + 3600}, secret)}"},
        "no exp": {"Authorization": f"Bearer {jwt.encode({k: v for k, v in good.items() if k != 'exp'}, secret)}"},
        "wrong issuer": {"Authorization": f"Bearer {jwt.encode({**good, 'iss': 'someone'}, secret)}"},
        "deleted user": {"Authorization": f"Bearer {leaver}"},
    }


def test_every_bad_token_is_a_401_with_no_side_effect(service, admin, sessions):
    for case, headers in _bad_tokens(service, admin, sessions).items():
        family_id = f"intruder-{uuid.uuid4().hex[:6]}"
        with service.client(headers=headers) as client:
            created = client.post("/admin/fabrics", json={"family_id": family_id, "display_name": "X",
                                                            "fabric": "wool"})
            listed = client.get("/admin/fabrics")
            history = client.get("/admin/generations")
        assert created.status_code == listed.status_code == history.status_code == 401, case
        assert created.headers["www-authenticate"] == "Bearer" and "detail" in created.json(), case
        with sessions() as s:
            assert s.scalar(select(FabricFamily).where(FabricFamily.family_id == family_id)) is None, case


@pytest.mark.usefixtures("catalog_restored")
def test_fabric_and_color_crud_with_errors(client):
    family = {"family_id": "seersucker", "display_name": "Seersucker de verano", "fabric": "cotton seersucker"}
    created = client.post("/admin/fabrics", json=family)
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "active" and created.json()["collection"] == "SASTRE 2026-27"
    assert client.post("/admin/fabrics", json=family).status_code == 409
    assert client.post("/admin/fabrics", json={**family, "family_id": "Bad Id!"}).status_code == 422
    assert client.post("/admin/fabrics", json={**family, "family_id": "x2", "status": "archived"}).status_code == 422
    assert client.post("/admin/fabrics", json={**family, "family_id": "x3", "surprise": 1}).status_code == 422

    patched = client.patch("/admin/fabrics/seersucker", json={"display_name": "Seersucker"})
    assert patched.status_code == 200 and patched.json()["display_name"] == "Seersucker"
    assert client.patch("/admin/fabrics/nope", json={"display_name": "x"}).status_code == 404
    assert client.patch("/admin/fabrics/seersucker", json={"status": None}).status_code == 422

    color = {"color_id": "seersucker-azul", "name": "Azul cielo", "english": "sky blue", "hex_value": "#7FA7D9",
             "swatch_code": "440S-0101"}
    made = client.post("/admin/fabrics/seersucker/colors", json=color)
    assert made.status_code == 201, made.text
    swatch = client.get(made.json()["swatch_url"])
    assert swatch.status_code == 200 and swatch.headers["content-type"] == "image/png"
    assert client.post("/admin/fabrics/seersucker/colors", json=color).status_code == 409
    assert client.post("/admin/fabrics/nope/colors", json={**color, "color_id": "c9"}).status_code == 404
    assert client.post("/admin/fabrics/seersucker/colors", json={**color, "color_id": "c8", "hex_value": "#12345G"}).status_code == 422
    foreign = client.post("/admin/fabrics/seersucker/colors",
                          json={**color, "color_id": "c7", "swatch_url": "http://169.254.169.254/x.png"})
    assert foreign.status_code == 422 and "storage" in foreign.json()["detail"]
    assert [c["color_id"] for c in client.get("/admin/fabrics/seersucker/colors").json()] == ["seersucker-azul"]

    recolored = client.patch("/admin/colors/seersucker-azul", json={"hex_value": "#6F97C9", "status": "inactive"})
    assert recolored.status_code == 200 and recolored.json()["status"] == "inactive"
    assert client.patch("/admin/colors/nope", json={"name": "x"}).status_code == 404
    assert client.delete("/admin/colors/seersucker-azul").status_code == 204
    assert client.delete("/admin/colors/seersucker-azul").status_code == 404
    assert client.delete("/admin/fabrics/seersucker").status_code == 204
    assert client.delete("/admin/fabrics/seersucker").status_code == 404
    assert "seersucker" not in [f["family_id"] for f in client.get("/admin/fabrics").json()]


@pytest.mark.usefixtures("catalog_restored")
def test_catalog_follows_admin_changes_and_generate_refuses_inactive(client):
    client.post("/admin/fabrics", json={"family_id": "pana", "display_name": "Pana", "fabric": "corduroy"})
    client.post("/admin/fabrics/pana/colors", json={"color_id": "pana-mostaza", "name": "Mostaza",
                                                    "english": "mustard yellow", "hex_value": "#C8A13A",
                                                    "swatch_code": "550P-0001"})
    families = {f["family_id"]: f for f in client.get("/catalog").json()["families"]}
    assert families["pana"]["colors"][0]["swatch_url"].endswith("/SASTRE%202026-27/550P-0001.png")
    job = client.post("/generate", json={"family_id": "pana", "color_id": "pana-mostaza", "cuts": ["recto"]})
    assert job.status_code == 202
    final, _ = _wait(client, job.json()["job_id"])
    assert final["status"] == "completed"

    client.patch("/admin/colors/pana-mostaza", json={"status": "inactive"})
    listed = [c["color_id"] for f in client.get("/catalog").json()["families"] for c in f["colors"]]
    assert "pana-mostaza" not in listed
    refused = client.post("/generate", json={"family_id": "pana", "color_id": "pana-mostaza", "cuts": ["recto"]})
    assert refused.status_code == 422 and "inactive" in refused.json()["detail"]
    client.patch("/admin/fabrics/pana", json={"status": "inactive"})
    assert "pana" not in [f["family_id"] for f in client.get("/catalog").json()["families"]]

    client.delete("/admin/fabrics/pana")
    assert client.get(f"/jobs/{final['job_id']}").json()["status"] == "completed"  # history survives removal
    assert client.get(f"/admin/generations/{final['job_id']}").json()["family_id"] == "pana"


def test_history_filters_newest_first_cursor_pages_and_retry(client, sessions):
    ids = [client.post("/generate", json={**NAVY, "cuts": ["recto"], "seed": n}).json()["job_id"] for n in range(5)]
    finals = [_wait(client, j)[0] for j in ids]
    seen, cursor = [], None
    while True:
        page = client.get("/admin/generations", params={"color_id": NAVY["color_id"], "status": "completed", "limit": 2,
                                                        **({"cursor": cursor} if cursor else {})}).json()
        seen += [item["job_id"] for item in page["items"]]
        assert len(page["items"]) <= 2
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [j for j in seen if j in ids] == list(reversed(ids))  # newest first, no gaps, no repeats
    assert len(seen) == len(set(seen))
    since = finals[2]["created_at"]
    recent = client.get("/admin/generations", params={"created_from": since, "limit": 100}).json()["items"]
    assert {item["job_id"] for item in recent} >= set(ids[2:]) and not {item["job_id"] for item in recent} & set(ids[:2])
    assert client.get("/admin/generations", params={"status": "lost"}).status_code == 422
    assert client.get("/admin/generations", params={"cursor": "%%%"}).status_code == 422

    detail = client.get(f"/admin/generations/{ids[0]}").json()
    assert detail["max_attempts"] == 3 and detail["lease_owner"] is None and detail["attempts"] == 1
    assert client.get("/admin/generations/nope").status_code == 404
    assert client.post(f"/admin/generations/{ids[0]}/retry").status_code == 409  # completed, not failed
    with sessions.begin() as s:
        s.execute(text("UPDATE generation_jobs SET status='failed', error_message='boom', result_urls=NULL, "
                       "cut_progress='{}'::jsonb WHERE job_id=:j"), {"j": ids[1]})
    retried = client.post(f"/admin/generations/{ids[1]}/retry")
    assert retried.status_code == 202 and retried.json()["status"] == "pending" and retried.json()["error_message"] is None
    again, _ = _wait(client, ids[1])
    assert again["status"] == "completed" and again["attempts"] == 1


@pytest.mark.usefixtures("catalog_restored")
def test_catalog_equals_the_active_database_after_any_admin_edits(client, sessions):
    """Property, over seeded random sequences of admin edits."""
    for seed in range(3):
        rng = random.Random(seed)
        families = [f"prop-{seed}-{i}" for i in range(3)]
        for family in families:
            client.post("/admin/fabrics", json={"family_id": family, "display_name": family, "fabric": "wool"})
        for step in range(25):
            family = rng.choice(families)
            action = rng.choice(["add", "toggle-color", "toggle-family", "delete-color", "rename"])
            colors = client.get(f"/admin/fabrics/{family}/colors").json()
            if action == "add":
                client.post(f"/admin/fabrics/{family}/colors", json={
                    "color_id": f"{family}-c{step}", "name": f"C{step}", "english": "grey", "hex_value": f"#{rng.randrange(16**6):06X}"})
            elif action == "toggle-color" and colors:
                color = rng.choice(colors)
                client.patch(f"/admin/colors/{color['color_id']}",
                             json={"status": "inactive" if color["status"] == "active" else "active"})
            elif action == "toggle-family":
                current = next(f for f in client.get("/admin/fabrics").json() if f["family_id"] == family)
                client.patch(f"/admin/fabrics/{family}",
                             json={"status": "inactive" if current["status"] == "active" else "active"})
            elif action == "delete-color" and colors:
                client.delete(f"/admin/colors/{rng.choice(colors)['color_id']}")
            elif action == "rename":
                client.patch(f"/admin/fabrics/{family}", json={"display_name": f"{family} v{step}"})
            api = {f["family_id"]: (f["display_name"], sorted((c["color_id"], c["hex_value"]) for c in f["colors"]))
                   for f in client.get("/catalog").json()["families"]}
            with sessions() as s:
                rows = s.execute(select(FabricFamily).where(FabricFamily.status == "active")).scalars().all()
                expected = {f.family_id: (f.display_name, sorted((c.color_id, c.hex_value) for c in s.scalars(
                    select(Color).where(Color.fabric_family_id == f.id, Color.status == "active")))) for f in rows}
            assert api == expected, (seed, step, action)


def test_login_failures_are_throttled_per_address_whatever_the_username(service, admin, sessions):
    with sessions.begin() as s:
        create_user(s, "target", PASSWORD)
    try:
        with service.client() as client:
            guesses = [client.post("/admin/login", data={"username": f"nobody-{n}", "password": "wrong guess"})
                       for n in range(10)]
            refused = client.post("/admin/login", data={"username": "target", "password": PASSWORD})
        assert [r.status_code for r in guesses] == [401] * 10
        assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 900
        with sessions() as s:
            assert s.query(AdminLoginFailure).count() == 10  # refusals while throttled are not even checked
    finally:
        with sessions.begin() as s:
            s.execute(delete(AdminLoginFailure))
    with service.client() as client:
        assert client.post("/admin/login", data={"username": "target", "password": PASSWORD}).status_code == 200


def test_the_catalog_prewarm_makes_a_default_view_instant(service, client):
    """On the cluster: the pre-render queues the catalog's views, and the shop's default view of one is then
    served from the render cache, as is any repeated request."""
    with service.client() as anonymous:
        assert anonymous.post("/admin/renders/prewarm").status_code == 401
    answer = client.post("/admin/renders/prewarm")
    assert answer.status_code == 202, answer.text
    body = answer.json()
    shipped = {color.color_id for family in load_catalog().families for color in family.colors}
    # Colors other tests created without a photo are listed as such; every shipped color has its swatch.
    assert body["combinations"] >= 24 and not shipped & set(body["without_swatch"])
    assert len(body["enqueued"]) == body["combinations"] - body["cached"] - body["in_flight"] > 0
    finals = [_wait(client, job["job_id"])[0] for job in body["enqueued"]]
    assert {final["status"] for final in finals} == {"completed"}
    assert client.post("/admin/renders/prewarm").json()["enqueued"] == []

    default_view = {**NAVY, "cuts": ["cruzado"], "seed": body["seed"]}
    shown, _ = _wait(client, client.post("/generate", json=default_view).json()["job_id"])
    prewarmed = next(f for f in finals if f["color_id"] == NAVY["color_id"] and f["cuts"] == ["cruzado"])
    assert shown["progress"][0]["cached"] is True and prewarmed["progress"][0]["cached"] is False
    assert shown["result_urls"] == prewarmed["result_urls"]
