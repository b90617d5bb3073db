"""The C library, loaded once through ctypes, for the calls Python does not wrap:
``malloc_trim`` (memory.py) and ``inotify`` (the upload store's usage watch)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def libc() -> ctypes.CDLL | None:
    """The C library, keeping ``errno`` for :func:`ctypes.get_errno`; None where it
    cannot be loaded. Cached: ``find_library`` runs ``ldconfig``, too slow to repeat."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None
