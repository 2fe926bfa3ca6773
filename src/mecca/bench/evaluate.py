"""Scoring mask files against ground-truth files (the ``mecca evaluate`` command)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mecca import metrics
from mecca.errors import InputError
from mecca.io import load, load_label


def binary_mask(label: np.ndarray, values: Sequence[int] | None, *, path: Path) -> np.ndarray:
    """Mask of the voxels whose label is in ``values`` (all non-zero labels when None)."""
    if values is None:
        return label > 0
    present = set(np.unique(label).tolist())
    missing = [v for v in values if v not in present]
    if missing:
        raise InputError(
            f"label value(s) {missing} do not occur",
            path=path,
            hint=f"values present: {sorted(int(v) for v in present)}",
        )
    return np.isin(label, list(values))


def evaluate_files(
    pred_path: Path,
    gt_path: Path,
    *,
    labels: Sequence[int] | None = None,
    pred_labels: Sequence[int] | None = None,
) -> dict[str, float | int | None]:
    """All metrics of ``mecca.metrics.evaluate`` for two files on the same voxel grid.

    The prediction must lie on the ground truth's grid (shape and affine); distances are
    given in voxels and in mm. Infinite distances (one mask empty) are returned as None.
    """
    gt_vol = load(gt_path)
    pred_vol = load_label(pred_path, like=gt_vol)
    gt = binary_mask(np.rint(gt_vol.array).astype(np.int64), labels, path=gt_path)
    pred = binary_mask(np.asarray(pred_vol.array).astype(np.int64), pred_labels, path=pred_path)
    scores = metrics.evaluate(pred, gt, spacing=gt_vol.spacing)
    # the CVPR 2025 challenge's DSC and NSD@2mm (surfels; NSD 0 where DSC <= 0.2)
    scores["dsc_cvpr25"], scores["nsd_cvpr25"] = metrics.dsc_nsd_cvpr25(pred, gt, gt_vol.spacing)
    return {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in scores.items()}
