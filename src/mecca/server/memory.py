"""Keep the server's resident memory close to what its sessions hold (glibc only).

glibc raises its mmap threshold each time a large block is freed (up to 32 MB), after
which image-sized arrays come from the heap, and a freed heap block in the middle of
the heap stays resident: a server that opened and closed a few volumes kept hundreds of
MB it no longer used (``benchmarks/server_load.py``). A fixed 64 MB threshold keeps every
array of that size (a CT volume) in its own mapping, returned to the system when freed;
``malloc_trim`` gives back free heap pages, smaller images' included, after each step
and after a session is unloaded. Elsewhere both are no-ops.

The threshold was 1 MB until 2026-12-07. Then every tensor of a network's forward
(the generalist's are up to about 38 MB: 4 flipped copies, 16 or 32 channels on
48 x 48 x 32) was a fresh mapping whose pages the kernel zeroes on first touch, and the
forward took 103-120 ms in the server against 63-72 ms in a plain process (2 threads,
the same input; 64 MB: 63-70 ms). Below 64 MB the heap reuses freed blocks within a
step. `benchmarks/server_load.py --method generalist`, one session, 30 s: click+step
median 153 ms with 1 MB, 104 ms with 64 MB, 118 ms with 64 MB and the trim after each step
(kept: with 16 sessions at once the 64 MB threshold alone left the server 230 MB larger at
the end, 1619 against 1388 MB; with the trim 1388).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
"""mallopt parameter number (glibc malloc.h)."""
MMAP_THRESHOLD_BYTES = 64 << 20


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
    """Fix glibc's mmap threshold at 64 MB; True when it took effect."""
    if _LIBC is None:
        return False
    done = bool(_LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    log.debug("mmap threshold fixed at %d bytes: %s", MMAP_THRESHOLD_BYTES, done)
    return done


def give_back_free_memory() -> None:
    """Return free heap pages to the system (after sessions were unloaded)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
