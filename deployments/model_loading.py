"""Building the SDXL Turbo + ControlNet + IP-Adapter pipeline for a model profile.

Every profile ends in the same diffusers classes (`StableDiffusionXLControlNetPipeline` with an
IP-Adapter loaded through `load_ip_adapter`), so the code that serves requests never branches on it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, ControlNetModel, StableDiffusionXLControlNetPipeline
from transformers import CLIPVisionModelWithProjection

from deployments.model_configs import build_random_components
from deployments.model_sources import ModelSources

logger = logging.getLogger("sastre.models")

PROFILES = ("pretrained", "tiny-random", "full-random", "auto")


@dataclass(frozen=True)
class LoadedPipeline:
    pipeline: StableDiffusionXLControlNetPipeline
    requested_profile: str
    profile: str
    note: str | None = None  # set when `auto` had to fall back


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> torch.dtype:
    return torch.float16 if device.startswith("cuda") else torch.float32


def load_pretrained(sources: ModelSources, dtype: torch.dtype, local_files_only: bool = False) -> StableDiffusionXLControlNetPipeline:
    """Load published weights (hub ids or `save_pretrained` directories)."""
    controlnet = ControlNetModel.from_pretrained(sources.controlnet, dtype=dtype, local_files_only=local_files_only)
    image_encoder = CLIPVisionModelWithProjection.from_pretrained(
        sources.ip_adapter, subfolder=sources.image_encoder_subfolder, dtype=dtype,
        local_files_only=local_files_only,
    )
    replaced = {"vae": AutoencoderKL.from_pretrained(sources.vae, dtype=dtype, local_files_only=local_files_only)} if sources.vae else {}
    pipeline = StableDiffusionXLControlNetPipeline.from_pretrained(
        sources.base, controlnet=controlnet, image_encoder=image_encoder, dtype=dtype,
        local_files_only=local_files_only, **replaced,
    )
    pipeline.load_ip_adapter(
        sources.ip_adapter, subfolder=sources.ip_adapter_subfolder, weight_name=sources.ip_adapter_weight,
        image_encoder_folder=None, local_files_only=local_files_only,
    )
    return pipeline


def build_random(profile: str, device: str, dtype: torch.dtype) -> StableDiffusionXLControlNetPipeline:
    """Random weights of the tiny or the real architecture; built on `device` so full size is quick on a GPU."""
    components = build_random_components(profile, device=device, dtype=dtype)
    ip_adapter = components.pop("ip_adapter_state_dict")
    pipeline = StableDiffusionXLControlNetPipeline(**components)
    pipeline.load_ip_adapter(ip_adapter, subfolder="", weight_name="random")  # cast to the UNet's dtype
    return pipeline


def load_pipeline(
    profile: str,
    sources: ModelSources = ModelSources(),
    device: str | None = None,
    dtype: torch.dtype | None = None,
) -> LoadedPipeline:
    """Build the pipeline for `profile`; `auto` prefers local pretrained weights and says loudly when it can't."""
    if profile not in PROFILES:
        raise ValueError(f"unknown model profile {profile!r}; choose one of {', '.join(PROFILES)}")
    device = device or default_device()
    dtype = dtype or default_dtype(device)
    note = None
    if profile == "pretrained":
        pipeline, resolved = load_pretrained(sources, dtype).to(device), "pretrained"
    elif profile == "auto":
        try:
            pipeline = load_pretrained(sources, dtype, local_files_only=True).to(device)
            resolved = "pretrained"
        except (OSError, ValueError) as exc:
            note = (
                "MODEL PROFILE auto: pretrained weights not found locally "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
                "serving the tiny-random profile: images are NOT real renders"
            )
            logger.warning(note)
            pipeline, resolved = build_random("tiny-random", device, dtype), "tiny-random"
    else:
        pipeline, resolved = build_random(profile, device, dtype), profile
    pipeline.set_progress_bar_config(disable=True)
    return LoadedPipeline(pipeline, profile, resolved, note)
