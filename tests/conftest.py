"""Shared fixtures: the real-data folder beside the checkout, and small synthetic volumes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(
    os.environ.get(
        "MECCA_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    )
).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ../shared/data folder; tests that need it skip with a message when absent."""
    if not (SHARED_DATA / "CATALOGUE.md").is_file():
        pytest.skip(f"real volumes not found at {SHARED_DATA} (set MECCA_SHARED_DATA to run these)")
    return SHARED_DATA


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a module of tiny nets (the CPU is shared); used through
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five MR phantoms in MSD layout: 3 train, 1 val, 1 test (4 would leave val empty)."""
    from mecca.data.phantoms import write_phantom_dataset

    root = tmp_path_factory.mktemp("data") / "ph"
    return write_phantom_dataset(root, count=5, seed=0, shape=(32, 32, 20))


def sphere(
    shape: tuple[int, int, int], centre: tuple[float, float, float], radius: float
) -> np.ndarray:
    """Boolean ball, the canonical known-answer fixture."""
    grid = np.indices(shape, dtype=np.float32)
    d2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
    return d2 <= radius**2
