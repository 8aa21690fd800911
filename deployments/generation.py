"""SDXL Turbo + ControlNet + IP-Adapter generation, as a plain class usable without Ray.

What repeats between requests is computed once: prompt embeddings per prompt text, IP-Adapter image
embeddings per swatch digest (control maps are cached upstream, per cut); the job's plan names the
digest, so a swatch whose embedding is cached is not even read. The
rest runs as one batched call of `TurboDenoiser`, the pipeline's arithmetic without its per-call
Python, under CUDA graphs on a GPU. Each cut draws its noise from its own seeded generator, so a
cut's image does not depend on what it was batched with.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from cachetools import LRUCache, cached
from PIL import Image

from deployments import metrics
from deployments.denoising import TurboBatch, TurboDenoiser
from deployments.digests import swatch_digest
from deployments.graphs import BucketedRunner, cuda_graph_builder
from deployments.model_loading import LoadedPipeline, load_pipeline
from deployments.model_sources import ModelSources
from deployments.rendering import CutImage, GenerationInput
from deployments.storage import ObjectMissing, Storage
from deployments.swatch_size import fit_swatch

logger = logging.getLogger("sastre.generation")

# A swatch's IP-Adapter embedding (1, dim) and whether it had to fall back to a blank image.
SwatchEmbedding = tuple[torch.Tensor, bool]


@dataclass(frozen=True)
class CutRequest:
    """One image to make. `swatch` is the encoded swatch image, or None when it could not be loaded.

    A caller that knows the swatch's digest (the job's plan does) passes `swatch_digest`, so the model
    does not hash it; one that found its embedding cached passes `swatch_embedding` instead of the bytes.
    """

    prompt: str
    control_image: np.ndarray  # HxWx3 uint8, already at the output resolution
    swatch: bytes | None
    seed: int
    swatch_digest: str | None = None
    swatch_embedding: SwatchEmbedding | None = None


def decode_swatch(data: bytes | None) -> Image.Image | None:
    """Decode swatch bytes, or None when they are missing or not an image (the fallback case)."""
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


MISSING_SWATCH = "missing"  # the embedding cache's key for the blank image of a swatch that could not be read


def embedding_key(request: CutRequest) -> str:
    """Image embeddings are keyed by the swatch's digest (`deployments.digests`): given by the caller that
    knows it, worked out here only for a request without one."""
    if request.swatch is None:
        return MISSING_SWATCH
    return request.swatch_digest or swatch_digest(request.swatch)


def use_cpu_threads(device: torch.device | str, threads: int) -> int:
    """On the CPU, run this thread's torch work on `threads` threads (0: every core); the count it uses.

    A GPU's threads only launch kernels, so there the count is left as it was."""
    if torch.device(device).type == "cpu":
        torch.set_num_threads(threads or os.cpu_count() or 1)
    return torch.get_num_threads()


def model_thread(device: torch.device | str, threads: int) -> ThreadPoolExecutor:
    """The one thread a replica runs its model calls on, its torch thread count set on that thread.

    Ray starts a replica with fractional `num_cpus` under OMP_NUM_THREADS=1, and OpenMP keeps that
    count per thread: `torch.set_num_threads` on the replica's main thread left the worker threads
    the model ran on with one core each (a convolution on the 2-core VM: 5.4 s against 3.0 s), and
    draining a backlog left a core idle. One thread is no loss: the model runs one batch at a time."""
    return ThreadPoolExecutor(1, thread_name_prefix="model", initializer=use_cpu_threads, initargs=(device, threads))


@dataclass(frozen=True)
class Acceleration:
    """How the denoiser runs on this device. The defaults follow the device: both levers need a GPU."""

    cuda_graphs: bool = False  # replay one captured graph per batch size instead of launching each kernel
    # NHWC convolutions. Off everywhere: on an H200 under CUDA graphs NCHW was faster both for one cut
    # (43.9 vs 49.1 ms) and at batch 8 (45.8 vs 36.4 images/s), docs/PERFORMANCE.md, 2026-12-04; the
    # bench measures the other layout on every GPU run, so a card where NHWC wins will show it.
    channels_last: bool = False
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8)  # graphs captured; batches pad up to these

    @classmethod
    def for_device(cls, device: torch.device | str, max_batch_size: int = 8) -> Acceleration:
        """Graphs on a GPU, for 1, 2, 4, ... up to the largest batch the server forms."""
        on_gpu = torch.device(device).type == "cuda"
        sizes = sorted({2**i for i in range(max_batch_size.bit_length()) if 2**i < max_batch_size} | {max_batch_size})
        return cls(cuda_graphs=on_gpu, batch_sizes=tuple(sizes))


class SdxlTurboModel:
    """The generator's model: one loaded pipeline, the caches around it, and its fast denoiser."""

    def __init__(self, loaded: LoadedPipeline, num_inference_steps: int = 1, ip_adapter_scale: float = 1.0,
                 acceleration: Acceleration | None = None) -> None:
        if not 1 <= num_inference_steps <= 4:
            raise ValueError("SDXL Turbo is distilled for 1-4 steps")
        self.loaded = loaded
        self.pipeline = loaded.pipeline
        self.num_inference_steps = num_inference_steps
        self.ip_adapter_scale = ip_adapter_scale
        self.device = self.pipeline.device
        self.acceleration = acceleration or Acceleration.for_device(self.device)
        if self.acceleration.channels_last:
            for module in (self.pipeline.unet, self.pipeline.controlnet, self.pipeline.vae):
                module.to(memory_format=torch.channels_last)
        if self.acceleration.cuda_graphs:
            torch.backends.cudnn.benchmark = True  # shapes are fixed per graph: let cuDNN pick per shape
        self.denoiser = TurboDenoiser(self.pipeline, num_inference_steps)
        self.pipeline.set_ip_adapter_scale(ip_adapter_scale)
        self.graphs = (BucketedRunner(self.acceleration.batch_sizes, cuda_graph_builder(self.denoiser))
                       if self.acceleration.cuda_graphs else None)
        # Embeddings are tiny next to the models. The model computes them one batch at a time, under
        # `_lock` (or in warm-up, before the replica takes traffic); the image embeddings' cache also
        # has a lock of its own, for the swatch readers that look up (`cached_swatch_embedding`).
        self.prompt_embeddings = cached(LRUCache(512), key=lambda prompt: prompt, info=True)(self._encode_prompt)
        self.image_embeddings = cached(LRUCache(256), key=lambda digest, swatch: digest, lock=threading.Lock(),
                                       info=True)(self._encode_swatch)
        self.cache_counters = metrics.CacheCounters({"prompt_embedding": self.prompt_embeddings,
                                                     "swatch_embedding": self.image_embeddings})
        # One batch at a time: the IP-Adapter scale is pipeline-wide state, graphs own their buffers,
        # and the fast tokenizers change their truncation settings per call.
        self._lock = threading.Lock()

    @classmethod
    def from_profile(cls, profile: str, sources: ModelSources = ModelSources(), device: str | None = None,
                     num_inference_steps: int = 1) -> SdxlTurboModel:
        return cls(load_pipeline(profile, sources, device), num_inference_steps)

    def describe(self) -> dict:
        return {
            "requested_profile": self.loaded.requested_profile,
            "profile": self.loaded.profile,
            "note": self.loaded.note,
            "device": str(self.device),
            "dtype": str(self.pipeline.unet.dtype),
            "steps": self.num_inference_steps,
            "cuda_graphs": [size for size, _ in self.graphs.built] if self.graphs else [],
        }

    @torch.inference_mode()
    def _encode_prompt(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        embeds, _, pooled, _ = self.pipeline.encode_prompt(
            prompt, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return embeds, pooled

    def cached_swatch_embedding(self, digest: str) -> SwatchEmbedding | None:
        """The embedding of the swatch with this content hash if it is cached (no bytes needed), else None."""
        with self.image_embeddings.cache_lock:
            return self.image_embeddings.cache.get(digest)

    def swatch_embedding(self, request: CutRequest) -> SwatchEmbedding:
        if request.swatch_embedding is not None:
            return request.swatch_embedding
        return self.image_embeddings(embedding_key(request), request.swatch)

    @torch.inference_mode()
    def _encode_swatch(self, digest: str, swatch: bytes | None) -> SwatchEmbedding:
        """The swatch's IP-Adapter embedding and whether it had to fall back to a blank image."""
        image = decode_swatch(swatch)
        fallback = image is None
        if fallback:
            image = Image.new("RGB", (224, 224), (255, 255, 255))
        embeds, _ = self.pipeline.encode_image(image, self.device, 1)
        return embeds, fallback  # embeds: (1, dim)

    @torch.inference_mode()
    def generate(self, requests: list[CutRequest]) -> list[CutImage]:
        """Generate one image per request, batching together cuts that share an IP-Adapter scale."""
        if not requests:
            return []
        with self._lock:
            images = self._generate(requests)
        self.cache_counters.publish()
        return images

    @torch.inference_mode()
    def warm_up(self, height: int, width: int, progress: Callable[[str], None] | None = None) -> None:
        """Run every batch size once (capturing its CUDA graph), so no request pays for it.

        `progress` hears one line per size: a capture that hangs or fails is then easy to place.
        """
        control = np.zeros((height, width, 3), np.uint8)
        embeds, _ = self.image_embeddings(MISSING_SWATCH, None)
        sizes = self.graphs.bucket_sizes if self.graphs else [1]
        with self._lock:
            for size in sizes:
                start = time.perf_counter()
                self._run([(CutRequest("", control, None, seed), embeds) for seed in range(size)],
                          self.ip_adapter_scale)
                if progress is not None:
                    what = "captured CUDA graph" if self.graphs else "ran eagerly"
                    progress(f"warm-up: batch {size} at {width}x{height} {what} in {time.perf_counter() - start:.1f} s")
        self.cache_counters.skip()

    def _generate(self, requests: list[CutRequest]) -> list[CutImage]:
        prepared = [(request, *self.swatch_embedding(request)) for request in requests]
        results: list[CutImage | None] = [None] * len(requests)
        for fallback in (False, True):
            group = [i for i, (_, _, fb) in enumerate(prepared) if fb == fallback]
            if group:
                batch = [(prepared[i][0], prepared[i][1]) for i in group]
                pixels = self._run(batch, 0.0 if fallback else self.ip_adapter_scale)
                for index, image in zip(group, pixels):
                    results[index] = CutImage(image, requests[index].seed, fallback)
        return results  # type: ignore[return-value]

    def _run(self, batch: list[tuple[CutRequest, torch.Tensor]], scale: float) -> list[np.ndarray]:
        inputs = self._inputs(batch).to(self.device)
        if self.graphs is not None and scale == self.ip_adapter_scale:
            pixels = self.graphs(inputs)  # captured at this scale
        else:
            self.pipeline.set_ip_adapter_scale(scale)
            try:
                pixels = self.denoiser(inputs)
            finally:
                self.pipeline.set_ip_adapter_scale(self.ip_adapter_scale)
        return list(pixels.cpu().numpy())

    def _inputs(self, batch: list[tuple[CutRequest, torch.Tensor]]) -> TurboBatch:
        """Stack one batch's tensors; noise is drawn per cut exactly as the pipeline draws it."""
        requests = [request for request, _ in batch]
        height, width = requests[0].control_image.shape[:2]
        for request in requests:
            image = request.control_image
            if image.dtype != np.uint8 or image.shape != (height, width, 3):
                raise ValueError("control images must be uint8 HxWx3, all of one resolution")
        embeds = [self.prompt_embeddings(request.prompt) for request in requests]
        dtype = embeds[0][0].dtype
        factor = self.pipeline.vae_scale_factor
        latent_shape = (1, self.pipeline.unet.config.in_channels, height // factor, width // factor)
        noise, step_noise = [], []
        for request in requests:
            generator = torch.Generator("cpu").manual_seed(request.seed)
            noise.append(torch.randn(latent_shape, generator=generator, dtype=dtype))
            steps = [torch.randn(latent_shape, generator=generator, dtype=dtype)
                     for _ in range(self.num_inference_steps - 1)]
            step_noise.append(torch.stack(steps, dim=1) if steps else torch.empty((1, 0, *latent_shape[1:]), dtype=dtype))
        return TurboBatch(
            noise=torch.cat(noise),
            step_noise=torch.cat(step_noise),
            prompt_embeds=torch.cat([e for e, _ in embeds]),
            pooled_embeds=torch.cat([p for _, p in embeds]),
            time_ids=torch.tensor([[height, width, 0, 0, height, width]], dtype=dtype).repeat(len(requests), 1),
            image_embeds=torch.cat([emb for _, emb in batch])[:, None, :],
            control=torch.from_numpy(np.stack([request.control_image for request in requests])),
        )


class CutGenerator:
    """The generate stage with its inputs as a job names them: the swatch by storage key, not bytes.

    Reading the swatch, and falling back when it is gone, is written here once: the Serve generator
    wraps this class (reading on threads of its own, then batching across requests), and the
    in-process render chain calls `generate`.
    """

    def __init__(self, model: SdxlTurboModel, storage: Storage) -> None:
        self.model = model
        self.storage = storage
        self._lock = threading.Lock()  # the Serve generator reads swatches on several threads
        self.reads = 0  # swatches read from storage: what the embedding cache saves shows here

    def request(self, cut: GenerationInput, control_image: np.ndarray) -> CutRequest:
        """The model's request for one cut, its swatch read from storage only when its embedding is not
        cached under the digest the job's plan gives (`GenerationInput.swatch_digest`). That digest was
        worked out once, when the job was accepted, so it is never hashed here; a cut planned without
        one (its swatch was unreadable then) is read, and digested by the model.

        The request carries the swatch at most `SWATCH_MAX_SIDE` px on its long side, as uploads are
        stored, so the model thread that decodes it never decodes a full-size photo (one stored before
        uploads were downscaled is shrunk here, on the reader's thread).

        Only a missing object falls back to IP-Adapter scale 0 (an undecodable one does too, later, in
        `decode_swatch`). A store that does not answer properly raises `StorageUnavailable`: the cut
        attempt fails and is retried, so a storage hiccup never turns into a degraded image in a
        "completed" job.
        """
        if cut.swatch_digest is not None:
            embedding = self.model.cached_swatch_embedding(cut.swatch_digest)
            if embedding is not None:  # a hit of the embedding cache (a miss is counted where it is computed)
                metrics.cache_looked_up("swatch_embedding", True)
                return CutRequest(cut.prompt, control_image, None, cut.seed, cut.swatch_digest, embedding)
        swatch = None
        if cut.swatch_key is not None:
            with self._lock:
                self.reads += 1
            try:
                swatch = self.storage.get(cut.swatch_key)
            except ObjectMissing as exc:
                logger.warning("swatch %s is gone, IP-Adapter falls back to scale 0: %s", cut.swatch_key, exc)
        if swatch is None:  # no digest either: the blank image's embedding is cached as the missing swatch's
            return CutRequest(cut.prompt, control_image, None, cut.seed)
        # A cut planned without a digest (its swatch was unreadable then) is digested as stored, before fitting.
        digest = cut.swatch_digest or swatch_digest(swatch)
        if self.model.cached_swatch_embedding(digest) is None:
            swatch = fit_swatch(swatch)
        return CutRequest(cut.prompt, control_image, swatch, cut.seed, digest)

    def generate(self, cut: GenerationInput, control_image: np.ndarray) -> CutImage:
        """One cut, alone: the in-process chain's generate stage."""
        [image] = self.model.generate([self.request(cut, control_image)])
        return image
