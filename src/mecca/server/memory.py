"""Keep the server's resident memory close to what its sessions hold (glibc only).

glibc raises its mmap threshold each time a large block is freed (up to 32 MB), after
which image-sized arrays come from the heap, and a freed heap block in the middle of
the heap stays resident: a server that opened and closed a few volumes kept hundreds of
MB it no longer used (``benchmarks/server_load.py``). A fixed 1 MB threshold keeps every
array of that size in its own mapping, returned to the system when freed; ``malloc_trim``
gives back free heap pages after a session is unloaded. Elsewhere both are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
"""mallopt parameter number (glibc malloc.h)."""
MMAP_THRESHOLD_BYTES = 1 << 20


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()


def map_large_arrays() -> bool:
    """Fix glibc's mmap threshold at 1 MB; True when it took effect."""
    if _LIBC is None:
        return False
    done = bool(_LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    log.debug("mmap threshold fixed at %d bytes: %s", MMAP_THRESHOLD_BYTES, done)
    return done


def give_back_free_memory() -> None:
    """Return free heap pages to the system (after sessions were unloaded)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
