"""PNG overlays of a segmentation on one slice: what a person checks at a glance.

The slice is the axial (third-axis) slice through the ground truth's centre of mass (or
the mask's, without ground truth). Grey image (1st-99th percentile window), prediction
tinted red, ground-truth boundary green, the step's clicks as yellow squares. Written
with imageio (a scikit-image dependency) atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from scipy import ndimage
from skimage.segmentation import find_boundaries

from mecca.interaction.clicks import Click
from mecca.io import atomic_write


def centre_slice(mask: np.ndarray) -> int:
    """Index along the third axis through the mask's centre of mass (middle if empty)."""
    if not mask.any():
        return mask.shape[2] // 2
    return int(round(ndimage.center_of_mass(mask)[2]))


def overlay_rgb(
    image: np.ndarray,
    pred: np.ndarray,
    gt: np.ndarray | None,
    k: int,
    clicks: Sequence[Click] = (),
    zoom: int = 3,
) -> np.ndarray:
    """uint8 (H, W, 3) overlay of slice ``k``; rows = first axis, columns = second axis."""
    img = image[:, :, k].astype(np.float64)
    lo, hi = np.percentile(image, [1, 99])
    grey = np.clip((img - lo) / max(hi - lo, 1e-9), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    p = pred[:, :, k].astype(bool)
    rgb[p] = 0.55 * rgb[p] + 0.45 * np.array([1.0, 0.1, 0.1])
    if gt is not None:
        rgb[find_boundaries(gt[:, :, k].astype(bool), mode="inner")] = (0.1, 1.0, 0.1)
    for c in clicks:
        i, j, kk = c.position
        if abs(kk - k) <= 1:
            rgb[max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2] = (1.0, 0.9, 0.0)
    out = (rgb * 255).round().astype(np.uint8)
    return np.kron(out, np.ones((zoom, zoom, 1), np.uint8))


def write_png(path: Path, rgb: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 image as PNG, atomically."""
    return atomic_write(Path(path), lambda tmp: iio.imwrite(tmp, rgb, extension=".png"))
