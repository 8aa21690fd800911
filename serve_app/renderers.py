"""How the JobRunner gets one cut rendered: through the Ray Serve graph, or in-process without Ray."""

from __future__ import annotations

import asyncio

from ray.serve.handle import DeploymentHandle

from deployments.finishing import Finisher
from deployments.generation import CutRequest, SdxlTurboModel
from deployments.preprocessing import ControlMapper
from deployments.storage import Storage, StorageError
from serve_app.runner import CutTask


class ServeCutRenderer:
    """Preprocessor → generator → finisher, chained by passing DeploymentResponses straight through.

    The generated pixels go from the generator replica to the finisher replica without a detour
    through the runner; only the small result dict comes back.
    """

    def __init__(self, preprocessor: DeploymentHandle, generator: DeploymentHandle, finisher: DeploymentHandle,
                 detector: str, resolution: int) -> None:
        self.preprocessor = preprocessor
        self.generator = generator
        self.finisher = finisher
        self.detector = detector
        self.resolution = resolution

    async def render(self, task: CutTask) -> dict:
        control = self.preprocessor.control_map.remote(task.template_png, task.cut, self.detector, self.resolution)
        image = self.generator.generate.remote(prompt=task.prompt, control_image=control,
                                               swatch_key=task.swatch_key, seed=task.seed)
        return await self.finisher.finish.remote(image, task.result_key)


class LocalCutRenderer:
    """The same steps in this process, for tests and tools that run without a Ray cluster."""

    def __init__(self, mapper: ControlMapper, model: SdxlTurboModel, finisher: Finisher, storage: Storage,
                 detector: str, resolution: int) -> None:
        self.mapper, self.model, self.finisher, self.storage = mapper, model, finisher, storage
        self.detector, self.resolution = detector, resolution

    def _render(self, task: CutTask) -> dict:
        control = self.mapper.control_map(task.template_png, task.cut, self.detector, self.resolution)
        try:
            swatch = self.storage.get(task.swatch_key) if task.swatch_key else None
        except StorageError:
            swatch = None
        [image] = self.model.generate([CutRequest(task.prompt, control, swatch, task.seed)])
        return self.finisher.finish(image, task.result_key)

    async def render(self, task: CutTask) -> dict:
        return await asyncio.to_thread(self._render, task)
