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


def release_free_memory() -> bool:
    """Return the C heap's free pages to the system; False where the C library cannot."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True
