"""Giving freed memory back to the system after each render.

A poll at 100k series allocates tens of MiB for a moment (the provider's reply, the new store and
snapshot, the new bodies) and frees most of it once the new bodies replace the old. glibc's malloc
keeps much of what was freed, the more so as it raises its mmap threshold after big frees, so RSS
climbed poll after poll without any leak (docs/performance.md: 137 MiB after the first 20,000-agent
poll, 172 MiB after ten). `malloc_trim(0)` returns the free pages, in 1 to 2 ms at that size.
Elsewhere (musl, macOS) there is no such call and nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable


def _find_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)  # CDLL: the GIL is released during the call
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_MALLOC_TRIM = _find_malloc_trim()


def freeze_startup_objects() -> None:
    """Take what is alive at start (modules, pydantic and msgspec types, the config) out of the cyclic
    garbage collector's traversals, once, before the exporter is built and serves. Not the exporter's own
    objects: a reload replaces runners, providers and stores, and a frozen cycle among them (a runner and its
    provider refer to each other) would never be freed.

    A full collection traverses every tracked object, and a poll's allocations trigger several. Start-up
    leaves about 71,000 tracked objects that live as long as the process: 38 ms of every full collection,
    during which the GIL is held and the event loop waits (docs/performance.md, Event-loop stalls). Garbage is
    collected first, so only live objects are frozen; a frozen object is still freed when nothing refers to
    it (reference counting), only a cycle of them would not be."""
    gc.collect()
    gc.freeze()


def release_free_memory() -> bool:
    """Return the C heap's free pages to the system; False where the C library cannot."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True
