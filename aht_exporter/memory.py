"""The process's memory: malloc tuned at start (`tune_malloc`), start-up objects out of the collector's
walks (`freeze_startup_objects`), and freed memory given back to the system after each render.

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
import os
from collections.abc import Callable, Mapping
from typing import Any


def _load_libc() -> ctypes.CDLL | None:
    library = ctypes.util.find_library("c")  # runs ldconfig: once
    if library is None:
        return None
    try:
        return ctypes.CDLL(library)  # CDLL: the GIL is released during each call
    except OSError:
        return None


_LIBC = _load_libc()


def _libc_function(name: str, argtypes: list[Any]) -> Callable[..., int] | None:
    try:
        function = getattr(_LIBC, name)
    except AttributeError:  # not this C library's (or no C library found: getattr(None, ...))
        return None
    function.argtypes = argtypes
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


_MALLOC_TRIM = _libc_function("malloc_trim", [ctypes.c_size_t])
_MALLOPT = _libc_function("mallopt", [ctypes.c_int, ctypes.c_int])

# glibc's mallopt() parameters (malloc.h) and what we set, each unless its environment variable is set.
M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8
MMAP_THRESHOLD = 1 << 20
"""Allocations this size or larger are mmap()ed and go back to the system when freed. glibc's default
threshold starts at 128 KiB but rises to the size of each big block freed (up to 32 MiB): after the first
render freed a 12 MiB body, every later body and reply was carved from the heap, which then kept it. A fixed
threshold (setting one turns the rise off) keeps the bodies, replies and big lists out of the heap."""
ARENA_MAX = 2
"""malloc arenas at most. glibc makes up to 8 per core, one per thread that allocates at the same time
(here: the event loop, the poll's and the render's worker threads), and each keeps the memory it freed."""
_TUNING = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_"), (M_ARENA_MAX, ARENA_MAX, "MALLOC_ARENA_MAX"))


def tune_malloc(environ: Mapping[str, str] = os.environ) -> list[str]:
    """Set glibc malloc's mmap threshold and arena count (above), once, before any worker thread starts;
    return what was set. What the user set in the environment (`MALLOC_ARENA_MAX=4`, or any GLIBC_TUNABLES)
    wins. Elsewhere (musl, macOS) nothing is done. Measured with bench/memory.py: docs/performance.md."""
    if _MALLOPT is None or "GLIBC_TUNABLES" in environ:
        return []
    done = []
    for param, value, variable in _TUNING:
        if variable not in environ and _MALLOPT(param, value) == 1:
            done.append(f"{variable}={value}")
    return done


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


LET_GO_AT_ONCE = 2048
"""Items `let_go` frees in one step."""


def let_go(items: list[Any]) -> None:
    """Empty a list, `LET_GO_AT_ONCE` items at a time, so that freeing what only it holds never keeps the GIL
    long. Freeing a list is one C call: the 100,000-agent poll's buckets (each with its dict of values) were
    16 to 33 ms of it, in a worker thread, during which the event loop, and every scrape, waited
    (docs/performance.md, "Freed where they are made"). Between two steps the interpreter may hand the GIL on.
    Only for a list its caller owns: whoever else holds it sees it empty."""
    while items:
        del items[-LET_GO_AT_ONCE:]
