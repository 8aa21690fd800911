"""A swatch's identity: the SHA-256 of its bytes. URLs and keys are only ways to reach it.

Written once, here at the bottom of the imports, so the queue side (which digests a job's swatch when it
is accepted) and the generator (which keys image embeddings by it) cannot disagree.
"""

from __future__ import annotations

import hashlib


def swatch_digest(data: bytes) -> str:
    """The hex SHA-256 of a swatch's bytes."""
    return hashlib.sha256(data).hexdigest()
