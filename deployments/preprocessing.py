"""Control maps for ControlNet: a cut's template drawing through a controlnet-aux detector."""

from __future__ import annotations

import hashlib
import io
from collections import OrderedDict

import numpy as np
from PIL import Image

DETECTORS = ("canny",)


class ControlMapper:
    """Computes control maps and keeps them: a cut template rarely changes, so the cache hits ~always."""

    def __init__(self, low_threshold: int = 100, high_threshold: int = 200, cache_size: int = 64) -> None:
        from controlnet_aux.canny import CannyDetector  # heavy import, only where maps are made

        self._canny = CannyDetector()
        self.low_threshold = low_threshold
        self.high_threshold = high_threshold
        self._cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self.cache_size = cache_size
        self.hits = 0
        self.misses = 0

    def control_map(self, template_png: bytes, cut: str, detector: str = "canny", resolution: int = 512) -> np.ndarray:
        """Return the HxWx3 uint8 control map for `cut` at `resolution`, cached per (cut, detector, size)."""
        if detector not in DETECTORS:
            raise ValueError(f"unknown detector {detector!r}; known: {', '.join(DETECTORS)}")
        key = (cut, detector, resolution, hashlib.sha256(template_png).hexdigest())
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            self.hits += 1
            return cached
        self.misses += 1
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
        result.setflags(write=False)
        self._cache[key] = result
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return result
