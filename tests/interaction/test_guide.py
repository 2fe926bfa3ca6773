import numpy as np
import pytest

from conftest import sphere
from mecca.data.roi import Box, make_crop
from mecca.errors import ConfigError, GeometryError, InputError
from mecca.interaction.guide import (
    SupervoxelCache,
    advice_regions,
    advice_to_original,
    lowest_mean_regions,
    segments_for_step,
    supervoxels,
)

GRID = (40, 40, 24)


def _image(rng: np.random.Generator) -> np.ndarray:
    """z-scored noise with a bright ball: SLIC has an edge to follow."""
    img = sphere(GRID, (20, 20, 12), 8) * 2.0 + rng.normal(0, 0.3, GRID)
    return ((img - img.mean()) / img.std()).astype(np.float32)


def test_low_confidence_blob_is_region_one(rng):
    # a bright blob the method is unsure about: SLIC follows its edge, so it is one
    # supervoxel, and it has the lowest mean confidence
    blob = sphere(GRID, (12, 26, 10), 5)
    image = (blob * 2.0 + rng.normal(0, 0.3, GRID)).astype(np.float32)
    confidence = np.where(blob, 0.1, 0.9) + rng.uniform(-0.05, 0.05, GRID)
    advice = advice_regions(image, confidence, step=1)
    first = advice == 1
    assert (first & blob).sum() / first.sum() > 0.95
    assert (first & blob).sum() / blob.sum() > 0.95
    means = [confidence[advice == r].mean() for r in range(1, advice.max() + 1)]
    assert means == sorted(means)  # 1 = lowest mean confidence


def test_at_most_n_regions_and_shapes(rng):
    image = _image(rng)
    confidence = rng.random(GRID)
    advice = advice_regions(image, confidence, step=2, n_regions=3)
    assert advice.shape == GRID and advice.dtype == np.int32
    assert set(np.unique(advice)) == {0, 1, 2, 3}


def test_few_supervoxels_give_fewer_regions():
    labels = np.array([1, 1, 2, 2, 2]).reshape(5, 1, 1)
    values = np.array([0.5, 0.5, 0.1, 0.2, 0.3]).reshape(5, 1, 1)
    out = lowest_mean_regions(labels, values, 5)
    np.testing.assert_array_equal(out.ravel(), [2, 2, 1, 1, 1])


def test_ties_go_to_lower_label():
    labels = np.array([3, 1, 2]).reshape(3, 1, 1)
    out = lowest_mean_regions(labels, np.zeros((3, 1, 1)), 2)
    np.testing.assert_array_equal(out.ravel(), [0, 1, 2])


def test_deterministic(rng):
    image = _image(rng)
    confidence = rng.random(GRID)
    a = advice_regions(image, confidence, step=1)
    b = advice_regions(image.copy(), confidence.copy(), step=1)
    np.testing.assert_array_equal(a, b)


def test_later_steps_use_fewer_segments(rng):
    counts = [segments_for_step(t) for t in range(1, 7)]
    assert counts[0] == 100 and counts == sorted(counts, reverse=True) and counts[-1] == 20
    image = _image(rng)
    made = [int(supervoxels(image, segments_for_step(t)).max()) for t in (1, 5)]
    assert made[0] > made[1]


def test_bad_inputs():
    with pytest.raises(GeometryError, match="confidence shape"):
        advice_regions(np.zeros(GRID), np.zeros((4, 4, 4)), step=1)
    with pytest.raises(ConfigError, match="count from 1"):
        advice_regions(np.zeros(GRID), np.zeros(GRID), step=0)


def test_advice_to_original_maps_nearest_inside_box(rng):
    source = (50, 60, 20)
    box = Box((5, 10, 2), (25, 30, 18))  # 20 x 20 x 16 voxels -> 10 x 40 x 8 grid
    crop = make_crop(rng.random(source), box, grid=(10, 40, 8))
    advice = np.zeros(crop.grid, np.int32)
    advice[2:4, 10:20, 3:5] = 1
    full = advice_to_original(crop, advice)
    assert full.shape == source and full.dtype == np.int32
    assert not full[:5].any() and not full[25:].any()  # 0 outside the box
    # grid voxel g along an axis of scale s covers original voxels [g*s, (g+1)*s)
    expected = np.zeros(source, np.int32)
    expected[5 + 4 : 5 + 8, 10 + 5 : 10 + 10, 2 + 6 : 2 + 10] = 1
    np.testing.assert_array_equal(full, expected)


def test_advice_to_original_identity_grid(rng):
    box = Box((0, 0, 0), GRID)
    crop = make_crop(rng.random(GRID), box, grid=GRID)
    advice = rng.integers(0, 6, GRID).astype(np.int32)
    np.testing.assert_array_equal(advice_to_original(crop, advice), advice)


def test_supervoxel_cache_computes_once_prefetches_and_matches_slic(rng):
    image = _image(rng)
    cache = SupervoxelCache(image)
    cache.prefetch(50)
    cache.prefetch(50)  # a second request for the same count starts nothing new
    labels = cache.get(50)
    np.testing.assert_array_equal(labels, supervoxels(image, 50))
    assert cache.get(50) is labels and cache.computed() == [50]
    confidence = rng.random(GRID)
    np.testing.assert_array_equal(
        advice_regions(image, confidence, step=2, cache=cache),
        advice_regions(image, confidence, step=2),
    )
    with pytest.raises(GeometryError, match="cache shape"):
        advice_regions(image[:-1], confidence[:-1], step=2, cache=cache)
    with pytest.raises(ConfigError, match="n_segments"):
        cache.get(0)
    with pytest.raises(InputError, match="finite 3D"):
        SupervoxelCache(np.full(GRID, np.nan))
