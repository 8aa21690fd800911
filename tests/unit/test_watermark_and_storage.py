"""The watermark is visibly there; local storage keeps keys inside its root and maps only its own URLs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from deployments.finishing import JpegFinisher
from deployments.rendering import CutImage, CutResult
from deployments.storage import LocalStorage, StorageError
from deployments.watermark import _diagonal_tiling, apply_watermark, corner_label_box


def test_watermark_changes_pixels_where_drawn_and_only_there():
    image = Image.new("RGB", (512, 512), (90, 60, 40))
    marked = np.asarray(apply_watermark(image)).astype(int)
    original = np.asarray(image).astype(int)
    x0, y0, x1, y1 = corner_label_box((512, 512))
    label = marked[y0:y1, x0:x1]
    assert (label.max(axis=2) > 200).any() and (label.max(axis=2) < 10).any()  # white text on black
    changed = np.abs(marked - original).sum(axis=2) > 0
    assert 0.02 < changed.mean() < 0.6  # the tiled text marks part of the image, not all of it
    assert marked.shape == original.shape


def test_the_diagonal_layer_is_drawn_once_per_size_and_marks_each_image_the_same_way():
    first, second = Image.new("RGB", (320, 192), (90, 60, 40)), Image.new("RGB", (320, 192), (20, 120, 200))
    _diagonal_tiling.cache_clear()
    marks = [np.asarray(apply_watermark(image)).astype(int) - np.asarray(image).astype(int)
             for image in (first, second, first)]
    info = _diagonal_tiling.cache_info()
    assert (info.misses, info.hits) == (1, 2)
    assert np.array_equal(marks[0], marks[2])  # the cached layer gives the first image its same marks
    x0, y0, x1, y1 = corner_label_box((320, 192))
    outside_label = np.ones((192, 320), bool)
    outside_label[y0:y1, x0:x1] = False
    # The same places are marked on both colors: the layer, not the image, decides where.
    assert np.array_equal(np.abs(marks[0]).sum(axis=2)[outside_label] > 0, np.abs(marks[1]).sum(axis=2)[outside_label] > 0)


def test_finisher_writes_a_watermarked_jpeg(tmp_path):
    storage = LocalStorage(tmp_path, "http://127.0.0.1:8000/media")
    pixels = np.full((128, 128, 3), 120, np.uint8)
    result = JpegFinisher(storage).finish(CutImage(pixels, 7, False), "generated/f/c/run/recto.jpg")
    assert result == CutResult("http://127.0.0.1:8000/media/generated/f/c/run/recto.jpg", "generated/f/c/run/recto.jpg",
                               7, False)
    with Image.open(io.BytesIO(storage.get(result.key))) as jpeg:
        assert jpeg.format == "JPEG" and jpeg.size == (128, 128)
        assert not jpeg.getexif()
        assert np.abs(np.asarray(jpeg).astype(int) - 120).max() > 60


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", "a//b", "a/./b", "", "a\\b", "a/\x00"])
def test_local_storage_refuses_escaping_keys(tmp_path, key):
    storage = LocalStorage(tmp_path, "http://127.0.0.1:8000/media")
    with pytest.raises(StorageError):
        storage.put(key, b"x", "text/plain")


def test_url_round_trip_only_for_own_urls(tmp_path):
    storage = LocalStorage(tmp_path, "http://127.0.0.1:8000/media")
    url = storage.put("SASTRE 2026-27/095T-0121.png", b"png", "image/png")
    assert url == "http://127.0.0.1:8000/media/SASTRE%202026-27/095T-0121.png"
    assert storage.key_for_url(url) == "SASTRE 2026-27/095T-0121.png"
    for foreign in ["http://evil.example/media/x.png", "https://127.0.0.1:8000/media/x.png",
                    "http://127.0.0.1:8000/other/x.png", "http://127.0.0.1:8000/media/a/%2e%2e/b",
                    "http://127.0.0.1:8000/media/x.png?y=1", "file:///etc/passwd"]:
        assert storage.key_for_url(foreign) is None, foreign
