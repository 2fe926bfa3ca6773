"""The simulated scribbling user on tiny label maps whose errors are known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from mecca.errors import ConfigError, GeometryError, InputError
from mecca.interaction.clicks import Click, InteractionKind
from mecca.interaction.scribbles import (
    UNLABELED,
    Stroke,
    error_strokes,
    line_in_mask,
    principal_axis,
    strokes_to_scribbles,
)
from mecca.interaction.users import ScribbleUser, SimulatedUser

SHAPE = (24, 24, 12)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _connected(points: np.ndarray) -> bool:
    """Consecutive points are distinct 26-neighbours."""
    steps = np.abs(np.diff(points, axis=0))
    return bool((steps.max(axis=1) == 1).all())


def _missed_bar() -> tuple[np.ndarray, np.ndarray]:
    """Ground truth: a bar along j (16 long) and a cube; the prediction misses the bar."""
    gt = np.zeros(SHAPE, np.int64)
    gt[10:13, 4:20, 5:8] = 1
    gt[2:5, 2:5, 2:5] = 1
    pred = gt.copy()
    pred[10:13, 4:20, 5:8] = 0
    return pred, gt


def test_stroke_runs_along_the_error_inside_one_slice():
    pred, gt = _missed_bar()
    (stroke,) = error_strokes(pred, gt, rng=_rng())
    assert stroke.label == 1 and stroke.points.dtype == np.int64
    pts = stroke.points
    assert (gt[tuple(pts.T)] == 1).all() and (pred[tuple(pts.T)] == 0).all()
    assert (pts[:, 2] == 6).all() and (pts[:, 0] == 11).all()  # the middle slice and row
    assert pts[:, 1].min() == 4 and pts[:, 1].max() == 19  # end to end along the bar
    assert _connected(pts) and len(np.unique(pts, axis=0)) == len(pts)


def test_largest_component_first_and_background_strokes_for_false_positives():
    gt = np.zeros(SHAPE, np.int64)
    pred = gt.copy()
    pred[2:10, 2:10, 2:10] = 1  # 512 false-positive voxels
    gt[15:18, 15:18, 3:6] = 1  # 27 missed voxels
    strokes = error_strokes(pred, gt, rng=_rng(), n=5)
    assert [s.label for s in strokes] == [0, 1]
    assert (pred[tuple(strokes[0].points.T)] == 1).all()
    assert (gt[tuple(strokes[1].points.T)] == 1).all()
    assert error_strokes(pred, gt, rng=_rng(), n=1)[0].label == 0


def test_multi_class_stroke_carries_the_true_label():
    gt = np.zeros(SHAPE, np.int64)
    gt[4:20, 4:8, 4:8] = 1
    gt[4:20, 14:18, 4:8] = 2
    pred = np.where(gt == 2, 1, gt)  # label 2 predicted as 1 everywhere
    (stroke,) = error_strokes(pred, gt, rng=_rng())
    assert stroke.label == 2 and (gt[tuple(stroke.points.T)] == 2).all()
    assert len(stroke.points) == 16  # along the long axis i
    volume = strokes_to_scribbles([stroke], SHAPE)
    assert volume.dtype == np.int16 and (volume == 2).sum() == 16
    assert (volume[volume != 2] == UNLABELED).all()


def test_no_error_no_stroke_and_max_length_caps():
    pred, gt = _missed_bar()
    assert error_strokes(gt, gt, rng=_rng()) == []
    (short,) = error_strokes(pred, gt, rng=_rng(), max_length=6)
    assert 5 <= len(short.points) <= 7 and _connected(short.points)


def test_anchor_offset_follows_the_rng_and_stays_inside():
    pred, gt = _missed_bar()
    runs = [error_strokes(pred, gt, rng=_rng(s), axis=None, max_offset=2)[0] for s in range(6)]
    again = error_strokes(pred, gt, rng=_rng(0), axis=None, max_offset=2)[0]
    np.testing.assert_array_equal(runs[0].points, again.points)
    assert len({r.points.tobytes() for r in runs}) > 1
    for r in runs:
        assert (gt[tuple(r.points.T)] == 1).all() and (pred[tuple(r.points.T)] == 0).all()


def test_in_3d_the_stroke_follows_a_diagonal_bar():
    gt = np.zeros((20, 20, 20), np.int64)
    idx = np.arange(2, 18)
    for d in (-1, 0, 1):
        gt[idx, idx, np.clip(idx + d, 0, 19)] = 1
    (stroke,) = error_strokes(np.zeros_like(gt), gt, rng=_rng(), axis=None)
    assert len(stroke.points) >= 12 and _connected(stroke.points)
    axis = principal_axis(stroke.points.astype(float))
    assert abs(abs(axis @ np.ones(3)) / np.sqrt(3) - 1) < 0.05


def test_a_rim_error_gets_a_stroke_along_its_medial_path():
    ii, jj = np.indices(SHAPE[:2])
    r = np.hypot(ii - 12, jj - 12)[..., None] * np.ones(SHAPE[2])
    gt, pred = (r <= 8).astype(np.int64), (r <= 5).astype(np.int64)  # under-segmented
    (stroke,) = error_strokes(pred, gt, rng=_rng())
    pts = stroke.points
    assert stroke.label == 1 and len(pts) > 30  # around the rim, not 3 voxels across it
    assert (gt[tuple(pts.T)] == 1).all() and (pred[tuple(pts.T)] == 0).all()
    assert len(np.unique(pts[:, 2])) == 1  # in one slice
    radius = np.hypot(pts[:, 0] - 12, pts[:, 1] - 12)
    assert 5 < radius.min() and radius.max() <= 8  # inside the rim
    (capped,) = error_strokes(pred, gt, rng=_rng(), max_length=10)
    assert 8 <= len(capped.points) <= 11


def test_line_in_mask_is_the_run_around_the_anchor():
    mask = np.zeros((1, 20, 1), bool)
    mask[0, 2:8] = True
    mask[0, 10:15] = True  # another run, not reached
    pts = line_in_mask(mask, np.array([0, 4, 0]), np.array([0.0, 1.0, 0.0]))
    np.testing.assert_array_equal(pts[:, 1], np.arange(2, 8))


def test_user_gives_fg_and_bg_clicks_along_strokes():
    pred, gt = _missed_bar()
    user = ScribbleUser(n=1, max_offset=0)
    assert isinstance(user, SimulatedUser) and user.name == "scribble"
    clicks = user(pred.astype(bool), gt.astype(bool), step=1, rng=_rng())
    assert len(clicks) == 16 and all(c.kind is InteractionKind.FOREGROUND for c in clicks)
    assert all(isinstance(c, Click) and gt[c.position] for c in clicks)
    flipped = user(gt.astype(bool), pred.astype(bool), step=1, rng=_rng())
    assert flipped and all(c.kind is InteractionKind.BACKGROUND for c in flipped)
    advice = np.zeros(SHAPE, np.int32)
    assert user(pred.astype(bool), gt.astype(bool), step=1, rng=_rng(), advice=advice) == []


def test_bad_inputs():
    pred, gt = _missed_bar()
    with pytest.raises(GeometryError):
        error_strokes(pred[:-1], gt, rng=_rng())
    with pytest.raises(ConfigError):
        error_strokes(pred, gt, rng=_rng(), axis=3)
    with pytest.raises(ConfigError):
        ScribbleUser(n=-1)
    with pytest.raises(InputError):
        ScribbleUser()(pred, gt, step=0, rng=_rng())
    assert isinstance(Stroke(1, np.zeros((0, 3), np.int64)), Stroke)
