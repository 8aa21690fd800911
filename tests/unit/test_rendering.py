"""The render chain, in-process: the wiring every path uses (the runner on Serve, the tests, the benchmark).

The real plain classes (tiny-random model on the CPU, Canny, the finisher) and local storage. The Serve
stages send the same arguments through deployment handles; tests/integration exercises them.
"""

from __future__ import annotations

import asyncio
import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from catalog.data import load_catalog
from catalog.swatches import render_swatch
from deployments.digests import swatch_digest
from deployments.finishing import JpegFinisher
from deployments.generation import CutGenerator, CutRequest
from deployments.preprocessing import ControlMapper
from deployments.rendering import CutResult, CutTask, GenerationInput, RenderChain
from deployments.stages import StageTimeout
from deployments.storage import LocalStorage
from deployments.swatch_size import SWATCH_MAX_SIDE
from tests.renders import assert_same_render
from tests.upload_files import STRIPES, striped_photo

SWATCH_KEY = "swatches/330W-0534.png"
SIZE = 64


@pytest.fixture
def storage(tmp_path) -> LocalStorage:
    storage = LocalStorage(tmp_path, "http://127.0.0.1:8000/media")
    storage.put(SWATCH_KEY, render_swatch("#5E2430", "330W-0534"), "image/png")
    return storage


def _task(seed: int, swatch_key: str | None = SWATCH_KEY, cut: str = "cruzado") -> CutTask:
    template = load_catalog().cut(cut).template_png()
    return CutTask(job_id="job-1", cut=cut, prompt="a burgundy double-breasted suit", template_png=template,
                   swatch_key=swatch_key, seed=seed, result_key=f"generated/test/{seed}/{cut}.jpg")


def _stored_pixels(storage: LocalStorage, key: str) -> np.ndarray:
    with Image.open(io.BytesIO(storage.get(key))) as image:
        assert image.format == "JPEG"
        return np.asarray(image.convert("RGB"))


def test_a_cut_through_the_chain_is_the_model_s_image_for_its_inputs_finished_and_stored(model, storage):
    mapper, finisher = ControlMapper(), JpegFinisher(storage)
    chain = RenderChain.in_process(mapper, CutGenerator(model, storage), finisher, "canny", SIZE, stage_timeout_s=60)
    task = _task(seed=11)

    result = asyncio.run(chain.render(task))

    assert result == CutResult(storage.url_for(task.result_key), task.result_key, 11, False)
    control = mapper.control_map(task.template_png, task.cut, "canny", SIZE)
    [direct] = model.generate([CutRequest(task.prompt, control, storage.get(SWATCH_KEY), 11)])
    expected = np.asarray(Image.open(io.BytesIO(finisher.encode(direct.pixels))).convert("RGB"))
    stored = _stored_pixels(storage, task.result_key)
    assert stored.shape == (SIZE, SIZE, 3)
    assert_same_render(stored, expected)


def test_the_chain_passes_each_cut_its_own_seed_and_template(model, storage):
    chain = RenderChain.in_process(ControlMapper(), CutGenerator(model, storage), JpegFinisher(storage), "canny", SIZE,
                                   stage_timeout_s=60)

    async def both() -> list[CutResult]:
        return await asyncio.gather(chain.render(_task(seed=1)), chain.render(_task(seed=2)),
                                    chain.render(_task(seed=1, cut="recto")))

    one, two, recto = (_stored_pixels(storage, r.key) for r in asyncio.run(both()))
    assert np.abs(one.astype(int) - two).mean() > 5  # seeds differ
    assert np.abs(one.astype(int) - recto).mean() > 5  # templates differ


def test_a_swatch_that_is_gone_renders_at_ip_adapter_scale_zero_and_says_so(model, storage):
    generator = CutGenerator(model, storage)
    chain = RenderChain.in_process(ControlMapper(), generator, JpegFinisher(storage), "canny", SIZE, stage_timeout_s=60)

    gone = asyncio.run(chain.render(_task(seed=5, swatch_key="swatches/deleted.png")))
    none = asyncio.run(chain.render(_task(seed=5, swatch_key=None)))

    assert gone.ip_adapter_fallback and none.ip_adapter_fallback
    blank = np.zeros((SIZE, SIZE, 3), np.uint8)
    assert generator.request(GenerationInput("p", 5, "swatches/deleted.png"), blank).swatch is None
    assert generator.request(GenerationInput("p", 5, SWATCH_KEY), blank).swatch == storage.get(SWATCH_KEY)
    assert np.array_equal(_stored_pixels(storage, gone.key), _stored_pixels(storage, none.key))


def test_a_swatch_is_read_only_when_the_embedding_of_its_planned_digest_is_not_cached(model, storage):
    """The job's plan names the swatch by its digest, so a hit needs no read and no hash; a new digest (an
    admin replaced the swatch) is read and rendered; without a digest, or when the swatch is gone, every
    cut reads."""
    generator = CutGenerator(model, storage)
    control = ControlMapper().control_map(load_catalog().cut("cruzado").template_png(), "cruzado", "canny", SIZE)
    storage.put(SWATCH_KEY, render_swatch("#3B5B3A", "a swatch no other test embeds"), "image/png")
    planned = GenerationInput("p", 5, SWATCH_KEY, swatch_digest(storage.get(SWATCH_KEY)))

    first = generator.generate(planned, control)
    again = generator.generate(planned, control)
    assert generator.reads == 1 and np.array_equal(first.pixels, again.pixels)
    hit = generator.request(planned, control)
    assert hit.swatch is None and hit.swatch_embedding is not None and generator.reads == 1

    storage.put(SWATCH_KEY, render_swatch("#4A2E5B", "another swatch no other test embeds"), "image/png")
    replaced = generator.generate(GenerationInput("p", 5, SWATCH_KEY, swatch_digest(storage.get(SWATCH_KEY))), control)
    [reference] = model.generate([CutRequest("p", control, storage.get(SWATCH_KEY), 5)])
    assert generator.reads == 2 and np.array_equal(replaced.pixels, reference.pixels)
    assert not np.array_equal(replaced.pixels, first.pixels)

    generator.generate(GenerationInput("p", 5, SWATCH_KEY), control)
    generator.generate(GenerationInput("p", 5, SWATCH_KEY), control)
    assert generator.reads == 4
    gone = [generator.generate(GenerationInput("p", 5, "swatches/deleted.png", "0" * 64), control) for _ in range(2)]
    assert generator.reads == 6 and all(image.ip_adapter_fallback for image in gone)


def test_a_stage_past_its_timeout_fails_the_render_naming_the_stage(model, storage):
    """A control map of the full-size template at 1024 px takes far longer than the 1 ms bound."""
    chain = RenderChain.in_process(ControlMapper(), CutGenerator(model, storage), JpegFinisher(storage), "canny", 1024,
                                   stage_timeout_s=0.001)
    with pytest.raises(StageTimeout, match="preprocess did not finish within 0.001 s"):
        asyncio.run(chain.render(_task(seed=3)))


def test_a_large_legacy_swatch_reaches_the_model_downscaled(model, storage):
    """A swatch stored at full size before uploads were downscaled is shrunk by the reader (a thread of
    its own on Serve), so the model thread decodes at most SWATCH_MAX_SIDE px; its colour is kept and its
    identity (the embedding cache's key) is still the stored content's hash."""
    legacy = striped_photo("PNG", (3000, 2000))
    storage.put("swatches/legacy.png", legacy, "image/png")
    generator = CutGenerator(model, storage)

    request = generator.request(GenerationInput("p", 5, "swatches/legacy.png"), np.zeros((SIZE, SIZE, 3), np.uint8))

    with Image.open(io.BytesIO(request.swatch)) as image:
        assert image.size == (SWATCH_MAX_SIDE, 683)
        mean = np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(axis=0)
    assert np.abs(mean - np.mean(STRIPES, axis=0)).max() < 4, mean
    assert request.swatch_digest == hashlib.sha256(legacy).hexdigest()
    small = generator.request(GenerationInput("p", 5, SWATCH_KEY), np.zeros((SIZE, SIZE, 3), np.uint8))
    assert small.swatch == storage.get(SWATCH_KEY)  # a swatch within the size is passed on as stored
