"""GET /preview and the preview URLs a job carries, on the real app and a real database (no Ray)."""

from __future__ import annotations

import io
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image

from catalog.swatches import photo_swatch
from tests.unit.test_api import NAVY, api, call  # noqa: F401  (the app fixture and its ASGI helper)


def _image(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), dtype=np.float32)


def test_a_catalog_color_previews_in_its_own_cloth_and_cut(api):
    navy = _image(call(api, "GET", "/preview", params={"color_id": "lana-fria-azul-marino", "cut": "recto"}))
    sand = _image(call(api, "GET", "/preview", params={"color_id": "lino-arena", "cut": "recto"}))
    cross = _image(call(api, "GET", "/preview", params={"color_id": "lana-fria-azul-marino", "cut": "cruzado"}))
    assert navy.shape == (512, 512, 3)
    centre = (slice(300, 340), slice(150, 200))  # the jacket's left front, below the pocket line
    # Navy (#1F2A44) is dark and blue-dominant; sand (#D8C7A6) is light and red-dominant.
    navy_cloth, sand_cloth = navy[centre].mean(axis=(0, 1)), sand[centre].mean(axis=(0, 1))
    assert navy_cloth.mean() < 80 and navy_cloth[2] > navy_cloth[0]
    assert sand_cloth.mean() > 140 and sand_cloth[0] > sand_cloth[2]
    assert np.abs(navy - cross).mean() > 2  # the other cut's lapels and buttons
    small = _image(call(api, "GET", "/preview", params={"color_id": "lino-arena", "cut": "recto", "size": 256}))
    assert small.shape == (256, 256, 3)


def test_an_upload_previews_and_the_entity_tag_spares_a_second_transfer(api):
    upload = call(api, "POST", "/upload-swatch", files={"file": ("plaid.jpg", photo_swatch("#7A2E2E", "plaid"), "image/jpeg")})
    assert upload.status_code == 201
    query = {"swatch_url": upload.json()["swatch_url"], "cut": "cruzado"}
    first = call(api, "GET", "/preview", params=query)
    plaid = _image(first)
    assert plaid[300:340, 150:200].std() > 8  # a pattern, not a flat fill
    again = call(api, "GET", "/preview", params=query, headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert api.previews.previews.cache_info().hits >= 1


def test_previews_refuse_what_is_not_ours_or_not_there(api):
    cases = [
        ({"color_id": "lino-arena", "cut": "kilt"}, 422, "unknown cut"),
        ({"cut": "recto"}, 422, "exactly one"),
        ({"color_id": "lino-arena", "swatch_url": "http://testserver/media/x.png", "cut": "recto"}, 422, "exactly one"),
        ({"color_id": "nope", "cut": "recto"}, 404, "not found"),
        ({"swatch_url": "http://evil.example/cloth.jpg", "cut": "recto"}, 422, "issued by this service"),
        ({"swatch_url": "http://testserver/media/temp-uploads/gone.png", "cut": "recto"}, 422, "does not exist"),
        ({"color_id": "lino-arena", "cut": "recto", "size": 4096}, 422, None),
    ]
    for params, code, words in cases:
        response = call(api, "GET", "/preview", params=params)
        assert response.status_code == code, (params, response.text)
        if words:
            assert words in response.json()["detail"], params


def test_a_job_carries_each_cuts_preview_from_the_moment_it_is_accepted(api):
    accepted = call(api, "POST", "/generate", json={**NAVY, "cuts": ["recto", "cruzado"]}).json()
    assert set(accepted["preview_urls"]) == {"recto", "cruzado"}
    job = call(api, "GET", f"/jobs/{accepted['job_id']}").json()
    assert [p["preview_url"] for p in job["progress"]] == [accepted["preview_urls"]["recto"],
                                                           accepted["preview_urls"]["cruzado"]]
    url = urlsplit(accepted["preview_urls"]["cruzado"])
    assert url.path == "/preview" and parse_qs(url.query) == {"color_id": [NAVY["color_id"]], "cut": ["cruzado"]}
    _image(call(api, "GET", accepted["preview_urls"]["cruzado"]))
