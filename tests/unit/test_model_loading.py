"""The `pretrained` loading path, offline, from directories written with save_pretrained."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from catalog.data import load_catalog
from catalog.swatches import render_swatch
from deployments.generation import CutRequest, SdxlTurboModel
from deployments.model_configs import build_random_components
from deployments.model_loading import load_pipeline
from deployments.model_sources import ModelSources
from deployments.preprocessing import ControlMapper
from tests.renders import MAX_LEVELS, MEAN_LEVELS, assert_same_render, render_difference

COMPONENTS = ("unet", "controlnet", "vae", "text_encoder", "text_encoder_2", "image_encoder")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> ModelSources:
    """Tiny weights laid out like the three hub repositories the production profile uses."""
    from diffusers import StableDiffusionXLControlNetPipeline

    root: Path = tmp_path_factory.mktemp("weights")
    components = build_random_components("tiny-random")
    ip_adapter = components.pop("ip_adapter_state_dict")
    StableDiffusionXLControlNetPipeline(**components).save_pretrained(root / "sdxl-turbo")
    components["controlnet"].save_pretrained(root / "controlnet-canny")
    components["image_encoder"].save_pretrained(root / "ip-adapter" / "models" / "image_encoder")
    components["vae"].save_pretrained(root / "vae-fp16-fix")
    (root / "ip-adapter" / "sdxl_models").mkdir(parents=True)
    flat = {f"{part}.{name}": tensor.contiguous() for part, tensors in ip_adapter.items() for name, tensor in tensors.items()}
    save_file(flat, root / "ip-adapter" / "sdxl_models" / "ip-adapter_sdxl_vit-h.safetensors")
    return ModelSources(base=str(root / "sdxl-turbo"), controlnet=str(root / "controlnet-canny"),
                        ip_adapter=str(root / "ip-adapter"), vae=str(root / "vae-fp16-fix"))


def _image(model: SdxlTurboModel) -> np.ndarray:
    control = ControlMapper().control_map(load_catalog().cut("recto").template_png(), "recto", "canny", 64)
    return model.generate([CutRequest("navy suit", control, render_swatch("#1F2A44", "x"), 3)])[0].pixels


def test_pretrained_loads_offline_and_matches_the_same_weights_in_memory(checkpoint):
    loaded = load_pipeline("pretrained", checkpoint, device="cpu")
    assert (loaded.profile, loaded.note) == ("pretrained", None)
    assert loaded.pipeline.unet.encoder_hid_proj is not None
    in_memory = load_pipeline("tiny-random", device="cpu")
    for name in COMPONENTS:  # the weights are exactly the same ...
        disk, memory = getattr(loaded.pipeline, name).state_dict(), getattr(in_memory.pipeline, name).state_dict()
        assert disk.keys() == memory.keys() and all(torch.equal(disk[k], memory[k]) for k in disk), name
    # ... and so is the image, up to the float summation order the two load paths may take on this CPU.
    assert_same_render(_image(SdxlTurboModel(loaded)), _image(SdxlTurboModel(in_memory)))


def test_a_perturbed_weight_fails_the_render_comparison():
    """The tolerance of `assert_same_render` still catches a wrong weight: one tensor off by 1 %."""
    reference = _image(SdxlTurboModel(load_pipeline("tiny-random", device="cpu")))
    for component, parameter in (("unet", "conv_out.weight"), ("controlnet", "controlnet_mid_block.weight"),
                                 ("vae", "decoder.conv_out.weight")):
        loaded = load_pipeline("tiny-random", device="cpu")
        with torch.no_grad():
            getattr(loaded.pipeline, component).get_parameter(parameter).mul_(1.01)
        largest, mean = render_difference(reference, _image(SdxlTurboModel(loaded)))
        assert largest > MAX_LEVELS or mean >= MEAN_LEVELS, (component, parameter, largest, mean)


def test_pretrained_takes_the_vae_from_its_own_source_or_the_base(checkpoint, tmp_path):
    """The fp16-safe VAE replaces the base model's; an empty source keeps the base model's VAE."""
    other = build_random_components("tiny-random", seed=1)["vae"]
    other.save_pretrained(tmp_path / "other-vae")
    replaced = load_pipeline("pretrained", replace(checkpoint, vae=str(tmp_path / "other-vae")), device="cpu")
    assert torch.equal(replaced.pipeline.vae.decoder.conv_out.weight, other.decoder.conv_out.weight)
    base = load_pipeline("pretrained", replace(checkpoint, vae=""), device="cpu")
    assert not torch.equal(base.pipeline.vae.decoder.conv_out.weight, other.decoder.conv_out.weight)


def test_auto_prefers_local_weights_and_falls_back_loudly(checkpoint, tmp_path, caplog):
    assert load_pipeline("auto", checkpoint, device="cpu").profile == "pretrained"
    missing = ModelSources(base=str(tmp_path / "nope"), controlnet=str(tmp_path / "nope"), ip_adapter=str(tmp_path / "nope"))
    with caplog.at_level("WARNING", logger="sastre.models"):
        loaded = load_pipeline("auto", missing, device="cpu")
    assert loaded.profile == "tiny-random" and "NOT real renders" in loaded.note
    assert "NOT real renders" in caplog.text


def test_unknown_profile_is_refused():
    with pytest.raises(ValueError, match="unknown model profile"):
        load_pipeline("huge", device="cpu")


def test_full_random_has_the_published_sdxl_shapes():
    """Counted on the meta device: no memory is allocated for the 5 billion parameters."""
    components = build_random_components("full-random", device="meta")

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    assert count(components["unet"]) == 2_567_463_684  # SDXL UNet
    assert count(components["vae"]) == 83_653_863
    assert count(components["text_encoder"]) == 123_060_480  # CLIP ViT-L/14 text
    assert count(components["text_encoder_2"]) == 694_659_840  # OpenCLIP bigG text
    assert count(components["image_encoder"]) == 632_076_800  # IP-Adapter's ViT-H/14
    # ControlNet: the UNet's encoder + mid block, zero convs and the Canny conditioning embedding. Pinned
    # exactly so a change to the spec shows; ~2.5 GB in fp16, the size of controlnet-canny-sdxl-1.0.
    assert count(components["controlnet"]) == 1_251_014_160


def test_random_components_cast_as_built_hold_the_weights_a_cast_afterwards_gives():
    """Built straight to fp16 (the full size never holds every component in fp32 at once), the
    weights are exactly those of an fp32 build cast to fp16 afterwards."""
    half = build_random_components("tiny-random", dtype=torch.float16)
    full = build_random_components("tiny-random")
    for name in COMPONENTS:
        cast = full[name].to(torch.float16).state_dict()
        built = half[name].state_dict()
        assert all(t.dtype == torch.float16 for t in built.values() if t.is_floating_point()), name
        assert built.keys() == cast.keys() and all(torch.equal(built[k], cast[k]) for k in built), name
