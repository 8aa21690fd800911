"""Turning generated pixels into a delivered image: watermark, JPEG, upload, URL."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from deployments.rendering import CutImage, CutResult
from deployments.storage import Storage
from deployments.watermark import apply_watermark


class JpegFinisher:
    """CPU post-processing kept off the GPU replica's critical path."""

    def __init__(self, storage: Storage, watermark_text: str = "SASTRE", jpeg_quality: int = 90) -> None:
        self.storage = storage
        self.watermark_text = watermark_text
        self.jpeg_quality = jpeg_quality

    def encode(self, pixels: np.ndarray) -> bytes:
        """Watermark and JPEG-encode an HxWx3 uint8 image; EXIF-free by construction."""
        marked = apply_watermark(Image.fromarray(pixels, "RGB"), self.watermark_text)
        buffer = io.BytesIO()
        marked.save(buffer, format="JPEG", quality=self.jpeg_quality, optimize=True)
        return buffer.getvalue()

    def finish(self, image: CutImage, key: str) -> CutResult:
        """Store the finished JPEG under `key` (same key on retry, so re-runs overwrite) and describe it."""
        url = self.storage.put(key, self.encode(image.pixels), "image/jpeg")
        return CutResult(url, key, image.seed, image.ip_adapter_fallback)
