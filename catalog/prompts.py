"""Prompt text for one cut in one fabric and color."""

from __future__ import annotations


def build_prompt(cut_prompt: str, fabric: str, color_english: str) -> str:
    """Cut template text, then the fabric and color, then the photographic style SDXL Turbo likes."""
    return (
        f"{cut_prompt}, made of {color_english} {fabric} fabric, "
        "realistic fabric texture, even soft lighting, plain light grey background, high detail"
    )
