"""The points-only simulated user (mecca.bench.points) on small synthetic masks."""

import numpy as np

from mecca.bench.points import BACKGROUND_POINTS, FOREGROUND_POINTS, is_foreground_turn, next_point


def _ball(shape=(20, 18, 16), centre=(10, 9, 8), radius=5):
    grid = np.indices(shape)
    d2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
    return d2 <= radius**2


def test_the_first_point_is_the_objects_deepest_voxel():
    gt = _ball()
    assert next_point(np.zeros_like(gt), gt, foreground=True) == (10, 9, 8)


def test_a_foreground_point_goes_to_the_largest_missed_part():
    gt = np.zeros((20, 10, 10), bool)
    gt[1:5, 2:8, 2:8] = True  # small part
    gt[9:19, 2:8, 2:8] = True  # large part: the point goes there
    pred = np.zeros_like(gt)
    i, j, k = next_point(pred, gt, foreground=True)
    assert 9 <= i < 19 and gt[i, j, k]
    assert next_point(gt, gt, foreground=True) is None  # nothing missed


def test_a_background_point_goes_to_the_spill_or_else_beside_the_object():
    gt = _ball()
    pred = gt.copy()
    pred[10:20, 14:18, 6:11] = True  # a spill outside the ball
    i, j, k = next_point(pred, gt, foreground=False)
    assert pred[i, j, k] and not gt[i, j, k]
    # no spill: a point in the 3-voxel ring around the object, never on it
    i, j, k = next_point(gt, gt, foreground=False)
    dist = np.sqrt((i - 10) ** 2 + (j - 9) ** 2 + (k - 8) ** 2)
    assert not gt[i, j, k] and 5 < dist <= 5 + 3 * np.sqrt(3)


def test_foreground_points_come_first():
    turns = [is_foreground_turn(n) for n in range(FOREGROUND_POINTS + BACKGROUND_POINTS)]
    assert turns == [True] * FOREGROUND_POINTS + [False] * BACKGROUND_POINTS
