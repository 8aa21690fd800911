"""Thin Ray Serve wrappers around the worker classes. All logic lives in the plain classes.

Defaults here suit a GPU cluster; `serve_config.yaml` (production) and `serve_app/serve_config.local.yaml`
override actor options, replica counts and autoscaling per environment.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
from ray import serve

from deployments import metrics
from deployments.batching import Batches
from deployments.control_refs import ControlMaps, ControlRef, ControlRefs
from deployments.finishing import JpegFinisher
from deployments.model_sources import ModelSources
from deployments.preprocessing import ControlMapper
from deployments.rendering import CutImage, CutResult, GenerationInput
from deployments.replica_health import HEALTH_CHECK, DependencyProbe
from deployments.stages import CallsInFlight, bounded
from deployments.storage import open_storage

if TYPE_CHECKING:
    from deployments.generation import CutRequest

logger = logging.getLogger("ray.serve")

# A replica whose blocking work has outlived its stage timeout fails its check (deployments/stages.py),
# and Serve replaces it (HEALTH_CHECK: deployments/replica_health.py).
#
# The stages' callers are the runners, each holding `runner_concurrency` jobs of a few cuts. Past a
# stage's request slots, 64 cuts may wait per runner (each runner's handle queues its own); the next
# call is refused at once (BackPressureError) and the runner resends it after a pause
# (deployments/rendering.py), so a full queue never grows and no cut waits without a bound.
STAGE_QUEUE = 64


def stage_options(ray_actor_options: dict, max_replicas: int) -> dict:
    """The `serve.deployment` options of a render stage: what the three share (32 request slots, a
    `STAGE_QUEUE`-deep queue, autoscaling at 8 ongoing requests a replica, the replica health check)
    around the stage's own resources and replica ceiling."""
    return {"ray_actor_options": ray_actor_options, "max_ongoing_requests": 32, "max_queued_requests": STAGE_QUEUE,
            "autoscaling_config": {"min_replicas": 1, "max_replicas": max_replicas, "target_ongoing_requests": 8},
            **HEALTH_CHECK}


@serve.deployment(**stage_options({"num_cpus": 0.5, "num_gpus": 0.1}, max_replicas=4))
class ControlNetPreprocessor:
    def __init__(self, stage_timeout_s: float) -> None:
        self.mapper = ControlMapper()
        self.refs = ControlRefs(self.mapper)
        self.stage_timeout_s = stage_timeout_s
        self.calls = CallsInFlight("control map")

    async def control_ref(self, template_png: bytes, cut: str, detector: str, resolution: int,
                          template_digest: str | None = None) -> ControlRef:
        """The cut's control map by reference: the generator resolves it once per template and size."""
        work = asyncio.to_thread(self.calls.run, self.refs.control_ref, template_png, cut, detector, resolution,
                                 template_digest)
        return await metrics.timed("preprocess", bounded("preprocess", self.stage_timeout_s, work))

    def check_health(self) -> None:
        """Fails while a control-map call has been running longer than the stage timeout."""
        self.calls.check(self.stage_timeout_s)


@serve.deployment(**stage_options({"num_cpus": 1, "num_gpus": 1}, max_replicas=8))
class SdxlTurboGenerator:
    def __init__(self, profile: str, storage: dict, sources: ModelSources, num_inference_steps: int, image_size: int,
                 max_batch_size: int, batch_wait_s: float, *, stage_timeout_s: float, cpu_threads: int = 0,
                 fault_stall_file: str | None = None) -> None:
        # torch and diffusers load here, in the generator's replicas alone: building the app and starting
        # the other replicas (the ingress, the runners, the other stages) never pay their import.
        from deployments.generation import (Acceleration, CutGenerator, SdxlTurboModel, model_thread,
                                            use_cpu_threads)
        from deployments.model_loading import load_pipeline

        loaded = load_pipeline(profile, sources)
        use_cpu_threads(loaded.pipeline.device, cpu_threads)  # for the warm-up, on this thread
        self._model_thread = model_thread(loaded.pipeline.device, cpu_threads)  # for every model call after it
        acceleration = Acceleration.for_device(loaded.pipeline.device, max_batch_size)
        self.model = SdxlTurboModel(loaded, num_inference_steps, acceleration=acceleration)
        # Capture every batch size's CUDA graph before the replica takes traffic: Serve routes to a
        # replica only once __init__ returns, so no request waits for a capture.
        self.model.warm_up(image_size, image_size, progress=logger.info)
        self.generator = CutGenerator(self.model, open_storage(storage))
        self.control_maps = ControlMaps()
        # Cuts of all jobs batched together; the largest batch is also the largest captured graph, above.
        self.batches: Batches[CutRequest, CutImage] = Batches(self._generate_batch, max_batch_size, batch_wait_s)
        self.stage_timeout_s = stage_timeout_s
        self.model_calls = CallsInFlight("model")
        # Swatch reads get threads of their own: a storage endpoint that stops answering ties up
        # these until the S3 client's own timeouts, never the threads the model runs on.
        self._reads = ThreadPoolExecutor(16, thread_name_prefix="swatch-read")
        self.fault_stall_file = fault_stall_file

    # Each request reads its own swatch and resolves its control map before it joins a batch (concurrently,
    # so a storage error fails that cut alone). One batch runs at a time, and the next forms from every
    # cut that arrived meanwhile (`deployments/batching.py` says why this is not `@serve.batch`).
    async def _generate_batch(self, requests: list[CutRequest]) -> list[CutImage]:
        metrics.batch_formed(len(requests))
        images = await asyncio.get_running_loop().run_in_executor(self._model_thread, self.model_calls.run,
                                                                  self._generate, requests)
        metrics.ip_adapter_fell_back(sum(image.ip_adapter_fallback for image in images))
        return images

    def _generate(self, requests: list[CutRequest]) -> list[CutImage]:
        while self.fault_stall_file and os.path.exists(self.fault_stall_file):
            time.sleep(0.1)  # fault injection (tests only): a model call that hangs, as a stuck CUDA call does
        return self.model.generate(requests)

    async def generate(self, cut: GenerationInput, control: ControlRef | np.ndarray) -> CutImage:
        """One cut, bounded by the stage timeout. A swatch that is gone falls back to IP-Adapter scale 0
        (`CutGenerator.request`); a store that does not answer fails the call, and the runner retries the cut."""
        work = self._generate_one(cut, control)
        return await metrics.timed("generate", bounded("generate", self.stage_timeout_s, work))

    async def _generate_one(self, cut: GenerationInput, control: ControlRef | np.ndarray) -> CutImage:
        control_image = await self.control_maps.resolve(control)
        loop = asyncio.get_running_loop()
        request = await loop.run_in_executor(self._reads, self.generator.request, cut, control_image)
        return await self.batches(request)

    def describe(self) -> dict:
        return self.model.describe()

    def check_health(self) -> None:
        """Fails while a model call has been running longer than the stage timeout (a stuck GPU)."""
        self.model_calls.check(self.stage_timeout_s)


@serve.deployment(**stage_options({"num_cpus": 0.5}, max_replicas=8))
class Finisher:
    def __init__(self, storage: dict, watermark_text: str = "SASTRE", *, stage_timeout_s: float,
                 unhealthy_after_s: float) -> None:
        self.finisher = JpegFinisher(open_storage(storage), watermark_text)
        self.stage_timeout_s = stage_timeout_s
        self.storage_probe = DependencyProbe("storage", self.finisher.storage.check, grace_s=unhealthy_after_s)

    async def finish(self, image: CutImage, key: str) -> CutResult:
        work = asyncio.to_thread(self.finisher.finish, image, key)
        return await metrics.timed("finish", bounded("finish", self.stage_timeout_s, work))

    async def check_health(self) -> None:
        """The bucket it uploads to answers (within its bound), or has failed for less than the grace."""
        await self.storage_probe.check()
