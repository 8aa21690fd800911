"""Control maps for ControlNet: a cut's template drawing through a controlnet-aux detector."""

from __future__ import annotations

import hashlib
import io
import threading

import numpy as np
from cachetools import LRUCache, cached
from PIL import Image

from deployments import metrics

DETECTORS = ("canny",)


class ControlMapper:
    """Computes control maps and keeps them: a cut template rarely changes, so the cache hits ~always."""

    def __init__(self, low_threshold: int = 100, high_threshold: int = 200, cache_size: int = 64) -> None:
        from controlnet_aux.canny import CannyDetector  # heavy import, only where maps are made

        self._canny = CannyDetector()
        self.low_threshold = low_threshold
        self.high_threshold = high_threshold
        # The preprocessor replica calls in from several threads at once: the lock guards the cache's
        # bookkeeping, not the detector (two threads missing on one key both compute the same map).
        self.maps = cached(LRUCache(cache_size), key=_map_key, lock=threading.Lock(), info=True)(self._map)
        self.cache_counters = metrics.CacheCounters({"control_map": self.maps})

    def control_map(self, template_png: bytes, cut: str, detector: str = "canny", resolution: int = 512,
                    template_digest: str | None = None) -> np.ndarray:
        """Return the HxWx3 uint8 control map for `cut` at `resolution`, cached per (cut, detector, size).

        `template_digest` is the template's SHA-256 when the caller knows it (the catalog hashes each
        template once per process), so a cache hit costs no hashing; without it, it is computed here.
        """
        if detector not in DETECTORS:
            raise ValueError(f"unknown detector {detector!r}; known: {', '.join(DETECTORS)}")
        control = self.maps(template_png, cut, detector, resolution, template_digest or digest_of_template(template_png))
        self.cache_counters.publish()
        return control

    def _map(self, template_png: bytes, cut: str, detector: str, resolution: int, template_digest: str) -> np.ndarray:
        template = Image.open(io.BytesIO(template_png)).convert("RGB")
        template = template.resize((resolution, resolution), Image.LANCZOS)
        mapped = self._canny(
            template,
            low_threshold=self.low_threshold,
            high_threshold=self.high_threshold,
            detect_resolution=resolution,
            image_resolution=resolution,
            output_type="np",
        )
        result = np.ascontiguousarray(mapped, dtype=np.uint8)
        result.setflags(write=False)  # shared by every caller that hits the cache
        return result


def digest_of_template(template_png: bytes) -> str:
    """A template's SHA-256, as `CutSpec.template_digest` computes it."""
    return hashlib.sha256(template_png).hexdigest()


def _map_key(template_png: bytes, cut: str, detector: str, resolution: int, template_digest: str) -> tuple:
    """A template's digest stands in for its bytes, so the cache does not keep every PNG it saw."""
    return (cut, detector, resolution, template_digest)
