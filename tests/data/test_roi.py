"""Boxes, normalisation, and the crop -> network grid -> original round trip."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mecca.data.roi import (
    Box,
    Crop,
    NormaliseConfig,
    make_crop,
    normalise,
    paste_mask,
    paste_prob,
    prob_to_box,
    random_margin_box,
    resample_box,
)
from mecca.errors import ConfigError, GeometryError, InputError

log = logging.getLogger(__name__)


def ball(shape: tuple[int, int, int], centre: tuple[float, ...], radii: tuple[float, ...]):
    grid = np.indices(shape, dtype=np.float32)
    d2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True))
    return d2 <= 1.0


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


# --------------------------------------------------------------------------- Box


def test_box_shape_slices_and_from_mask():
    mask = np.zeros((10, 12, 8), bool)
    mask[2:5, 3:9, 1] = True
    box = Box.from_mask(mask)
    assert box == Box((2, 3, 1), (5, 9, 2))
    assert box.shape == (3, 6, 1)
    assert mask[box.slices].all() and mask[box.slices].sum() == mask.sum()


def test_box_from_empty_mask_raises():
    with pytest.raises(InputError, match="empty"):
        Box.from_mask(np.zeros((4, 4, 4), bool))


def test_box_rejects_empty_or_malformed():
    with pytest.raises(InputError):
        Box((0, 0, 0), (1, 0, 1))
    with pytest.raises(InputError):
        Box((0, 0), (1, 1))  # type: ignore[arg-type]


def test_box_grow_and_clip():
    box = Box((2, 3, 4), (5, 6, 7))
    assert box.grow(1) == Box((1, 2, 3), (6, 7, 8))
    assert box.grow((1, 0, 2)) == Box((1, 3, 2), (6, 6, 9))
    assert box.grow((1, 2, 3, 4, 5, 6)) == Box((1, 1, 1), (9, 11, 13))
    assert box.grow(-1) == Box((3, 4, 5), (4, 5, 6))
    assert box.grow(10).clip((8, 9, 10)) == Box((0, 0, 0), (8, 9, 10))
    with pytest.raises(InputError):
        box.grow((1, 2))
    with pytest.raises(InputError, match="outside"):
        Box((20, 0, 0), (25, 3, 3)).clip((10, 10, 10))


def test_box_around_points():
    pts = np.array([[10.2, 5.0, 3.0], [14.0, 7.6, 3.4]])
    box = Box.around_points(pts, 2, (20, 20, 5))
    assert box == Box((8, 3, 1), (17, 11, 5))  # k clipped to the volume
    assert box.contains(pts).all()
    with pytest.raises(InputError):
        Box.around_points([[30.0, 0.0, 0.0]], 2, (20, 20, 5))
    with pytest.raises(InputError):
        Box.around_points(np.zeros((0, 3)), 2, (20, 20, 5))


def test_random_margin_box_within_range_and_seeded():
    mask = np.zeros((60, 60, 60), bool)
    mask[20:30, 25:40, 22:35] = True
    tight = Box.from_mask(mask)
    boxes = [random_margin_box(mask, np.random.default_rng(s)) for s in range(200)]
    before = np.array([np.subtract(tight.start, b.start) for b in boxes])
    after = np.array([np.subtract(b.stop, tight.stop) for b in boxes])
    margins = np.concatenate([before, after], axis=1)
    assert margins.min() == 1 and margins.max() == 11
    assert len({tuple(m) for m in margins}) > 150  # sides drawn independently
    again = random_margin_box(mask, np.random.default_rng(7))
    assert again == boxes[7]
    with pytest.raises(ConfigError):
        random_margin_box(mask, np.random.default_rng(0), low=5, high=2)


def test_random_margin_box_clipped_at_volume_edge():
    mask = np.zeros((20, 20, 20), bool)
    mask[0:3, 15:20, 5:8] = True
    box = random_margin_box(mask, np.random.default_rng(0))
    assert box.start[0] == 0 and box.stop[1] == 20


# --------------------------------------------------------------------------- normalise


def test_zscore_zero_mean_unit_std(rng):
    x = rng.normal(300.0, 40.0, size=(20, 20, 10))
    y = normalise(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert abs(y.mean()) < 1e-5 and abs(y.std() - 1) < 1e-4


def test_constant_input_gives_zeros():
    for cfg in (NormaliseConfig(), NormaliseConfig(mode="ct_window", ct_output="zscore")):
        y = normalise(np.full((5, 5, 5), 123.0), cfg)
        assert np.all(np.isfinite(y)) and np.all(y == 0)


def test_percentile_clipping_damps_outliers(rng):
    x = rng.normal(0.0, 1.0, size=(20, 20, 20))
    x[0, 0, 0] = 1e6
    plain = normalise(x)
    clipped = normalise(x, NormaliseConfig(percentiles=(0.5, 99.5)))
    assert plain.std() > 0.99 and np.median(np.abs(plain)) < 0.05  # outlier swamps the std
    assert 0.5 < np.median(np.abs(clipped)) < 0.8  # ~0.67 for a standard normal
    assert clipped.max() < 4


def test_dataset_mode():
    x = np.array([10.0, 20.0, 30.0]).reshape(1, 1, 3)
    y = normalise(x, NormaliseConfig(mode="dataset", mean=20.0, std=5.0))
    np.testing.assert_allclose(y.ravel(), [-2.0, 0.0, 2.0])
    with pytest.raises(ConfigError):
        NormaliseConfig(mode="dataset", mean=0.0)


def test_ct_window_unit_and_zscore():
    hu = np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0]).reshape(1, 1, 5)
    unit = normalise(hu, NormaliseConfig(mode="ct_window", window_centre=40, window_width=400))
    np.testing.assert_allclose(unit.ravel(), [0.0, 0.0, 0.5, 1.0, 1.0])
    z = normalise(hu, NormaliseConfig(mode="ct_window", ct_output="zscore"))
    assert abs(z.mean()) < 1e-6 and abs(z.std() - 1) < 1e-5
    with pytest.raises(ConfigError):
        NormaliseConfig(mode="ct_window", window_width=0)
    with pytest.raises(ConfigError):
        NormaliseConfig(percentiles=(50, 10))


# --------------------------------------------------------------------------- crops


def test_make_crop_shapes_and_dtypes(rng):
    image = rng.normal(size=(60, 80, 60)).astype(np.float64)
    label = ball(image.shape, (30, 40, 30), (12, 15, 10)).astype(np.uint8)
    box = Box((5, 10, 8), (55, 70, 52))
    crop = make_crop(image, box, label=label)
    assert crop.image.shape == (55, 55, 30) and crop.image.dtype == np.float32
    assert abs(crop.image.mean()) < 1e-5 and abs(crop.image.std() - 1) < 1e-4
    assert crop.label is not None and crop.label.dtype == np.uint8
    assert set(np.unique(crop.label)) == {0, 1}
    assert crop.source_shape == (60, 80, 60) and crop.grid == (55, 55, 30)


def test_make_crop_checks_geometry(rng):
    image = rng.normal(size=(20, 20, 20))
    with pytest.raises(GeometryError):
        make_crop(image, Box((0, 0, 0), (25, 10, 10)))
    with pytest.raises(GeometryError):
        make_crop(image, Box((0, 0, 0), (10, 10, 10)), label=np.zeros((20, 20, 19)))
    crop = make_crop(image, Box((0, 0, 0), (10, 10, 10)))
    with pytest.raises(GeometryError, match="grid"):
        prob_to_box(crop, np.zeros((55, 55, 31)))


@pytest.mark.parametrize(
    "box", [Box((8, 4, 10), (72, 76, 50)), Box((30, 30, 25), (50, 45, 35))],
    ids=["downsample", "upsample"],
)
def test_sphere_round_trip(box):
    """A ball survives crop -> (55, 55, 30) grid -> original, up- or downsampled."""
    shape = (80, 80, 60)
    centre = tuple((a + b - 1) / 2 for a, b in zip(box.start, box.stop, strict=True))
    radii = tuple(0.35 * n for n in box.shape)
    mask = ball(shape, centre, radii)
    crop = make_crop(mask.astype(np.float32), box, label=mask)
    prob = resample_box(mask, box, crop.grid)
    assert dice(paste_mask(crop, prob), mask) > 0.98
    assert crop.label is not None
    assert dice(paste_mask(crop, crop.label.astype(np.float32)), mask) > 0.95
    full = paste_prob(crop, prob)
    assert full.dtype == np.float32 and full.shape == shape
    outside = np.ones(shape, bool)
    outside[box.slices] = False
    assert not full[outside].any()


def test_to_grid_to_original_are_inverses(rng):
    box = Box((7, 3, 11), (90, 40, 31))
    crop = Crop(image=np.zeros((55, 55, 30), np.float32), box=box, source_shape=(100, 50, 40),
                grid=(55, 55, 30))
    pts = rng.uniform(-5, 100, size=(100, 3))
    np.testing.assert_allclose(crop.to_original(crop.to_grid(pts)), pts, atol=1e-9)
    np.testing.assert_allclose(crop.to_grid(crop.to_original(pts)), pts, atol=1e-9)
    # The box's outer faces map onto the grid's outer faces (align_corners=False).
    faces = np.array([box.start, box.stop], float) - 0.5
    np.testing.assert_allclose(crop.to_grid(faces), [[-0.5] * 3, np.array(crop.grid) - 0.5])


def test_to_grid_matches_resampling():
    """A point marked in the original lands where the resampled image peaks."""
    shape = (70, 90, 40)
    box = Box((5, 10, 2), (65, 85, 38))
    x = np.array([[31.0, 47.0, 19.0]])
    blob = np.exp(-((np.indices(shape) - x.reshape(3, 1, 1, 1)) ** 2).sum(0) / (2 * 4.0**2))
    crop = make_crop(blob, box, normalise=NormaliseConfig(mode="dataset", mean=0.0, std=1.0))
    g = crop.to_grid(x)[0]
    ii = np.indices(crop.grid, dtype=np.float64)
    w = crop.image.astype(np.float64) ** 4
    centroid = (ii * w).reshape(3, -1).sum(1) / w.sum()
    np.testing.assert_allclose(centroid, g, atol=0.15)


# --------------------------------------------------------------------------- real data

ROUND_TRIP_SETS = {"hippocampus": (1, 2), "left_atrium": (1,)}


def _round_trip_dices(root: Path, labels: tuple[int, ...], seed: int) -> list[float]:
    cases = json.loads((root / "splits.json").read_text())["test"]
    rng = np.random.default_rng(seed)
    out = []
    for case in cases:
        raw = np.asanyarray(nib.load(root / "labelsTr" / f"{case}.nii.gz").dataobj)
        mask = np.isin(raw, labels)
        box = random_margin_box(mask, rng)
        prob = resample_box(mask, box)  # float probability on the (55, 55, 30) grid
        crop = Crop(image=prob, box=box, source_shape=mask.shape, grid=prob.shape)
        out.append(dice(paste_mask(crop, prob), mask))
    return out


@pytest.mark.shared_data
@pytest.mark.parametrize("name", sorted(ROUND_TRIP_SETS))
def test_real_mask_round_trip(shared_data, name):
    dices = _round_trip_dices(shared_data / name, ROUND_TRIP_SETS[name], seed=20240601)
    msg = f"{name}: {len(dices)} test cases, round-trip Dice min {min(dices):.4f} " \
          f"mean {np.mean(dices):.4f}"
    log.info(msg)
    print(msg)
    assert min(dices) >= 0.97, msg


def test_a_box_grows_by_half_on_the_sides_a_mask_touches_but_not_past_the_volume():
    box = Box((4, 4, 0), (12, 8, 6))  # k starts at the volume's edge
    mask = np.zeros(box.shape, bool)
    assert box.grown_to_hold(mask, (20, 20, 10)) is None
    mask[0, 2, 2] = True  # touches the i start
    assert box.grown_to_hold(mask, (20, 20, 10)) == Box((0, 4, 0), (12, 8, 6))
    mask[3, 1, 0] = mask[3, 1, 5] = True  # k start is the edge; k stop grows by 3
    assert box.grown_to_hold(mask, (20, 20, 10)) == Box((0, 4, 0), (12, 8, 9))
    mask[0, 2, 2] = False
    assert box.grown_to_hold(mask, (20, 20, 6)) is None  # both touched sides are edges


def test_union_is_the_smallest_box_holding_both():
    a, b = Box((2, 5, 1), (6, 9, 4)), Box((4, 0, 3), (10, 7, 5))
    assert a.union(b) == b.union(a) == Box((2, 0, 1), (10, 9, 5))
    assert a.union(a) == a


def test_a_box_widened_to_a_least_extent_stays_centred_and_inside():
    box = Box((10, 10, 10), (12, 40, 11))
    assert box.at_least((6, 6, 6), (64, 64, 64)) == Box((8, 10, 8), (14, 40, 14))
    assert box.at_least((6, 6, 6), (13, 64, 64)) == Box((7, 10, 8), (13, 40, 14))  # shifted in
    assert box.at_least((99, 6, 6), (20, 64, 64)).shape[0] == 20  # at most the volume
    assert box.at_least((1, 1, 1), (64, 64, 64)) == box
