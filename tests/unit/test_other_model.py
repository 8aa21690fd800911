"""The README's "Using other weights", done as it says: another SDXL model served through the settings.

SDXL-Turbo's licence is non-commercial, so a shop may need other weights. These tests save a tiny
SDXL-architecture model that is not SDXL-Turbo's (other weights, another name) the way a hub repository
lays one out, set exactly the settings the README's example sets, and load it offline through the
production `pretrained` path, from a directory and from the Hugging Face cache under a hub id.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from catalog.data import load_catalog
from catalog.swatches import render_swatch
from deployments.generation import CutRequest, SdxlTurboModel
from deployments.model_configs import build_random_components
from deployments.model_loading import LoadedPipeline, load_pipeline
from deployments.preprocessing import ControlMapper
from serve_app.settings import Settings
from tests.renders import assert_same_render

README = Path(__file__).resolve().parents[2] / "README.md"
OTHER_SEED = 7  # not the tiny-random profile's seed 0: the weights are another model's
HUB_ID = "acme/sdxl-one-step"
BASE_PARTS = ("unet", "vae", "text_encoder", "text_encoder_2")


def readme_example() -> dict[str, str]:
    """The settings in the README's "Using other weights" example, as it prints them."""
    section = README.read_text().split("### Using other weights", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    settings = {}
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, value = line.split("=", 1)
            settings[name] = value
    return settings


def other_components() -> dict:
    return build_random_components("tiny-random", seed=OTHER_SEED)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Another SDXL model laid out like its hub repository (StableDiffusionXLPipeline, no ControlNet or
    image encoder in it), beside a ControlNet and an IP-Adapter of its width."""
    from diffusers import StableDiffusionXLPipeline

    root: Path = tmp_path_factory.mktemp("other-weights")
    components = other_components()
    ip_adapter = components.pop("ip_adapter_state_dict")
    base = {name: components[name] for name in (*BASE_PARTS, "tokenizer", "tokenizer_2", "scheduler")}
    StableDiffusionXLPipeline(**base).save_pretrained(root / "acme-sdxl-one-step")
    components["controlnet"].save_pretrained(root / "controlnet")
    components["image_encoder"].save_pretrained(root / "ip-adapter" / "models" / "image_encoder")
    (root / "ip-adapter" / "sdxl_models").mkdir(parents=True)
    flat = {f"{part}.{name}": t.contiguous() for part, tensors in ip_adapter.items() for name, t in tensors.items()}
    save_file(flat, root / "ip-adapter" / "sdxl_models" / "ip-adapter_sdxl_vit-h.safetensors")
    return root


def as_hub_cache(directory: Path, cache: Path, repo_id: str) -> None:
    """Put `directory` where a download of `repo_id` would have left it in the Hugging Face cache."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0" * 40
    shutil.copytree(directory, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def settings_as_the_readme_shows(monkeypatch, weights: Path, base_model: str) -> Settings:
    """The README's settings with its example path replaced; the other three point at local tiny ones,
    since tests never reach the hub (the README leaves them at their hub defaults)."""
    example = readme_example()
    example["SASTRE_BASE_MODEL"] = base_model
    example |= {"SASTRE_CONTROLNET_MODEL": str(weights / "controlnet"),
                "SASTRE_IP_ADAPTER_MODEL": str(weights / "ip-adapter"),
                "SASTRE_VAE_MODEL": ""}  # the model's own VAE, as the README offers
    for name, value in example.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)


def render(model: SdxlTurboModel, seed: int = 3) -> np.ndarray:
    control = ControlMapper().control_map(load_catalog().cut("recto").template_png(), "recto", "canny", 64)
    return model.generate([CutRequest("navy suit", control, render_swatch("#1F2A44", "x"), seed)])[0].pixels


def in_memory(components: dict) -> SdxlTurboModel:
    """The same weights built in memory, as the tiny-random profile builds its own."""
    from diffusers import StableDiffusionXLControlNetPipeline

    ip_adapter = components.pop("ip_adapter_state_dict")
    pipeline = StableDiffusionXLControlNetPipeline(**components)
    pipeline.load_ip_adapter(ip_adapter, subfolder="", weight_name="random")
    pipeline.set_progress_bar_config(disable=True)
    return SdxlTurboModel(LoadedPipeline(pipeline, "tiny-random", "tiny-random"))


def test_the_readme_example_sets_only_settings_that_exist():
    example = readme_example()
    assert {"SASTRE_MODEL_PROFILE", "SASTRE_BASE_MODEL", "SASTRE_NUM_INFERENCE_STEPS"} <= example.keys()
    for name in example:
        assert name.startswith("SASTRE_") and name.removeprefix("SASTRE_").lower() in Settings.model_fields, name
    Settings(_env_file=None, **{name.removeprefix("SASTRE_").lower(): v for name, v in example.items()})
    for name in re.findall(r"`(SASTRE_[A-Z_0-9]+)", README.read_text().split("### Using other weights", 1)[1]
                           .split("\n### ", 1)[0]):
        assert name.removeprefix("SASTRE_").lower() in Settings.model_fields, name


@pytest.mark.parametrize("source", ["directory", "hub id"])
def test_another_sdxl_model_is_served_from_the_readme_settings(source, weights, tmp_path, monkeypatch):
    if source == "directory":
        base_model = str(weights / "acme-sdxl-one-step")
    else:
        as_hub_cache(weights / "acme-sdxl-one-step", tmp_path / "hub", HUB_ID)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
        base_model = HUB_ID
    assert huggingface_hub.constants.HF_HUB_OFFLINE  # tests/conftest.py: nothing is downloaded
    settings = settings_as_the_readme_shows(monkeypatch, weights, base_model)

    # What the generator replica does with them (deployments/serving.py), on the CPU.
    loaded = load_pipeline(settings.model_profile, settings.model_sources(), device="cpu")
    model = SdxlTurboModel(loaded, settings.num_inference_steps)
    assert (loaded.profile, loaded.note) == ("pretrained", None)

    saved = other_components()
    for name in BASE_PARTS:  # the other model's weights, its own VAE included
        disk, expected = getattr(loaded.pipeline, name).state_dict(), saved[name].state_dict()
        # (the UNet holds the IP-Adapter's layers besides its own)
        assert expected.keys() <= disk.keys() and all(torch.equal(disk[k], expected[k]) for k in expected), name
    image = render(model)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert image.std() > 5, "a constant image"
    assert_same_render(image, render(in_memory(saved)))
    default = SdxlTurboModel(load_pipeline("tiny-random", device="cpu"))  # seed 0's weights: not these
    assert np.abs(image.astype(int) - render(default).astype(int)).mean() > 5


def test_a_model_with_another_scheduler_is_refused_when_the_generator_starts(weights, tmp_path, monkeypatch):
    """The README's requirement: the fast path implements Euler ancestral alone, so a model shipped
    with another scheduler fails loudly at start-up rather than rendering with the wrong update."""
    other = tmp_path / "euler-sdxl"
    shutil.copytree(weights / "acme-sdxl-one-step", other)
    index = json.loads((other / "model_index.json").read_text())  # the class diffusers loads
    index["scheduler"] = ["diffusers", "EulerDiscreteScheduler"]
    (other / "model_index.json").write_text(json.dumps(index))
    config = json.loads((other / "scheduler" / "scheduler_config.json").read_text())
    config["_class_name"] = "EulerDiscreteScheduler"
    (other / "scheduler" / "scheduler_config.json").write_text(json.dumps(config))
    settings = settings_as_the_readme_shows(monkeypatch, weights, str(other))
    loaded = load_pipeline(settings.model_profile, settings.model_sources(), device="cpu")
    assert type(loaded.pipeline.scheduler).__name__ == "EulerDiscreteScheduler"
    with pytest.raises(ValueError, match="Euler ancestral"):
        SdxlTurboModel(loaded, settings.num_inference_steps)
