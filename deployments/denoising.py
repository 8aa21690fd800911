"""SDXL Turbo's few-step denoising and VAE decode, written out as one function of tensors.

`StableDiffusionXLControlNetPipeline.__call__` re-validates its inputs, rebuilds time ids, control
tensors and the scheduler's state, and draws noise from CPU generators on every call; at one step that
Python is most of the latency (the GPU waits on it). `TurboDenoiser` computes the same numbers (the
unit tests compare it with the pipeline) from tensors prepared beforehand: no host synchronisation, no
random draws, no allocation whose size depends on values. That makes it capturable in a CUDA graph
(`deployments.graphs`), which removes the per-kernel launch cost as well.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionXLControlNetPipeline


@dataclass(frozen=True)
class TurboBatch:
    """Everything one batch of cuts needs, batch-first, so a batch can be sliced, padded and copied."""

    noise: torch.Tensor  # (B, 4, h, w) initial latent noise, before scaling by the scheduler's init sigma
    step_noise: torch.Tensor  # (B, steps - 1, 4, h, w) Euler-ancestral noise for every step but the last
    prompt_embeds: torch.Tensor  # (B, 77, cross-attention width)
    pooled_embeds: torch.Tensor  # (B, pooled width)
    time_ids: torch.Tensor  # (B, 6): original size, crop corner, target size
    image_embeds: torch.Tensor  # (B, 1, image width): the IP-Adapter's swatch embedding
    control: torch.Tensor  # (B, H, W, 3) uint8 control map

    def tensors(self) -> list[torch.Tensor]:
        return [getattr(self, f.name) for f in fields(self)]

    @classmethod
    def of(cls, tensors: list[torch.Tensor]) -> TurboBatch:
        return cls(*tensors)

    @property
    def size(self) -> int:
        return self.noise.shape[0]

    def shape_key(self) -> tuple:
        """What a captured graph depends on besides the batch size: every other dimension."""
        return tuple(tuple(t.shape[1:]) for t in self.tensors())

    def rows(self, start: int, stop: int) -> TurboBatch:
        return self.of([t[start:stop] for t in self.tensors()])

    def padded_to(self, size: int) -> TurboBatch:
        """Repeat the last row up to `size` rows: padding rows are real inputs, so they stay finite."""
        missing = size - self.size
        if missing <= 0:
            return self
        return self.of([torch.cat([t, t[-1:].expand(missing, *t.shape[1:])]) for t in self.tensors()])

    def to(self, device: torch.device) -> TurboBatch:
        return self.of([t.to(device, non_blocking=True) for t in self.tensors()])


class TurboDenoiser:
    """ControlNet + UNet for each step, the Euler-ancestral update, and the VAE decode to uint8 pixels.

    Mirrors the pipeline's arithmetic expression for expression (same dtypes, same order of
    operations, sigmas kept as the scheduler keeps them), so in float32 the result equals the
    pipeline's to the last bit and in float16 within rounding.
    """

    def __init__(self, pipeline: StableDiffusionXLControlNetPipeline, num_inference_steps: int) -> None:
        config = pipeline.scheduler.config
        if not isinstance(pipeline.scheduler, EulerAncestralDiscreteScheduler) or config.prediction_type != "epsilon":
            raise ValueError("the fast path implements SDXL Turbo's scheduler: Euler ancestral, epsilon prediction")
        if getattr(pipeline.vae.config, "latents_mean", None) is not None:
            raise ValueError("VAEs with latents_mean/latents_std are not SDXL VAEs; the fast path does not support them")
        schedule = EulerAncestralDiscreteScheduler.from_config(config)
        schedule.set_timesteps(num_inference_steps, device=pipeline.device)
        self.timesteps = schedule.timesteps
        self.sigmas = schedule.sigmas  # float32 on the CPU, as the scheduler keeps them: used as scalars
        self.init_noise_sigma = schedule.init_noise_sigma
        self.unet = pipeline.unet
        self.controlnet = pipeline.controlnet
        self.vae = pipeline.vae
        if self.vae.dtype == torch.float16 and self.vae.config.force_upcast:
            # This VAE overflows in fp16 (the original SDXL one does). The pipeline casts it to fp32
            # and back on every call; keeping it in fp32 costs ~170 MB once instead.
            self.vae.to(torch.float32)
        self.steps = num_inference_steps

    @torch.inference_mode()
    def __call__(self, batch: TurboBatch) -> torch.Tensor:
        """Return (B, H, W, 3) uint8 pixels on the model's device."""
        latents = batch.noise * self.init_noise_sigma
        control = (batch.control.permute(0, 3, 1, 2).contiguous().to(torch.float32) / 255.0).to(self.controlnet.dtype)
        for i, t in enumerate(self.timesteps):
            sigma = self.sigmas[i]
            model_input = latents / ((sigma**2 + 1) ** 0.5)
            added_cond = {"text_embeds": batch.pooled_embeds, "time_ids": batch.time_ids}
            down_residuals, mid_residual = self.controlnet(
                model_input, t, encoder_hidden_states=batch.prompt_embeds, controlnet_cond=control,
                conditioning_scale=1.0, guess_mode=False, added_cond_kwargs=added_cond, return_dict=False,
            )
            noise_pred = self.unet(
                model_input, t, encoder_hidden_states=batch.prompt_embeds,
                down_block_additional_residuals=down_residuals, mid_block_additional_residual=mid_residual,
                added_cond_kwargs={**added_cond, "image_embeds": [batch.image_embeds]}, return_dict=False,
            )[0]
            latents = self._euler_ancestral_step(i, noise_pred, latents, batch.step_noise)
        return self._decode(latents)

    def _euler_ancestral_step(self, i: int, model_output: torch.Tensor, latents: torch.Tensor,
                              step_noise: torch.Tensor) -> torch.Tensor:
        """`EulerAncestralDiscreteScheduler.step` for epsilon prediction, with its noise passed in."""
        sigma_from, sigma_to = self.sigmas[i], self.sigmas[i + 1]
        sample = latents.to(torch.float32)
        pred_original_sample = sample - sigma_from * model_output
        sigma_up = (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5
        sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
        derivative = (sample - pred_original_sample) / sigma_from
        prev_sample = sample + derivative * (sigma_down - sigma_from)
        if i < self.steps - 1:  # the last step's sigma_up is 0: its noise would add nothing
            prev_sample = prev_sample + step_noise[:, i] * sigma_up
        return prev_sample.to(model_output.dtype)

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        latents = latents.to(self.vae.dtype) / self.vae.config.scaling_factor
        image = self.vae.decode(latents, return_dict=False)[0]
        image = (image * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float()
        return (image * 255).round().clamp(0, 255).to(torch.uint8)
