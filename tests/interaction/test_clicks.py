"""Clicks and the simulated users (mecca.interaction.clicks, mecca.interaction.users) on
tiny volumes whose right answer is known by construction."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from mecca.data.roi import Box
from mecca.errors import ConfigError, GeometryError, InputError
from mecca.interaction.clicks import (
    Click,
    InteractionKind,
    box_prompt,
    component_centres,
    edge_candidates,
    edge_click_to_fg_bg,
    edge_clicks_to_fg_bg,
    object_surface,
    spread_sample,
)
from mecca.interaction.users import (
    USERS,
    DistanceUser,
    EdgeUser,
    ErrorCentreUser,
    NoUser,
    RandomUser,
    make_user,
)

SHAPE = (32, 32, 32)
CENTRE = (16, 16, 16)


def ball(shape=SHAPE, centre=CENTRE, radius=7.0) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float64)
    d2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
    return d2 <= radius**2


def cube(shape, lo, size) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[lo[0] : lo[0] + size, lo[1] : lo[1] + size, lo[2] : lo[2] + size] = True
    return m


def positions(clicks: list[Click]) -> np.ndarray:
    return np.array([c.position for c in clicks], dtype=np.int64).reshape(-1, 3)


# ---------------------------------------------------------------- Click


def test_click_round_trip_through_json():
    clicks = [Click(kind, (1, 2, 3)) for kind in InteractionKind]
    text = json.dumps([c.to_dict() for c in clicks])
    assert [Click.from_dict(d) for d in json.loads(text)] == clicks
    assert {k.value for k in InteractionKind} == {
        "foreground",
        "background",
        "edge",
        "box",
        "scribble",
    }


def test_click_normalises_numpy_positions():
    click = Click(InteractionKind.EDGE, tuple(np.array([4, 5, 6], dtype=np.int32)))
    assert all(type(p) is int for p in click.position)
    assert json.dumps(click.to_dict()) == '{"kind": "edge", "position": [4, 5, 6]}'


@pytest.mark.parametrize(
    "record",
    [
        {"kind": "edge"},
        {"kind": "lasso", "position": [1, 2, 3]},
        {"kind": "edge", "position": [1.5, 2, 3]},
    ],
)
def test_click_rejects_bad_records(record):
    with pytest.raises(InputError):
        Click.from_dict(record)


# ---------------------------------------------------------------- ErrorCentreUser


def test_error_centre_empty_prediction_clicks_near_sphere_centre(rng):
    gt = ball()
    clicks = ErrorCentreUser()(np.zeros_like(gt), gt, step=1, rng=rng)
    assert len(clicks) == 1
    (click,) = clicks
    assert click.kind is InteractionKind.FOREGROUND
    assert gt[click.position]
    assert np.abs(np.subtract(click.position, CENTRE)).max() <= 3


def test_error_centre_false_positive_cube_gets_background_click(rng):
    gt = ball()
    fp = cube(SHAPE, (1, 1, 1), 6)
    clicks = ErrorCentreUser()(gt | fp, gt, step=2, rng=rng)
    assert [c.kind for c in clicks] == [InteractionKind.BACKGROUND]
    assert fp[clicks[0].position]


def test_error_centre_takes_largest_components_first(rng):
    gt = cube(SHAPE, (2, 2, 2), 7) | cube(SHAPE, (20, 20, 20), 3)  # both missed: FN 343, 27
    fp = cube(SHAPE, (2, 20, 2), 5)  # FP 125
    pred = fp.copy()
    first_two = ErrorCentreUser(n=2, max_offset=0)(pred, gt, step=1, rng=rng)
    assert [c.kind for c in first_two] == [InteractionKind.FOREGROUND, InteractionKind.BACKGROUND]
    assert first_two[0].position == (5, 5, 5)  # exact centre of the 7-cube
    assert first_two[1].position == (4, 22, 4)
    everything = ErrorCentreUser(n=5)(pred, gt, step=1, rng=rng)
    assert len(everything) == 3
    assert cube(SHAPE, (20, 20, 20), 3)[everything[2].position]


def test_error_centre_offset_stays_inside_non_convex_component():
    gt = np.zeros(SHAPE, dtype=bool)
    gt[4:28, 4:7, 4:7] = True  # an L: a long bar ...
    gt[4:7, 4:28, 4:7] = True  # ... and a second bar at right angles
    for seed in range(20):
        clicks = ErrorCentreUser(n=1, max_offset=3)(
            np.zeros_like(gt), gt, step=1, rng=np.random.default_rng(seed)
        )
        assert gt[clicks[0].position]


def test_error_centre_none_when_perfect(rng):
    gt = ball()
    assert ErrorCentreUser()(gt, gt, step=1, rng=rng) == []


# ---------------------------------------------------------------- EdgeUser


def test_edge_user_counts_and_positions(rng):
    gt = ball()
    pred = np.zeros_like(gt)
    user = EdgeUser()
    step1 = user(pred, gt, step=1, rng=rng)
    step2 = user(pred, gt, step=2, rng=rng)
    assert (len(step1), len(step2)) == (25, 5)
    surface = object_surface(gt)
    wrong_near = ndimage.binary_dilation(pred != gt, structure=np.ones((3, 3, 3)))
    for click in step1 + step2:
        assert click.kind is InteractionKind.EDGE
        assert surface[click.position] and wrong_near[click.position]
    assert len(set(c.position for c in step1)) == 25


def test_edge_user_only_where_wrong(rng):
    gt = ball()
    pred = gt.copy()
    pred[: CENTRE[0]] = False  # the lower half of the ball is missed
    clicks = EdgeUser(first=25)(pred, gt, step=1, rng=rng)
    assert len(clicks) == 25
    assert all(c.position[0] <= CENTRE[0] for c in clicks)
    assert EdgeUser()(gt, gt, step=1, rng=rng) == []


def test_edge_user_counts_correct_edge_with_wrong_outer_neighbour(rng):
    gt = ball()
    pred = gt | cube(SHAPE, (22, 15, 15), 2)  # a small false positive just outside the edge
    cand = edge_candidates(pred, gt)
    assert cand.any() and not (cand & (pred != gt)).any()  # edge voxels right, neighbours wrong
    clicks = EdgeUser()(pred, gt, step=1, rng=rng)
    assert 0 < len(clicks) == int(cand.sum()) < 25


def test_edge_candidates_on_the_box_equal_those_of_the_whole_volume(rng):
    """The bounding-box shortcut changes nothing: random blobs and predictions, objects
    touching the array's faces, empty masks."""

    def whole_volume(pred, gt):
        near_wrong = ndimage.binary_dilation(pred != gt, structure=np.ones((3, 3, 3)))
        return object_surface(gt) & near_wrong

    for trial in range(20):
        gt = ndimage.gaussian_filter(rng.random((20, 18, 14)), 2) > 0.52
        if trial % 4 == 0:
            gt[:, :, 0] = gt[:, :, 1]  # reaches the array's face
        pred = ndimage.gaussian_filter(rng.random(gt.shape), 2) > 0.52
        assert np.array_equal(edge_candidates(pred, gt), whole_volume(pred, gt)), trial
    empty = np.zeros((6, 6, 6), dtype=bool)
    assert not edge_candidates(~empty, empty).any()
    assert edge_candidates(empty, ~empty).sum() == int(object_surface(~empty).sum())


def test_edge_user_spreads_over_separate_error_regions(rng):
    gt = ball(radius=10)
    pred = gt.copy()
    pred[:9] = False  # one missed cap at low i ...
    pred[24:] = False  # ... and one at high i, equally large
    clicks = EdgeUser()(pred, gt, step=1, rng=rng)
    i = positions(clicks)[:, 0]
    assert (i < 16).sum() >= 5 and (i > 16).sum() >= 5


def test_spread_sample_without_replacement(rng):
    coords = np.argwhere(np.ones((3, 3, 3), dtype=bool))
    idx = spread_sample(coords, 50, rng)
    assert sorted(idx.tolist()) == list(range(27))
    assert spread_sample(coords[:0], 5, rng).size == 0


# ---------------------------------------------------------------- DistanceUser


def test_distance_user_picks_deepest_voxel(rng):
    gt = cube(SHAPE, (3, 3, 3), 9)
    clicks = DistanceUser()(np.zeros_like(gt), gt, step=1, rng=rng)
    assert clicks == [Click(InteractionKind.FOREGROUND, (7, 7, 7))]


def test_distance_user_background_for_largest_false_positive(rng):
    gt = cube(SHAPE, (3, 3, 3), 4)
    fp = cube(SHAPE, (15, 15, 15), 11)
    clicks = DistanceUser()(fp, gt, step=1, rng=rng)
    assert clicks == [Click(InteractionKind.BACKGROUND, (20, 20, 20))]


# ---------------------------------------------------------------- determinism and advice


@pytest.mark.parametrize("name", sorted(USERS))
def test_users_deterministic_given_seed(name):
    gt = ball()
    pred = np.roll(gt, 3, axis=0)
    user = make_user(name)
    a = user(pred, gt, step=1, rng=np.random.default_rng(7))
    b = user(pred, gt, step=1, rng=np.random.default_rng(7))
    assert a == b


@pytest.mark.parametrize("name", ["edge", "error_centre", "distance", "random"])
def test_advice_restricts_clicks(name, rng):
    gt = ball()
    pred = np.zeros_like(gt)
    advice = np.zeros(SHAPE, dtype=np.int32)
    advice[:, :, :14] = 3
    clicks = make_user(name)(pred, gt, step=1, rng=rng, advice=advice)
    assert clicks and all(advice[c.position] > 0 for c in clicks)
    assert make_user(name)(pred, gt, step=1, rng=rng, advice=np.zeros_like(advice)) == []


def test_advice_without_errors_gives_no_clicks(rng):
    gt = ball()
    advice = np.zeros(SHAPE, dtype=np.int32)
    advice[:3] = 1  # far from the ball: nothing wrong there
    for name in ("edge", "error_centre", "distance"):
        assert make_user(name)(np.zeros_like(gt), gt, step=1, rng=rng, advice=advice) == []


# ---------------------------------------------------------------- random / none / registry


def test_random_user_labels_by_ground_truth(rng):
    gt = ball(radius=12)
    clicks = RandomUser(n=40)(np.zeros_like(gt), gt, step=1, rng=rng)
    assert len(set(c.position for c in clicks)) == 40
    for c in clicks:
        expected = InteractionKind.FOREGROUND if gt[c.position] else InteractionKind.BACKGROUND
        assert c.kind is expected


def test_no_user_never_clicks(rng):
    gt = ball()
    assert NoUser()(np.zeros_like(gt), gt, step=1, rng=rng) == []


def test_make_user_registry():
    assert isinstance(make_user("edge", first=3), EdgeUser)
    assert isinstance(make_user("error_centre"), ErrorCentreUser)
    with pytest.raises(ConfigError):
        make_user("telepath")
    with pytest.raises(ConfigError):
        make_user("edge", colour="red")
    with pytest.raises(ConfigError):
        make_user("random", n=-1)


def test_bad_inputs_raise(rng):
    gt = ball()
    with pytest.raises(GeometryError):
        EdgeUser()(gt[:-1], gt, step=1, rng=rng)
    with pytest.raises(InputError):
        EdgeUser()(gt, gt, step=0, rng=rng)


# ---------------------------------------------------------------- edge -> fg/bg


def test_edge_click_to_fg_bg_nearest_deep_voxels(rng):
    gt = ball(radius=8)
    edge_points = positions(EdgeUser()(np.zeros_like(gt), gt, step=1, rng=rng))
    depth_in = ndimage.distance_transform_edt(gt)
    depth_out = ndimage.distance_transform_edt(~gt)
    for p in edge_points:
        fg, bg = edge_click_to_fg_bg(Click(InteractionKind.EDGE, tuple(p)), gt)
        assert (fg.kind, bg.kind) == (InteractionKind.FOREGROUND, InteractionKind.BACKGROUND)
        assert gt[fg.position] and depth_in[fg.position] >= 2
        assert not gt[bg.position] and depth_out[bg.position] >= 2
        for depth, click in ((depth_in, fg), (depth_out, bg)):
            best = ((np.argwhere(depth >= 2) - p) ** 2).sum(axis=1).min()
            assert ((np.subtract(click.position, p)) ** 2).sum() == best


def test_edge_clicks_to_fg_bg_thin_object_and_passthrough():
    gt = np.zeros((9, 9, 9), dtype=bool)
    gt[4, 4, :] = True  # one voxel thick: no voxel at depth 2 inside
    edge = Click(InteractionKind.EDGE, (4, 4, 4))
    keep = Click(InteractionKind.BACKGROUND, (0, 0, 0))
    out = edge_clicks_to_fg_bg([edge, keep], gt)
    assert out[0] == Click(InteractionKind.FOREGROUND, (4, 4, 4))
    assert out[1].kind is InteractionKind.BACKGROUND and not gt[out[1].position]
    assert out[2] == keep
    with pytest.raises(InputError):
        edge_click_to_fg_bg(edge, np.zeros_like(gt))


def test_component_centres_match_whole_volume_distance_transform():
    blobs = ndimage.gaussian_filter(np.random.default_rng(5).normal(size=(24, 20, 16)), 2) > 0.1
    labels, count = ndimage.label(blobs, structure=np.ones((3, 3, 3)))
    which = list(range(1, count + 1))
    centres = component_centres(labels, which)
    for label, centre in zip(which, centres, strict=True):
        comp = np.pad(labels == label, 1)
        depth = ndimage.distance_transform_edt(comp)[1:-1, 1:-1, 1:-1]
        assert labels[tuple(centre)] == label
        assert depth[tuple(centre)] == depth.max()


def test_box_prompt_grows_the_box_and_gives_its_corners():
    roi, (a, b) = box_prompt(Box((10, 10, 4), (30, 20, 8)), (64, 64, 16))
    assert roi == Box((5, 7, 3), (35, 23, 9))
    assert a == Click(InteractionKind.BOX, (10, 10, 4))
    assert b == Click(InteractionKind.BOX, (29, 19, 7))
    roi, _ = box_prompt(Box((0, 0, 0), (10, 10, 10)), (12, 12, 12))  # clipped to the volume
    assert roi == Box((0, 0, 0), (12, 12, 12))


def test_a_thin_objects_box_prompt_is_widened_to_hold_some_context():
    # a spinal cord's box: 3 x 2 voxels across, 73 slices long
    thin = Box((63, 75, 53), (66, 77, 126))
    roi, (a, b) = box_prompt(thin, (128, 128, 128), min_extent=(16, 16, 8))
    assert roi.shape[:2] == (16, 16) and roi.start[:2] == (57, 68)  # about its centre
    assert (roi.start[2], roi.stop[2]) == (34, 128)  # long enough: the margin alone
    assert (a.position, b.position) == ((63, 75, 53), (65, 76, 125))  # the box is the prompt
    assert box_prompt(thin, (128, 128, 128))[0].shape[:2] == (5, 4)  # off by default
    # at the volume's edge the widening shifts inwards; a short volume is taken whole
    edge, _ = box_prompt(Box((0, 0, 0), (2, 2, 2)), (128, 128, 5), min_extent=(16, 16, 8))
    assert edge == Box((0, 0, 0), (16, 16, 5))
