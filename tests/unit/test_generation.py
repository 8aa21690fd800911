"""The generator's model class on the tiny-random profile: the real diffusers pipeline classes on a CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler
from PIL import Image

from catalog.data import load_catalog
from catalog.prompts import build_prompt
from catalog.swatches import render_swatch
from deployments.denoising import TurboDenoiser
from deployments.generation import Acceleration, CutRequest, SdxlTurboModel, decode_swatch
from deployments.graphs import BucketedRunner
from deployments.model_loading import load_pipeline
from deployments.preprocessing import ControlMapper
from tests.renders import assert_same_render

SIZE = 128


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
        # Batched convolutions may round differently in the last float bit.
        assert_same_render(single.pixels, together.pixels)
        assert single.seed == together.seed


@pytest.mark.parametrize("steps, dtype", [(1, torch.float32), (3, torch.float32), (2, torch.float16)])
def test_fast_path_computes_exactly_what_the_diffusers_pipeline_computes(control, steps, dtype):
    """Same weights, embeddings and seeds through `StableDiffusionXLControlNetPipeline`: the same image.

    On the machine that built it the result is bit-identical (bench/gpu_generate.py reports it); the
    test allows the last-bit rounding another CPU's summation order may bring.
    """
    model = SdxlTurboModel(load_pipeline("tiny-random", device="cpu", dtype=dtype), num_inference_steps=steps)
    plain = load_pipeline("tiny-random", device="cpu", dtype=dtype).pipeline
    swatch = render_swatch("#1F2A44", "095T-0121")
    requests = [request(control, 3, swatch, "navy suit"), request(control, 4, swatch, "grey suit")]
    ours = model.generate(requests)

    embeds = [plain.encode_prompt(r.prompt, device="cpu", do_classifier_free_guidance=False) for r in requests]
    image_embeds, _ = plain.encode_image(decode_swatch(swatch), device="cpu", num_images_per_prompt=1)
    output = plain(
        prompt_embeds=torch.cat([e[0] for e in embeds]), pooled_prompt_embeds=torch.cat([e[2] for e in embeds]),
        image=[Image.fromarray(control)] * 2, ip_adapter_image_embeds=[image_embeds[:, None, :]],
        num_inference_steps=steps, guidance_scale=0.0, height=SIZE, width=SIZE,
        generator=[torch.Generator("cpu").manual_seed(r.seed) for r in requests], output_type="np",
    )
    for mine, theirs in zip(ours, output.images):
        assert_same_render(mine.pixels, np.round(theirs * 255).clip(0, 255).astype(np.uint8))


def test_a_vae_that_asks_for_fp32_is_kept_in_fp32_once_and_decodes_like_the_pipeline(control):
    """The pipeline casts such a VAE to fp32 and back on every call; the fast path does it once."""
    loaded = load_pipeline("tiny-random", device="cpu", dtype=torch.float16)
    plain = load_pipeline("tiny-random", device="cpu", dtype=torch.float16).pipeline
    for pipeline in (loaded.pipeline, plain):
        pipeline.vae.register_to_config(force_upcast=True)
    model = SdxlTurboModel(loaded)
    assert model.pipeline.vae.dtype == torch.float32 and model.pipeline.unet.dtype == torch.float16
    swatch = render_swatch("#1F2A44", "095T-0121")
    [ours] = model.generate([request(control, 8, swatch, "navy suit")])
    image_embeds, _ = plain.encode_image(decode_swatch(swatch), device="cpu", num_images_per_prompt=1)
    output = plain(prompt="navy suit", image=Image.fromarray(control), ip_adapter_image_embeds=[image_embeds[:, None, :]],
                   num_inference_steps=1, guidance_scale=0.0, height=SIZE, width=SIZE,
                   generator=torch.Generator("cpu").manual_seed(8), output_type="np")
    assert plain.vae.dtype == torch.float16  # cast back after its decode
    assert_same_render(ours.pixels, np.round(output.images[0] * 255).clip(0, 255).astype(np.uint8))


def test_batched_cuts_keep_their_own_swatch(model, control):
    """Cuts of different jobs share a batch; each must see only its own swatch's IP-Adapter tokens."""
    navy = request(control, 21, swatch=render_swatch("#1F2A44", "095T-0121"))
    brown = request(control, 21, swatch=render_swatch("#6E4B2F", "330W-0501"))
    alone = [model.generate([r])[0].pixels for r in (navy, brown)]
    together = [image.pixels for image in model.generate([navy, brown])]
    assert np.abs(alone[0].astype(int) - alone[1]).mean() > 0.2  # the swatch matters to the image
    for single, batched in zip(alone, together):
        assert_same_render(single, batched)


def test_batches_pad_to_bucket_sizes_and_split_above_the_largest(control):
    """The GPU path (one CUDA graph per bucket) with the eager denoiser in place of each graph."""
    model = SdxlTurboModel(load_pipeline("tiny-random", device="cpu"))
    requests = [request(control, 40 + i, prompt=f"suit {i}") for i in range(6)]
    eager = model.generate(requests)
    built = []

    def build(example):
        built.append(example.size)
        return model.denoiser

    model.graphs = BucketedRunner((1, 2, 4), build)
    bucketed = model.generate(requests)  # 6 = 4 + 2
    padded = model.generate(requests[:3])  # 3 pads to 4, whose function exists
    [fallback] = model.generate([request(control, 1, swatch=None)])  # scale 0: not what graphs hold
    assert built == [4, 2]
    assert fallback.ip_adapter_fallback
    for reference, image in zip(eager, bucketed):
        assert_same_render(reference.pixels, image.pixels)
    for reference, image in zip(eager, padded):
        assert_same_render(reference.pixels, image.pixels)


def test_channels_last_gives_the_same_images(model, control):
    nhwc = SdxlTurboModel(load_pipeline("tiny-random", device="cpu"),
                          acceleration=Acceleration(channels_last=True))
    assert nhwc.pipeline.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    for seed in (5, 6):
        assert_same_render(nhwc.generate([request(control, seed)])[0].pixels, model.generate([request(control, seed)])[0].pixels)


def test_acceleration_follows_the_device_and_warm_up_runs_each_size(control):
    assert Acceleration.for_device(torch.device("cuda")) == Acceleration(cuda_graphs=True, channels_last=False)
    assert Acceleration.for_device("cuda", max_batch_size=12).batch_sizes == (1, 2, 4, 8, 12)
    assert Acceleration.for_device("cpu", max_batch_size=1).batch_sizes == (1,)
    cpu = SdxlTurboModel(load_pipeline("tiny-random", device="cpu"))
    assert cpu.acceleration == Acceleration() and cpu.graphs is None
    built = []
    cpu.graphs = BucketedRunner((1, 2), lambda example: built.append(example.size) or cpu.denoiser)
    cpu.warm_up(64, 64)
    assert built == [1, 2]
    assert cpu.describe()["cuda_graphs"] == built


def test_fast_path_refuses_a_scheduler_it_does_not_implement():
    pipeline = load_pipeline("tiny-random", device="cpu").pipeline
    pipeline.scheduler = EulerDiscreteScheduler.from_config(pipeline.scheduler.config)
    with pytest.raises(ValueError, match="Euler ancestral"):
        TurboDenoiser(pipeline, 1)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.mark.parametrize("change", ["cut", "prompt", "swatch", "seed"])
def test_each_input_alone_visibly_changes_a_random_render(model, change):
    """The random profiles must respond to every input, or no test could see a bug in its path.

    A fresh ControlNet's zero convolutions would make the control map irrelevant; below 30 dB is a
    change a person sees (the same render is identical: infinite PSNR).
    """
    catalog = load_catalog()
    family = catalog.families[0]
    navy, charcoal, pearl = family.colors[:3]
    mapper = ControlMapper()
    controls = {cut: mapper.control_map(catalog.cut(cut).template_png(), cut, "canny", SIZE) for cut in ("recto", "cruzado")}

    def cut_request(cut="recto", color=navy, swatch_color=navy, seed=5) -> CutRequest:
        prompt = build_prompt(catalog.cut(cut).prompt, family.fabric, color.english)
        return CutRequest(prompt, controls[cut], render_swatch(swatch_color.hex_value, swatch_color.swatch_code), seed)

    changed = {"cut": cut_request(cut="cruzado"), "prompt": cut_request(color=charcoal),
               "swatch": cut_request(swatch_color=pearl), "seed": cut_request(seed=6)}[change]
    [original] = model.generate([cut_request()])
    [again] = model.generate([cut_request()])
    [other] = model.generate([changed])
    assert np.array_equal(original.pixels, again.pixels)
    assert original.pixels.std() > 10  # a render, not a flat or saturated image
    assert psnr(original.pixels, other.pixels) < 30


def test_the_random_controlnet_passes_the_control_map_on():
    """Its residuals are non-zero and depend on the control map (diffusers would start them at zero)."""
    pipeline = load_pipeline("tiny-random", device="cpu").pipeline
    catalog = load_catalog()
    mapper = ControlMapper()
    latents = torch.randn((1, 4, SIZE // 8, SIZE // 8), generator=torch.Generator().manual_seed(0))
    embeds, _, pooled, _ = pipeline.encode_prompt("navy suit", device="cpu", do_classifier_free_guidance=False)
    time_ids = torch.tensor([[SIZE, SIZE, 0, 0, SIZE, SIZE]], dtype=torch.float32)
    residuals = {}
    for cut in ("recto", "cruzado"):
        control = mapper.control_map(catalog.cut(cut).template_png(), cut, "canny", SIZE)
        cond = torch.from_numpy(control.copy()).permute(2, 0, 1)[None].float() / 255  # cached maps are read-only
        with torch.no_grad():
            down, mid = pipeline.controlnet(latents, 999, encoder_hidden_states=embeds, controlnet_cond=cond,
                                            added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids},
                                            return_dict=False)
        residuals[cut] = torch.cat([r.flatten() for r in (*down, mid)])
    assert residuals["recto"].abs().mean() > 0.1
    assert (residuals["recto"] - residuals["cruzado"]).abs().mean() > 0.01 * residuals["recto"].abs().mean()


def test_generation_takes_the_diffusers_peft_path_the_gpu_image_takes(model, control):
    """The GPU image ships `peft`; with it diffusers routes UNet/ControlNet forwards and `encode_prompt`
    through its PEFT backend. The project depends on it, so every test here runs that path."""
    import sys

    import diffusers.utils

    [image] = model.generate([request(control, 4, prompt="peft path probe")])
    assert diffusers.utils.USE_PEFT_BACKEND
    assert "peft.tuners.tuners_utils" in sys.modules
    assert image.pixels.std() > 10


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
    hits_before = model.image_embeddings.cache_info().hits
    model.generate([request(control, 1, swatch=swatch, prompt="cache probe")])
    model.generate([request(control, 2, swatch=swatch, prompt="cache probe")])
    assert model.image_embeddings.cache_info().hits == hits_before + 1
    assert "cache probe" in model.prompt_embeddings.cache


def test_concurrent_callers_get_the_same_images_as_sequential_ones(model, control):
    """Callers on several threads (the runner's in-process renderer does this) must not interfere."""
    from concurrent.futures import ThreadPoolExecutor

    long_prompts = [f"charcoal grey wool suit number {i}, " * 6 for i in range(6)]  # longer than 77 tokens
    requests = [request(control, 30 + i, prompt=p) for i, p in enumerate(long_prompts)]
    fresh = SdxlTurboModel(model.loaded)
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda r: fresh.generate([r])[0], requests))
    for r, image in zip(requests, together):
        assert_same_render(image.pixels, model.generate([r])[0].pixels)


def test_control_maps_are_edges_of_the_template_and_cached():
    mapper = ControlMapper()
    template = load_catalog().cut("cruzado").template_png()
    edges = mapper.control_map(template, "cruzado", "canny", 256)
    again = mapper.control_map(template, "cruzado", "canny", 256)
    info = mapper.maps.cache_info()
    assert again is edges and (info.hits, info.misses) == (1, 1)
    assert edges.shape == (256, 256, 3)
    assert set(np.unique(edges)) <= {0, 255} and 0.005 < (edges > 0).mean() < 0.3
    with pytest.raises(ValueError, match="unknown detector"):
        mapper.control_map(template, "cruzado", "hed", 256)


def test_the_control_map_cache_evicts_the_least_recently_used_map():
    mapper = ControlMapper(cache_size=2)
    template = load_catalog().cut("recto").template_png()
    first = mapper.control_map(template, "recto", "canny", 64)
    mapper.control_map(template, "recto", "canny", 128)
    assert mapper.control_map(template, "recto", "canny", 64) is first  # used again: now the most recent
    mapper.control_map(template, "recto", "canny", 192)  # evicts 128, the least recently used
    assert mapper.control_map(template, "recto", "canny", 64) is first
    mapper.control_map(template, "recto", "canny", 128)
    info = mapper.maps.cache_info()
    assert (info.hits, info.misses, info.currsize) == (2, 4, 2)


PER_THREAD_OPENMP = """
import ctypes, os, threading
import torch
from deployments.generation import model_thread

# OpenMP's thread count for the calling thread, which oneDNN's convolutions use (torch's libgomp, by soname).
openmp_threads = ctypes.CDLL("libgomp.so.1").omp_get_max_threads
torch.set_num_threads(os.cpu_count())  # on the main thread only
plain = []
worker = threading.Thread(target=lambda: plain.append(openmp_threads()))
worker.start(); worker.join()
print(plain[0], model_thread("cpu", 0).submit(openmp_threads).result(),
      model_thread("cpu", 1).submit(openmp_threads).result(), model_thread("cuda", 0).submit(openmp_threads).result())
"""


def test_the_model_thread_of_a_cpu_replica_uses_every_core_though_ray_gave_the_replica_one():
    # Ray starts a replica with fractional num_cpus under OMP_NUM_THREADS=1.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", PER_THREAD_OPENMP], env=env, capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[2]).stdout.split()
    plain, model_all, model_one, model_gpu = map(int, out)
    assert plain == 1  # the trap: another thread keeps Ray's one thread whatever the main thread set
    assert model_all == os.cpu_count()
    assert model_one == 1  # an explicit count is kept
    assert model_gpu == 1  # a GPU replica's launch thread is left as Ray set it
