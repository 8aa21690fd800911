"""Thin Ray Serve wrappers around the worker classes. All logic lives in the plain classes.

Defaults here suit a GPU cluster; `serve_config.yaml` (production) and `serve_app/serve_config.local.yaml`
override actor options, replica counts and autoscaling per environment.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
from ray import serve

from deployments.finishing import Finisher
from deployments.generation import Acceleration, CutImage, CutRequest, SdxlTurboModel
from deployments.model_loading import ModelSources, load_pipeline
from deployments.preprocessing import ControlMapper
from deployments.storage import StorageError, open_storage

logger = logging.getLogger("ray.serve")


@serve.deployment(
    ray_actor_options={"num_cpus": 0.5, "num_gpus": 0.1},
    max_ongoing_requests=32,
    autoscaling_config={"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8},
)
class ControlNetPreprocessor:
    def __init__(self) -> None:
        self.mapper = ControlMapper()

    def control_map(self, template_png: bytes, cut: str, detector: str, resolution: int) -> np.ndarray:
        return self.mapper.control_map(template_png, cut, detector, resolution)

    def check_health(self) -> None:
        """Serve calls this periodically; a replica that raises here is replaced."""


@serve.deployment(
    ray_actor_options={"num_cpus": 1, "num_gpus": 1},
    max_ongoing_requests=32,
    autoscaling_config={"min_replicas": 1, "max_replicas": 8, "target_ongoing_requests": 8},
)
class SdxlTurboGenerator:
    def __init__(self, profile: str, storage: dict, sources: dict | None = None, num_inference_steps: int = 1,
                 image_size: int = 512, max_batch_size: int = 8, batch_wait_timeout_s: float = 0.01) -> None:
        loaded = load_pipeline(profile, ModelSources(**(sources or {})))
        acceleration = Acceleration.for_device(loaded.pipeline.device, max_batch_size)
        self.model = SdxlTurboModel(loaded, num_inference_steps, acceleration=acceleration)
        # Capture every batch size's CUDA graph before the replica takes traffic: Serve routes to a
        # replica only once __init__ returns, so no request waits for a capture.
        self.model.warm_up(image_size, image_size, progress=logger.info)
        self.storage = open_storage(storage)
        self.generate_batch.set_max_batch_size(max_batch_size)
        self.generate_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def _swatch(self, key: str | None) -> bytes | None:
        if key is None:
            return None
        try:
            return self.storage.get(key)
        except StorageError as exc:
            logger.warning("swatch %s unreadable, IP-Adapter falls back to scale 0: %s", key, exc)
            return None

    # Two batches in flight: while one holds the model (the GPU), the next gathers its requests and
    # reads its swatches from storage, so the GPU does not wait on the network between batches.
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01, max_concurrent_batches=2)
    async def generate_batch(self, prompt: list[str], control_image: list[np.ndarray], swatch_key: list[str | None],
                             seed: list[int]) -> list[CutImage]:
        return await asyncio.to_thread(self._generate, list(zip(prompt, control_image, swatch_key, seed)))

    def _generate(self, cuts: list[tuple[str, np.ndarray, str | None, int]]) -> list[CutImage]:
        """Read swatches (blocking I/O, outside the model's lock), then generate the batch."""
        return self.model.generate([CutRequest(p, c, self._swatch(k), s) for p, c, k, s in cuts])

    async def generate(self, prompt: str, control_image: np.ndarray, swatch_key: str | None, seed: int) -> CutImage:
        return await self.generate_batch(prompt, control_image, swatch_key, seed)

    def describe(self) -> dict:
        return self.model.describe()

    def check_health(self) -> None:
        """The model is loaded in __init__; nothing can go stale afterwards."""


@serve.deployment(
    name="Finisher",
    ray_actor_options={"num_cpus": 0.5},
    max_ongoing_requests=32,
    autoscaling_config={"min_replicas": 1, "max_replicas": 8, "target_ongoing_requests": 8},
)
class ImageFinisher:
    def __init__(self, storage: dict, watermark_text: str = "SASTRE") -> None:
        self.finisher = Finisher(open_storage(storage), watermark_text)

    async def finish(self, image: CutImage, key: str) -> dict:
        return await asyncio.to_thread(self.finisher.finish, image, key)

    def check_health(self) -> None:
        self.finisher.storage.check()
