"""The points-only simulated user: foreground points, then background points, no box.

What a person does who opens a scan and clicks without drawing a box (3D Slicer's
MONAI Label module, the page's first clicks): a point inside the object, look, the next
point where the mask misses most, then "not this" points where it spills over. Used by
``benchmarks/points_only.py`` (in-process sessions, its ``run_session``) and
``benchmarks/slicer_clicks.py`` (the same points through Slicer's client), so both
measure one user.

The rule for the next point: the interior-most voxel of the largest missed part of the
object (foreground) or of the largest wrongly added part (background), found with the
CVPR 2025 organisers' function (:func:`mecca.bench.cvpr25.organisers_click`) on that error
alone; a background point when nothing was added wrongly goes to the 3-voxel ring just
outside the object, as a user who marks the surroundings as "not this".
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from mecca.bench.cvpr25 import organisers_click, to_zyx
from mecca.data.roi import Box

FOREGROUND_POINTS = 3
BACKGROUND_POINTS = 3


def next_point(
    pred: np.ndarray, gt: np.ndarray, foreground: bool, within: Box | None = None
) -> tuple[int, int, int] | None:
    """The user's next point (i, j, k) on (I, J, K) masks, or None when a foreground point
    has nothing left to fix (the module docstring gives the rule); ``within``: the box the
    user may click in (a session's given ROI), None: anywhere."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    err = gt & ~pred if foreground else pred & ~gt
    if not foreground and not err.any():
        err = ndimage.binary_dilation(gt, iterations=3) & ~gt
    if within is not None:
        inside = np.zeros(err.shape, bool)
        inside[within.slices] = True
        err &= inside
    if not err.any():
        return None
    found = organisers_click(np.zeros(err.shape[::-1], bool), to_zyx(err))
    assert found is not None  # err is not empty
    z, y, x = found[0]
    return int(x), int(y), int(z)


def is_foreground_turn(n: int) -> bool:
    """Whether the user's point number ``n`` (0-based) is a foreground one."""
    return n < FOREGROUND_POINTS
