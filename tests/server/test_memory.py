"""The server's allocator settings: freed image-sized arrays go back to the system, and a
network's tensors below the mmap threshold are reused from the heap."""

import ctypes
import ctypes.util
import sys

import numpy as np
import pytest

from mecca.server import memory

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc")


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        line = next(x for x in status if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def _mapped_bytes() -> int:
    """glibc's bytes in mmapped chunks now (``mallinfo2().hblkhd``)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("no mallinfo2 (glibc older than 2.33)")

    class Mallinfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in (
                "arena",
                "ordblks",
                "smblks",
                "hblks",
                "hblkhd",
                "usmblks",
                "fsmblks",
                "uordblks",
                "fordblks",
                "keepcost",
            )
        ]

    libc.mallinfo2.restype = Mallinfo2
    return int(libc.mallinfo2().hblkhd)


@linux
@pytest.mark.parametrize("mb", [9, 80])  # a small image (heap, then trimmed), a CT (mapped)
def test_a_freed_image_array_leaves_the_process(mb):
    assert memory.map_large_arrays()
    memory.give_back_free_memory()  # free heap chunks of earlier tests would be reused resident
    before = _rss_mb()
    arrays = [np.ones(mb * 2**20 // 4, np.float32) for _ in range(180 // mb)]
    assert _rss_mb() - before > 150
    del arrays
    memory.give_back_free_memory()
    assert _rss_mb() - before < 30


@linux
def test_a_tensor_sized_array_comes_from_the_heap_and_an_image_sized_one_is_mapped():
    """With a 1 MB threshold (before 2026-12-07) each of a network's tensors was a new
    mapping, zeroed by the kernel on every forward: the generalist's forward took 1.5
    times as long in the server (module docstring)."""
    assert memory.map_large_arrays()
    before = _mapped_bytes()
    tensor = np.ones(38 * 2**20 // 4, np.float32)  # the generalist's largest, about 38 MB
    assert _mapped_bytes() - before < tensor.nbytes  # (another thread's mapping may come)
    before = _mapped_bytes()
    image = np.ones(80 * 2**20 // 4, np.float32)
    assert _mapped_bytes() - before > image.nbytes // 2
    del tensor, image
