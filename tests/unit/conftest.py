"""Fixtures the unit tests share beyond tests/conftest.py's database and servers."""

from __future__ import annotations

import pytest

from deployments.generation import SdxlTurboModel


@pytest.fixture(scope="module")
def model() -> SdxlTurboModel:
    """The tiny-random model on the CPU: every class and wiring of the real pipeline, rendering in well
    under a second. One per module: its prompt and swatch embedding caches fill as tests render, and
    each module starts with them empty."""
    return SdxlTurboModel.from_profile("tiny-random", device="cpu")
