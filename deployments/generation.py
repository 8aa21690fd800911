"""SDXL Turbo + ControlNet + IP-Adapter generation, as a plain class usable without Ray.

What repeats between requests is computed once: prompt embeddings per prompt text, IP-Adapter image
embeddings per swatch content hash. A batch of cuts from different jobs runs as one pipeline call;
each cut keeps its own seeded generator, so a cut's image does not depend on what it was batched with.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Generic, Hashable, TypeVar

import numpy as np
import torch
from PIL import Image

from deployments.model_loading import LoadedPipeline, ModelSources, load_pipeline

logger = logging.getLogger("sastre.generation")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """A small LRU map (used under the model's lock); embeddings are tiny next to the models."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[K, V] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get_or_compute(self, key: K, compute: Callable[[], V]) -> V:
        if key in self._items:
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key]
        value = compute()
        self.misses += 1
        self._items[key] = value
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return value

    def __contains__(self, key: K) -> bool:
        return key in self._items


@dataclass(frozen=True)
class CutRequest:
    """One image to make. `swatch` is the encoded swatch image, or None when it could not be loaded."""

    prompt: str
    control_image: np.ndarray  # HxWx3 uint8, already at the output resolution
    swatch: bytes | None
    seed: int


@dataclass(frozen=True)
class CutImage:
    pixels: np.ndarray  # HxWx3 uint8
    seed: int
    ip_adapter_fallback: bool  # True when the swatch was unusable and IP-Adapter ran at scale 0


def decode_swatch(data: bytes | None) -> Image.Image | None:
    """Decode swatch bytes, or None when they are missing or not an image (the fallback case)."""
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


class SdxlTurboModel:
    """The generator's model: one loaded pipeline plus the caches around it."""

    def __init__(self, loaded: LoadedPipeline, num_inference_steps: int = 1, ip_adapter_scale: float = 1.0) -> None:
        if not 1 <= num_inference_steps <= 4:
            raise ValueError("SDXL Turbo is distilled for 1-4 steps")
        self.loaded = loaded
        self.pipeline = loaded.pipeline
        self.num_inference_steps = num_inference_steps
        self.ip_adapter_scale = ip_adapter_scale
        self.device = self.pipeline.device
        self.prompt_cache: LruCache[str, tuple[torch.Tensor, torch.Tensor]] = LruCache(512)
        self.image_cache: LruCache[str, torch.Tensor] = LruCache(256)
        # One batch at a time: the IP-Adapter scale is pipeline-wide state, and the fast tokenizers
        # change their truncation settings per call, so concurrent encodes would corrupt each other.
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
        }

    @torch.inference_mode()
    def _prompt_embeddings(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        def compute() -> tuple[torch.Tensor, torch.Tensor]:
            embeds, _, pooled, _ = self.pipeline.encode_prompt(
                prompt, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
            )
            return embeds, pooled

        return self.prompt_cache.get_or_compute(prompt, compute)

    @torch.inference_mode()
    def _image_embeddings(self, swatch: Image.Image, content_hash: str) -> torch.Tensor:
        def compute() -> torch.Tensor:
            embeds, _ = self.pipeline.encode_image(swatch, self.device, 1)
            return embeds  # (1, dim)

        return self.image_cache.get_or_compute(content_hash, compute)

    @torch.inference_mode()
    def generate(self, requests: list[CutRequest]) -> list[CutImage]:
        """Generate one image per request, batching together cuts that share an IP-Adapter scale."""
        if not requests:
            return []
        with self._lock:
            return self._generate(requests)

    def _generate(self, requests: list[CutRequest]) -> list[CutImage]:
        prepared = []
        for request in requests:
            swatch = decode_swatch(request.swatch)
            fallback = swatch is None
            if fallback:
                swatch = Image.new("RGB", (224, 224), (255, 255, 255))
                content_hash = "blank"
            else:
                content_hash = hashlib.sha256(request.swatch).hexdigest()
            prepared.append((request, fallback, self._image_embeddings(swatch, content_hash)))

        results: list[CutImage | None] = [None] * len(requests)
        for fallback in (False, True):
            group = [i for i, (_, fb, _) in enumerate(prepared) if fb == fallback]
            if group:
                pixels = self._run([prepared[i] for i in group], 0.0 if fallback else self.ip_adapter_scale)
                for index, image in zip(group, pixels):
                    results[index] = CutImage(image, requests[index].seed, fallback)
        return results  # type: ignore[return-value]

    def _run(self, batch: list[tuple[CutRequest, bool, torch.Tensor]], scale: float) -> list[np.ndarray]:
        requests = [request for request, _, _ in batch]
        height, width = requests[0].control_image.shape[:2]
        if any(r.control_image.shape[:2] != (height, width) for r in requests):
            raise ValueError("all cuts in a batch must share one resolution")
        embeds = [self._prompt_embeddings(r.prompt) for r in requests]
        self.pipeline.set_ip_adapter_scale(scale)
        output = self.pipeline(
            prompt_embeds=torch.cat([e for e, _ in embeds]),
            pooled_prompt_embeds=torch.cat([p for _, p in embeds]),
            image=[Image.fromarray(r.control_image) for r in requests],
            ip_adapter_image_embeds=[torch.cat([emb for _, _, emb in batch])[:, None, :]],
            num_inference_steps=self.num_inference_steps,
            guidance_scale=0.0,
            height=height,
            width=width,
            generator=[torch.Generator("cpu").manual_seed(r.seed) for r in requests],
            output_type="np",
        )
        return [np.round(image * 255).clip(0, 255).astype(np.uint8) for image in output.images]
