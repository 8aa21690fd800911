"""Where the `pretrained` profile finds its weights, and the defaults for them.

Kept apart from `model_loading` (torch, diffusers) so that `Settings` can take its model defaults from
here without importing a deep-learning stack: the CLI and the ingress read settings too.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSources:
    """Hub ids or local directories. Picklable: the app builder binds it into the generator as is."""

    base: str = "stabilityai/sdxl-turbo"
    controlnet: str = "diffusers/controlnet-canny-sdxl-1.0"
    ip_adapter: str = "h94/IP-Adapter"
    ip_adapter_subfolder: str = "sdxl_models"
    ip_adapter_weight: str = "ip-adapter_sdxl_vit-h.safetensors"
    image_encoder_subfolder: str = "models/image_encoder"
    # SDXL's own VAE overflows in fp16, so it asks to be upcast to fp32 for every decode; this
    # re-trained one decodes in fp16 to within rounding. Empty: use the base model's VAE.
    vae: str = "madebyollin/sdxl-vae-fp16-fix"
