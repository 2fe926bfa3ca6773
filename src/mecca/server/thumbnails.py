"""Small PNG previews of proposals, so a user can pick one of K at a glance.

A thumbnail is one slice (third voxel axis) of the ROI box: the image in grey, windowed to
its 1st-99th percentile inside the box, with the proposal's foreground blended in orange.
All K thumbnails of one ``propose`` show the same slice, the one with the most foreground
over all proposals (else the box's middle), so they can be compared side by side. Rows
run along the second voxel axis (flipped, so it points up), columns along the first, as
a radiologist's axial view of a RAS-stored image looks.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from mecca.data.roi import Box
from mecca.errors import InputError

THUMBNAIL_SIZE = 128
"""Longest side of a thumbnail in pixels (nearest-neighbour upscaling by a whole factor)."""
ORANGE = np.array([255, 140, 0], np.float32)
BLEND = 0.45


def thumbnail_slice(prob_boxes: Sequence[np.ndarray], box: Box) -> int:
    """Volume index along the third axis of the slice the thumbnails show."""
    masks = np.stack([np.asarray(p) > 0.5 for p in prob_boxes])  # (K, I, J, Kz)
    per_slice = masks.sum(axis=(0, 1, 2))
    local = int(per_slice.argmax()) if per_slice.max() > 0 else masks.shape[-1] // 2
    return int(box.start[2]) + local


def thumbnail_png(
    image: np.ndarray, box: Box, mask_box: np.ndarray, k: int, size: int = THUMBNAIL_SIZE
) -> bytes:
    """PNG bytes of slice ``k`` (volume index) of the ROI ``box`` with ``mask_box`` blended.

    Raises:
        InputError: ``k`` outside the box.
    """
    k0, k1 = int(box.start[2]), int(box.stop[2])
    if not k0 <= k < k1:
        raise InputError(f"slice {k} lies outside the ROI's slices {k0}..{k1 - 1}")
    region = np.asarray(image[box.slices], np.float32)
    lo, hi = np.percentile(region, [1, 99])
    grey = np.clip((region[:, :, k - k0] - lo) / max(float(hi - lo), 1e-6), 0, 1) * 255
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    fg = np.asarray(mask_box, bool)[:, :, k - k0]
    rgb[fg] = (1 - BLEND) * rgb[fg] + BLEND * ORANGE
    pixels = np.flipud(np.transpose(rgb, (1, 0, 2))).astype(np.uint8)
    factor = max(1, size // max(pixels.shape[:2]))
    picture = Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    scaled = (pixels.shape[1] * factor, pixels.shape[0] * factor)
    picture = picture.resize(scaled, Image.Resampling.NEAREST)
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()
