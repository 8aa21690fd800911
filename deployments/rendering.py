"""One cut's render chain, preprocess → generate → finish, written once and reached two ways.

`RenderChain` says what each stage takes (from the cut's task and from the stage before) and returns
the finisher's result; its stages say how a stage is reached:

- `ServeStages`, the worker deployments (the JobRunner's path). Each stage's `DeploymentResponse` goes
  straight into the next call, so the generated pixels travel from the generator replica to the
  finisher replica without a detour through the runner; only the small `CutResult` comes back. The
  control map travels by reference (`deployments/control_refs.py`): it is the same for every cut of
  a template at a size, so the generator fetches it once, not per cut. Each
  replica bounds its own stage by the stage timeout; the chain as a whole is bounded by the three
  stages' sum, which also covers a request that waits for a replica (a cold start) or a replica that
  stopped answering altogether. On a failure or a timeout, whatever is still in flight is cancelled.
  A stage whose queue is full (`max_queued_requests`) refuses the call at once; the chain is then
  resent after a growing pause (`STAGE_BUSY`), which costs the cut no attempt.
- `InProcessStages`, the plain classes in this process, for tests and tools (the latency benchmark's
  baseline) that run without Ray: each stage on a worker thread, bounded by the stage timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from ray.exceptions import RayTaskError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle, DeploymentResponse
from tenacity import (AsyncRetrying, RetryCallState, retry_if_exception, stop_after_delay, wait_exponential,
                      wait_random)

from deployments import metrics
from deployments.stages import bounded

if TYPE_CHECKING:  # the runner's replica reaches the stages through handles and never loads torch
    from deployments.finishing import JpegFinisher
    from deployments.generation import CutGenerator
    from deployments.preprocessing import ControlMapper

STAGES = ("preprocess", "generate", "finish")

# `await send(stage, *args)`: the stage's result, or (on Serve) its response, to pass on to the next stage.
Send = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class GenerationInput:
    """What the generator takes for one cut besides its control map (which travels as an argument of its
    own, so Serve resolves the preprocessor's response before the call)."""

    prompt: str
    seed: int
    swatch_key: str | None
    # The swatch's SHA-256 from the job's plan: the image-embedding cache's key, so the generator reads
    # the bytes only on a miss and never hashes them. None: not known (it reads and digests them).
    swatch_digest: str | None = None


@dataclass(frozen=True)
class CutImage:
    """The generator's output for one cut, on its way to the finisher."""

    pixels: np.ndarray  # HxWx3 uint8
    seed: int
    ip_adapter_fallback: bool  # True when the swatch was unusable and IP-Adapter ran at scale 0


@dataclass(frozen=True)
class CutResult:
    """A finished cut: where its image is stored, and how it was made."""

    url: str
    key: str
    seed: int
    ip_adapter_fallback: bool  # True when the swatch was unusable and IP-Adapter ran at scale 0


@dataclass(frozen=True)
class CutTask:
    """Everything the workers need for one cut: small values and storage keys only."""

    job_id: str
    cut: str
    prompt: str
    template_png: bytes
    swatch_key: str | None
    seed: int
    result_key: str
    template_digest: str | None = None  # the template's SHA-256, when the caller has it (no re-hashing per cut)
    swatch_digest: str | None = None  # see `GenerationInput.swatch_digest`

    @property
    def generation(self) -> GenerationInput:
        return GenerationInput(self.prompt, self.seed, self.swatch_key, self.swatch_digest)


class Stages(Protocol):
    async def run(self, chain: Callable[[Send], Awaitable[Any]]) -> CutResult:
        """Run `chain`, giving it the `send` that reaches these stages; return the finisher's result."""


class RenderChain:
    """Produces, watermarks and stores one cut; the same wiring whichever way the stages are reached."""

    def __init__(self, stages: Stages, detector: str, resolution: int) -> None:
        self.stages = stages
        self.detector = detector
        self.resolution = resolution

    @classmethod
    def on_serve(cls, preprocessor: DeploymentHandle, generator: DeploymentHandle, finisher: DeploymentHandle,
                 detector: str, resolution: int, *, stage_timeout_s: float) -> RenderChain:
        stages = ServeStages(preprocessor.control_ref, generator.generate, finisher.finish, stage_timeout_s)
        return cls(stages, detector, resolution)

    @classmethod
    def in_process(cls, mapper: ControlMapper, generator: CutGenerator, finisher: JpegFinisher, detector: str,
                   resolution: int, *, stage_timeout_s: float) -> RenderChain:
        stages = InProcessStages(mapper.control_map, generator.generate, finisher.finish, stage_timeout_s)
        return cls(stages, detector, resolution)

    async def render(self, task: CutTask) -> CutResult:
        """Produce, watermark and store one cut."""
        return await self.stages.run(partial(self._chain, task))

    async def _chain(self, task: CutTask, send: Send) -> Any:
        control = await send("preprocess", task.template_png, task.cut, self.detector, self.resolution,
                             task.template_digest)
        image = await send("generate", task.generation, control)
        return await send("finish", image, task.result_key)


def stage_busy(error: BaseException) -> bool:
    """A stage refused the call because its queue is full: it may take it a moment later."""
    return isinstance(_cause(error), BackPressureError)


def _count_refusal(state: RetryCallState) -> None:
    metrics.refused("stage_busy")


def busy_stage_retry(stage_timeout_s: float) -> AsyncRetrying:
    """Resend a chain a busy stage refused: pauses from 0.1 s doubling to 5 s, plus up to 0.5 s of jitter
    so the runners' resends spread out, for up to one stage timeout, the wait a queued call could have
    had anyway (a replica loading its weights included). Then the last refusal fails the cut attempt,
    which the runner retries as any failure. Nothing else is retried here."""
    return AsyncRetrying(retry=retry_if_exception(stage_busy),
                         wait=wait_exponential(multiplier=0.1, max=5) + wait_random(0, 0.5),
                         stop=stop_after_delay(stage_timeout_s), after=_count_refusal, reraise=True)


class ServeStages:
    """The stages as deployment methods: `ControlNetPreprocessor.control_ref`, `SdxlTurboGenerator.generate`,
    `JpegFinisher.finish`. Sending a stage starts it and hands back its response at once."""

    def __init__(self, preprocess: DeploymentHandle, generate: DeploymentHandle, finish: DeploymentHandle,
                 stage_timeout_s: float) -> None:
        self.methods = dict(zip(STAGES, (preprocess, generate, finish)))
        self.stage_timeout_s = stage_timeout_s

    async def run(self, chain: Callable[[Send], Awaitable[DeploymentResponse]]) -> CutResult:
        return await busy_stage_retry(self.stage_timeout_s)(self._run_once, chain)

    async def _run_once(self, chain: Callable[[Send], Awaitable[DeploymentResponse]]) -> CutResult:
        sent: list[DeploymentResponse] = []

        async def send(stage: str, *args: Any) -> DeploymentResponse:
            sent.append(self.methods[stage].remote(*args))
            return sent[-1]

        finished = await chain(send)
        try:
            return await bounded(", ".join(STAGES), len(STAGES) * self.stage_timeout_s, finished)
        except RayTaskError as exc:
            raise _cause(exc) from None
        except BaseException:  # timed out, or the runner gave the job up: stop what is still in flight
            for response in sent:
                response.cancel()
            raise


class InProcessStages:
    """The stages as plain callables, each run on a worker thread so the event loop stays free."""

    def __init__(self, preprocess: Callable[..., Any], generate: Callable[..., Any], finish: Callable[..., CutResult],
                 stage_timeout_s: float) -> None:
        self.calls = dict(zip(STAGES, (preprocess, generate, finish)))
        self.stage_timeout_s = stage_timeout_s

    async def run(self, chain: Callable[[Send], Awaitable[CutResult]]) -> CutResult:
        async def send(stage: str, *args: Any) -> Any:
            return await bounded(stage, self.stage_timeout_s, asyncio.to_thread(self.calls[stage], *args))

        return await chain(send)


def _cause(exc: BaseException) -> BaseException:
    """The exception a replica raised, without Ray's wrapper (whose text is a remote traceback)."""
    while isinstance(exc, RayTaskError) and isinstance(exc.cause, BaseException):
        exc = exc.cause
    return exc
