"""Comparing rendered images across code paths, on any CPU.

Two paths that compute the same numbers (a model loaded from disk and the same weights in memory, a
batched cut and the same cut alone, the fast path and the diffusers pipeline) may sum floats in a
different order, and CPUs differ in which order they pick: a pixel can land one grey level off.
A wrong weight, scale or input moves whole regions by many levels (see
test_a_perturbed_weight_fails_the_render_comparison), so this bound still catches a real error.
"""

from __future__ import annotations

import numpy as np

MAX_LEVELS = 2  # no pixel more than two grey levels off
MEAN_LEVELS = 0.01  # and almost every pixel exact


def render_difference(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    """Largest and mean per-channel difference of two uint8 images, in grey levels."""
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return int(diff.max()), float(diff.mean())


def assert_same_render(a: np.ndarray, b: np.ndarray) -> None:
    largest, mean = render_difference(a, b)
    assert largest <= MAX_LEVELS and mean < MEAN_LEVELS, f"renders differ: max |Δ| {largest}, mean |Δ| {mean:.4f} levels"
