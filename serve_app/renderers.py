"""How the JobRunner gets one cut rendered: through the Ray Serve graph, or in-process without Ray."""

from __future__ import annotations

import asyncio

import numpy as np
from ray.exceptions import RayTaskError
from ray.serve.handle import DeploymentHandle

from deployments.finishing import Finisher
from deployments.generation import CutImage, CutRequest, SdxlTurboModel, read_swatch
from deployments.preprocessing import ControlMapper
from deployments.stages import bounded
from deployments.storage import Storage
from serve_app.runner import CutTask

STAGES = ("preprocess", "generate", "finish")


def _cause(exc: BaseException) -> BaseException:
    """The exception a replica raised, without Ray's wrapper (whose text is a remote traceback)."""
    while isinstance(exc, RayTaskError) and isinstance(exc.cause, BaseException):
        exc = exc.cause
    return exc


class ServeCutRenderer:
    """Preprocessor → generator → finisher, chained by passing DeploymentResponses straight through.

    The generated pixels go from the generator replica to the finisher replica without a detour
    through the runner; only the small result dict comes back. Each replica bounds its own stage by
    `stage_timeout_s`; the runner bounds the chain by the three stages' sum, which also covers a
    request that waits for a replica (a cold start) or a replica that stopped answering altogether.
    """

    def __init__(self, preprocessor: DeploymentHandle, generator: DeploymentHandle, finisher: DeploymentHandle,
                 detector: str, resolution: int, stage_timeout_s: float) -> None:
        self.preprocessor = preprocessor
        self.generator = generator
        self.finisher = finisher
        self.detector = detector
        self.resolution = resolution
        self.stage_timeout_s = stage_timeout_s

    async def render(self, task: CutTask) -> dict:
        control = self.preprocessor.control_map.remote(task.template_png, task.cut, self.detector, self.resolution)
        image = self.generator.generate.remote(prompt=task.prompt, control_image=control,
                                               swatch_key=task.swatch_key, seed=task.seed)
        finished = self.finisher.finish.remote(image, task.result_key)
        try:
            return await bounded(", ".join(STAGES), len(STAGES) * self.stage_timeout_s, finished)
        except RayTaskError as exc:
            raise _cause(exc) from None
        except BaseException:  # timed out, or the runner gave the job up: stop what is still in flight
            for response in (control, image, finished):
                response.cancel()
            raise


class LocalCutRenderer:
    """The same steps in this process, for tests and tools that run without a Ray cluster."""

    def __init__(self, mapper: ControlMapper, model: SdxlTurboModel, finisher: Finisher, storage: Storage,
                 detector: str, resolution: int, *, stage_timeout_s: float) -> None:
        self.mapper, self.model, self.finisher, self.storage = mapper, model, finisher, storage
        self.detector, self.resolution, self.stage_timeout_s = detector, resolution, stage_timeout_s

    def _generate(self, task: CutTask, control: np.ndarray) -> CutImage:
        swatch = read_swatch(self.storage, task.swatch_key)
        [image] = self.model.generate([CutRequest(task.prompt, control, swatch, task.seed)])
        return image

    async def _stage(self, stage: str, fn, *args):
        return await bounded(stage, self.stage_timeout_s, asyncio.to_thread(fn, *args))

    async def render(self, task: CutTask) -> dict:
        control = await self._stage("preprocess", self.mapper.control_map, task.template_png, task.cut,
                                    self.detector, self.resolution)
        image = await self._stage("generate", self._generate, task, control)
        return await self._stage("finish", self.finisher.finish, image, task.result_key)
