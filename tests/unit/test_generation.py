"""The generator's model class on the tiny-random profile: the real diffusers pipeline classes on a CPU."""

from __future__ import annotations


import numpy as np
import pytest

from catalog.data import load_catalog
from catalog.swatches import render_swatch
from deployments.generation import CutRequest, SdxlTurboModel
from deployments.preprocessing import ControlMapper

SIZE = 128


@pytest.fixture(scope="module")
def model() -> SdxlTurboModel:
    return SdxlTurboModel.from_profile("tiny-random", device="cpu")


@pytest.fixture(scope="module")
def control() -> np.ndarray:
    return ControlMapper().control_map(load_catalog().cut("recto").template_png(), "recto", "canny", SIZE)


def request(control, seed: int, swatch: bytes | None = b"", prompt: str = "navy suit") -> CutRequest:
    if swatch == b"":
        swatch = render_swatch("#1F2A44", "095T-0121")
    return CutRequest(prompt, control, swatch, seed)


def test_pipeline_is_the_diffusers_controlnet_pipeline_with_ip_adapter(model):
    from diffusers import StableDiffusionXLControlNetPipeline

    assert isinstance(model.pipeline, StableDiffusionXLControlNetPipeline)
    assert model.pipeline.unet.encoder_hid_proj is not None  # IP-Adapter image projection is loaded
    assert model.describe()["profile"] == "tiny-random"


def test_output_has_requested_size_and_is_deterministic_per_seed(model, control):
    [a] = model.generate([request(control, 1)])
    [b] = model.generate([request(control, 1)])
    [c] = model.generate([request(control, 2)])
    assert a.pixels.shape == (SIZE, SIZE, 3) and a.pixels.dtype == np.uint8
    assert np.array_equal(a.pixels, b.pixels)
    assert np.abs(a.pixels.astype(int) - c.pixels.astype(int)).mean() > 1.0
    assert (a.seed, a.ip_adapter_fallback) == (1, False)


def test_batch_equals_single_calls_with_the_same_seeds(model, control):
    requests = [request(control, 11, prompt="navy suit"), request(control, 12, prompt="grey suit")]
    singles = [model.generate([r])[0] for r in requests]
    batched = model.generate(requests)
    for single, together in zip(singles, batched):
        diff = np.abs(single.pixels.astype(int) - together.pixels.astype(int))
        # Batched convolutions may round differently in the last float bit: at most one grey level.
        assert diff.max() <= 1 and diff.mean() < 0.01
        assert single.seed == together.seed


def test_prompt_and_swatch_change_the_image(model, control):
    [navy] = model.generate([request(control, 5, prompt="navy suit")])
    [tweed] = model.generate([request(control, 5, prompt="brown tweed suit")])
    [other] = model.generate([request(control, 5, swatch=render_swatch("#6E4B2F", "330W-0501"))])
    assert not np.array_equal(navy.pixels, tweed.pixels)
    assert not np.array_equal(navy.pixels, other.pixels)


def test_unreadable_swatch_falls_back_to_scale_zero_and_says_so(model, control):
    [broken] = model.generate([request(control, 9, swatch=b"not an image")])
    [missing] = model.generate([request(control, 9, swatch=None)])
    assert broken.ip_adapter_fallback and missing.ip_adapter_fallback
    assert np.array_equal(broken.pixels, missing.pixels)
    # In a mixed batch the fallback cut still gets scale 0 and the others keep theirs.
    mixed = model.generate([request(control, 9, swatch=None), request(control, 9)])
    [normal] = model.generate([request(control, 9)])
    assert [m.ip_adapter_fallback for m in mixed] == [True, False]
    assert np.abs(mixed[0].pixels.astype(int) - missing.pixels).max() <= 1
    assert np.abs(mixed[1].pixels.astype(int) - normal.pixels).max() <= 1


def test_embeddings_are_cached(model, control):
    swatch = render_swatch("#5E2430", "330W-0534")
    hits_before = model.image_cache.hits
    model.generate([request(control, 1, swatch=swatch, prompt="cache probe")])
    model.generate([request(control, 2, swatch=swatch, prompt="cache probe")])
    assert model.image_cache.hits == hits_before + 1
    assert "cache probe" in model.prompt_cache


def test_concurrent_callers_get_the_same_images_as_sequential_ones(model, control):
    """Callers on several threads (the runner's in-process renderer does this) must not interfere."""
    from concurrent.futures import ThreadPoolExecutor

    long_prompts = [f"charcoal grey wool suit number {i}, " * 6 for i in range(6)]  # longer than 77 tokens
    requests = [request(control, 30 + i, prompt=p) for i, p in enumerate(long_prompts)]
    fresh = SdxlTurboModel(model.loaded)
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda r: fresh.generate([r])[0], requests))
    for r, image in zip(requests, together):
        assert np.array_equal(image.pixels, model.generate([r])[0].pixels)


def test_control_maps_are_edges_of_the_template_and_cached():
    mapper = ControlMapper()
    template = load_catalog().cut("cruzado").template_png()
    edges = mapper.control_map(template, "cruzado", "canny", 256)
    again = mapper.control_map(template, "cruzado", "canny", 256)
    assert again is edges and mapper.hits == 1 and mapper.misses == 1
    assert edges.shape == (256, 256, 3)
    assert set(np.unique(edges)) <= {0, 255} and 0.005 < (edges > 0).mean() < 0.3
    with pytest.raises(ValueError, match="unknown detector"):
        mapper.control_map(template, "cruzado", "hed", 256)
