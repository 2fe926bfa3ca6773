"""Training crops: cases held in memory, and batches of augmented ROI crops from them.

Each episode draws volumes at random (seeded), crops the ground-truth box grown by a
random 1-11 voxel margin (the MECCA paper's ROI), resamples it to the network grid,
normalises it and, when asked, flips and rotates it. Volumes are loaded once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mecca.data.augment import random_flip_rotate
from mecca.data.datasets import Case, open_dataset
from mecca.data.roi import NormaliseConfig, make_crop, random_margin_box

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class HeldCase:
    """One volume and its binary target mask, on the original grid."""

    case_id: str
    image: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True, eq=False)
class CropBatch:
    """B crops on the network grid: float32 images and bool labels, (B, I, J, K)."""

    case_ids: tuple[str, ...]
    images: np.ndarray
    labels: np.ndarray


def load_cases(
    root: Path, split: str | None, target: str | Sequence[int] | None, limit: int | None = None
) -> list[HeldCase]:
    """Read the cases of ``split`` (all cases when the dataset has no such split)."""
    ds = open_dataset(root)
    cases: list[Case] = ds.cases(split) if split in ds.splits else ds.cases()
    if limit is not None:
        cases = cases[:limit]
    held = []
    for case in cases:
        volume, mask = ds.load_case(case, target)
        held.append(HeldCase(case.case_id, np.asarray(volume.array, np.float32), mask))
    log.info("loaded %d cases of %s (%s)", len(held), root, split)
    return held


def sample_crops(
    cases: Sequence[HeldCase],
    batch_size: int,
    rng: np.random.Generator,
    *,
    grid: tuple[int, int, int],
    normalise: NormaliseConfig | None = None,
    augment: bool = True,
) -> CropBatch:
    """Draw ``batch_size`` cases (with replacement) and make one augmented crop of each."""
    picks = rng.integers(0, len(cases), size=batch_size)
    images, labels, ids = [], [], []
    for index in picks:
        case = cases[int(index)]
        box = random_margin_box(case.mask, rng)
        crop = make_crop(case.image, box, grid, label=case.mask, normalise=normalise)
        image, label = crop.image, crop.label
        if augment:
            image, label, _ = random_flip_rotate(image, label, rng)
        images.append(image)
        labels.append(np.asarray(label, bool))
        ids.append(case.case_id)
    return CropBatch(tuple(ids), np.stack(images).astype(np.float32), np.stack(labels))
