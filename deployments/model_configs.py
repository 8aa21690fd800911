"""Component configurations for the random-weight model profiles.

`tiny-random` keeps every class and wiring of the production pipeline (two CLIP text encoders, an SDXL
UNet with text-time conditioning, a ControlNet, an IP-Adapter with its CLIP vision encoder, an 8x VAE)
but shrinks every width so a CPU renders an image in well under a second. `full-random` uses the real
SDXL-Turbo / controlnet-canny-sdxl / IP-Adapter ViT-H shapes, so GPU latency and memory can be measured
without downloading weights. Neither needs the network: the tokenizer is a byte-level CLIP BPE written
on the fly.

A freshly initialized ControlNet ignores its control map: diffusers zeroes its "zero convolutions" so
training starts from the plain UNet. Random profiles would then render the same image for every cut,
and no test could notice a control-path bug. `steer_random_model` gives those layers seeded non-zero
weights, and in the tiny profile also balances how strongly seed, prompt, swatch and control map each
move the output, so every input visibly changes the image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import math

import torch
from diffusers import AutoencoderKL, ControlNetModel, EulerAncestralDiscreteScheduler, UNet2DConditionModel
from diffusers.models.embeddings import ImageProjection
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

IP_ADAPTER_TOKENS = 4  # ip-adapter_sdxl_vit-h projects one image embedding to 4 context tokens


@dataclass(frozen=True)
class ConditioningGains:
    """How strongly each input steers a random-weight model, as multipliers on its entry layers.

    With default initialization the seed's noise swamps everything else (changing the prompt, the
    swatch or the control map moves a random render by under a grey level). These gains only rescale
    weights; architecture, compute and shapes are unchanged.
    """

    control: float = 1.0  # ControlNet conditioning output and zero convolutions (std = gain / sqrt(fan_in))
    text: float = 1.0  # UNet cross-attention outputs
    pooled_text: float = 1.0  # UNet pooled-text (added time) embedding
    attention: float = 1.0  # UNet cross-attention queries and keys: sharper attention to each token
    swatch: float = 1.0  # IP-Adapter value projections
    noise: float = 1.0  # input convolutions, which see the seed's noisy latents
    output: float = 1.0  # UNet output convolution: how far the prediction moves the latents


# What makes each part SDXL's whatever its widths: both profiles build their UNet and VAE with these.
SDXL_UNET = dict(in_channels=4, out_channels=4, use_linear_projection=True, addition_embed_type="text_time")
SDXL_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    force_upcast=False,  # as madebyollin/sdxl-vae-fp16-fix, which the pretrained profile loads
)


@dataclass(frozen=True)
class ArchitectureSpec:
    """Every width that differs between the tiny and the full-size architecture."""

    unet: dict
    vae: dict
    text_encoder: dict
    text_encoder_2: dict
    image_encoder: dict
    image_size: int
    controlnet_conditioning_channels: tuple[int, ...]
    gains: ConditioningGains = ConditioningGains()
    extra: dict = field(default_factory=dict)


TINY = ArchitectureSpec(
    unet=dict(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=64,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=64,
        norm_num_groups=16,
    ),
    vae=dict(
        block_out_channels=(16, 16, 16, 16),
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=512,
    ),
    text_encoder=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, projection_dim=32),
    text_encoder_2=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, projection_dim=32),
    image_encoder=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                       projection_dim=32, image_size=32, patch_size=8),
    image_size=32,
    controlnet_conditioning_channels=(8, 8, 16, 16),
    # Chosen so that changing only the cut, the prompt, the swatch or the seed each moves a 256 px
    # render below 30 dB PSNR (tests/unit/test_generation.py), and the cut's outline shows.
    gains=ConditioningGains(control=6.0, text=15.0, pooled_text=30.0, attention=6.0, swatch=10.0, noise=0.1,
                            output=10.0),
)

# Shapes of stabilityai/sdxl-turbo, diffusers/controlnet-canny-sdxl-1.0 and h94/IP-Adapter (ViT-H).
FULL = ArchitectureSpec(
    unet=dict(
        block_out_channels=(320, 640, 1280),
        layers_per_block=2,
        sample_size=64,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(5, 10, 20),
        addition_time_embed_dim=256,
        addition_embed_type_num_heads=64,
        transformer_layers_per_block=(1, 2, 10),
        projection_class_embeddings_input_dim=2816,
        cross_attention_dim=2048,
        norm_num_groups=32,
    ),
    vae=dict(
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        norm_num_groups=32,
        sample_size=1024,
        scaling_factor=0.13025,
    ),
    text_encoder=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                      projection_dim=768, hidden_act="quick_gelu"),
    text_encoder_2=dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
                        projection_dim=1280, hidden_act="gelu"),
    image_encoder=dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=16, num_hidden_layers=32,
                       projection_dim=1024, image_size=224, patch_size=14, hidden_act="gelu"),
    image_size=224,
    controlnet_conditioning_channels=(16, 32, 96, 256),
)

SPECS = {"tiny-random": TINY, "full-random": FULL}


@torch.no_grad()
def steer_random_model(unet: UNet2DConditionModel, controlnet: ControlNetModel, gains: ConditioningGains) -> None:
    """Give the ControlNet's zero-initialized layers seeded weights and apply `gains` (see module doc).

    Draws from the current RNG, so under `build_random_components`'s seed it is deterministic.
    """
    def normal_(conv: torch.nn.Conv2d, gain: float) -> None:
        conv.weight.normal_(0.0, gain / math.sqrt(conv.weight[0].numel()))

    embedding = controlnet.controlnet_cond_embedding
    for conv in (embedding.conv_in, *embedding.blocks):
        normal_(conv, math.sqrt(2.0))  # He init: the sparse edge map survives the SiLU layers
    normal_(embedding.conv_out, gains.control)
    for conv in (*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block):
        normal_(conv, gains.control)
    for conv in (unet.conv_in, controlnet.conv_in):
        conv.weight.mul_(gains.noise)
    unet.conv_out.weight.mul_(gains.output)
    unet.conv_out.bias.mul_(gains.output)
    unet.add_embedding.linear_2.weight.mul_(gains.pooled_text)
    for name, module in unet.named_modules():
        if name.endswith(("attn2.to_q", "attn2.to_k")):
            module.weight.mul_(gains.attention)
        elif name.endswith("attn2.to_out.0"):
            module.weight.mul_(gains.text)


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP's reversible byte-to-printable-character table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = [], 0
    for byte in range(256):
        if byte in printable:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(256 + extra))
            extra += 1
    return symbols


def byte_level_tokenizer() -> CLIPTokenizer:
    """A CLIP BPE tokenizer whose vocabulary is the 256 byte symbols (no merges).

    The real CLIP vocabulary is a hub download; a byte-level one tokenizes any prompt offline, which is
    all random-weight profiles need.
    """
    symbols = _byte_symbols()
    tokens = ["<|startoftext|>", "<|endoftext|>"] + symbols + [s + "</w>" for s in symbols]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], model_max_length=77)


def _text_config(widths: dict, vocab_size: int) -> CLIPTextConfig:
    return CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, vocab_size=vocab_size,
                          max_position_embeddings=77, layer_norm_eps=1e-5, **widths)


def build_random_components(profile: str, seed: int = 0, device: str | torch.device = "cpu",
                            dtype: torch.dtype = torch.float32) -> dict:
    """Build every pipeline component with random weights, deterministically from `seed`.

    The same seed gives bit-identical weights in every process, so replicas of the generator agree.
    Modules are created directly on `device` (fast for the full size on a GPU; "meta" to count
    parameters without allocating them) and cast to `dtype` one by one as they are built, so the full
    size never holds all ~5.7 B parameters in fp32 at once (~23 GB) on its way to fp16.
    """
    spec = SPECS[profile]
    tokenizer = byte_level_tokenizer()
    vocab = max(len(tokenizer), 49408 if profile == "full-random" else len(tokenizer))
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**SDXL_UNET, **spec.unet)
        controlnet = ControlNetModel.from_unet(
            unet, conditioning_embedding_out_channels=spec.controlnet_conditioning_channels
        )
        steer_random_model(unet, controlnet, spec.gains)
        ip_adapter = random_ip_adapter_state_dict(unet, spec.image_encoder["projection_dim"], spec.gains.swatch)
        unet, controlnet = unet.to(dtype), controlnet.to(dtype)
        vae = AutoencoderKL(**SDXL_VAE, **spec.vae).to(dtype)
        text_encoder = CLIPTextModel(_text_config(spec.text_encoder, vocab)).to(dtype)
        text_encoder_2 = CLIPTextModelWithProjection(_text_config(spec.text_encoder_2, vocab)).to(dtype)
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**spec.image_encoder)).to(dtype)
    feature_extractor = CLIPImageProcessor(
        size={"shortest_edge": spec.image_size}, crop_size={"height": spec.image_size, "width": spec.image_size}
    )
    # SDXL Turbo's scheduler: Euler ancestral, trailing timesteps (one step starts at t=999).
    scheduler = EulerAncestralDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
        timestep_spacing="trailing", num_train_timesteps=1000,
    )
    return dict(
        unet=unet, controlnet=controlnet, vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
        tokenizer=tokenizer, tokenizer_2=tokenizer, scheduler=scheduler, image_encoder=image_encoder,
        feature_extractor=feature_extractor, ip_adapter_state_dict=ip_adapter,
    )


def random_ip_adapter_state_dict(unet: UNet2DConditionModel, image_embed_dim: int, swatch_gain: float = 1.0) -> dict:
    """An IP-Adapter checkpoint in the original (h94) layout, sized for `unet`.

    Laid out exactly like `ip-adapter_sdxl_vit-h.safetensors` ({"image_proj": ..., "ip_adapter": ...},
    cross-attention processors numbered 1, 3, 5, ...) so it loads through diffusers' `load_ip_adapter`.
    """
    cross_dim = unet.config.cross_attention_dim
    widths = list(unet.config.block_out_channels)
    projection = ImageProjection(
        cross_attention_dim=cross_dim, image_embed_dim=image_embed_dim, num_image_text_embeds=IP_ADAPTER_TOKENS
    ).state_dict()
    # The original checkpoint names the linear layer `proj`; diffusers renames it to `image_embeds` on load.
    image_proj = {key.replace("image_embeds.", "proj."): value for key, value in projection.items()}
    ip_layers: dict[str, torch.Tensor] = {}
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = widths[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(widths))[int(name[len("up_blocks.")])]
        else:
            hidden = widths[int(name[len("down_blocks.")])]
        for proj, gain in (("to_k_ip", 1.0), ("to_v_ip", swatch_gain)):
            weight = torch.nn.Linear(cross_dim, hidden, bias=False).weight.detach()
            ip_layers[f"{key_id}.{proj}.weight"] = weight * gain
        key_id += 2
    return {"image_proj": image_proj, "ip_adapter": ip_layers}
