"""The server's allocator settings: freed image-sized arrays go back to the system."""

import sys

import numpy as np
import pytest

from mecca.server import memory

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc")


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        line = next(x for x in status if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


@linux
def test_a_freed_image_array_leaves_the_process():
    assert memory.map_large_arrays()
    memory.give_back_free_memory()  # free heap chunks of earlier tests would be reused resident
    before = _rss_mb()
    arrays = [np.ones(9_000_000 // 4, np.float32) for _ in range(20)]  # 20 x 9 MB
    assert _rss_mb() - before > 150
    del arrays
    memory.give_back_free_memory()
    assert _rss_mb() - before < 30
