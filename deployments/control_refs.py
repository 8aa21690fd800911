"""Control maps passed between Serve replicas by reference instead of by value.

A control map depends only on (cut template, detector, size) and at 512 px it is 768 KiB. Shipped
with every cut, it would cross Ray's object store once per cut for nothing. Instead the preprocessor
replica puts each map into the object store once and answers every cut with a `ControlRef`, its cache
key and that object's ref (about a hundred bytes); the generator replica keeps the maps it has
resolved, by key, so only its first cut of a template at a size fetches the array.

In-process (tests, benchmarks without Ray) the arrays pass directly; `ControlMaps.resolve` takes either.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import ray
from cachetools import LRUCache

from deployments import metrics
from deployments.preprocessing import ControlMapper, digest_of_template


@dataclass(frozen=True)
class ControlRef:
    """A control map in the object store, named by what it was computed from."""

    key: tuple  # (cut, detector, resolution, template digest): the map is a function of these alone
    ref: ray.ObjectRef


class ControlRefs:
    """The preprocessor's side: one object-store copy of each control map, handed out by reference.

    The refs are kept (LRU, like the maps), which also keeps their objects alive for the generators
    that resolve them later.
    """

    def __init__(self, mapper: ControlMapper, cache_size: int = 64) -> None:
        self.mapper = mapper
        self.refs: LRUCache = LRUCache(cache_size)
        self._lock = threading.Lock()  # called from several worker threads at once

    def control_ref(self, template_png: bytes, cut: str, detector: str, resolution: int,
                    template_digest: str | None = None) -> ControlRef:
        key = (cut, detector, resolution, template_digest or digest_of_template(template_png))
        with self._lock:
            known = self.refs.get(key)
        if known is not None:
            metrics.cache_looked_up("control_map", True)  # a miss here is counted by the mapper's own cache
            return known
        control = self.mapper.control_map(template_png, cut, detector, resolution, key[3])
        made = ControlRef(key, ray.put(control))
        with self._lock:
            return self.refs.setdefault(key, made)  # two threads that missed together hand out one ref


class ControlMaps:
    """The generator's side: the control maps it has resolved, by key, so a cut fetches nothing.

    Used from the replica's event loop only, so it needs no lock.
    """

    def __init__(self, cache_size: int = 64) -> None:
        self.maps: LRUCache = LRUCache(cache_size)

    async def resolve(self, control: ControlRef | np.ndarray) -> np.ndarray:
        if isinstance(control, np.ndarray):
            return control
        cached = self.maps.get(control.key)
        if cached is None:
            cached = self.maps[control.key] = await control.ref
        return cached
