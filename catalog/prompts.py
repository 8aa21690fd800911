"""Prompt text for one cut in one fabric and color."""

from __future__ import annotations


def build_prompt(cut_prompt: str, fabric: str, color_english: str) -> str:
    """Color and fabric first, then the cut, then the photographic style.

    CLIP reads at most 77 tokens, so what differs between requests (color, fabric, cut) goes before
    the style words that may be cut off.
    """
    return f"{color_english} {fabric} {cut_prompt}, realistic fabric texture, soft even lighting, plain light grey background"
