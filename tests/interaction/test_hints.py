"""Hint maps against known answers and an independent brute-force Dijkstra."""

from __future__ import annotations

import heapq
import itertools

import numpy as np
import pytest
from scipy import ndimage

from mecca.errors import ConfigError, GeometryError, InputError
from mecca.interaction.clicks import Click, InteractionKind
from mecca.interaction.hints import (
    GeodesicGraph,
    HintEncoder,
    euclidean_map,
    gaussian_map,
    geodesic_map,
    geodesic_scale,
    grid_diagonal,
)

FG, BG, EDGE = InteractionKind.FOREGROUND, InteractionKind.BACKGROUND, InteractionKind.EDGE


def brute_force_geodesic(image, seeds, spacing, lamb) -> np.ndarray:
    """Textbook heapq Dijkstra on the 26-neighbour graph, one voxel at a time."""
    dist = np.full(image.shape, np.inf)
    heap = [(0.0, tuple(s)) for s in seeds]
    offsets = [o for o in itertools.product((-1, 0, 1), repeat=3) if o != (0, 0, 0)]
    while heap:
        d, p = heapq.heappop(heap)
        if d >= dist[p]:
            continue
        dist[p] = d
        for o in offsets:
            q = tuple(a + b for a, b in zip(p, o, strict=True))
            if all(0 <= q[a] < image.shape[a] for a in range(3)):
                step2 = sum((oa * sa) ** 2 for oa, sa in zip(o, spacing, strict=True))
                cost = np.sqrt((1 - lamb) * step2 + lamb * (image[q] - image[p]) ** 2)
                if d + cost < dist[q]:
                    heapq.heappush(heap, (d + cost, q))
    return dist


# ---------------------------------------------------------------- Gaussian


def test_gaussian_peak_and_decay():
    g = gaussian_map((21, 21, 21), [(10, 10, 10)])
    assert g.dtype == np.float32 and g.shape == (21, 21, 21)
    assert g[10, 10, 10] == 1.0 and g.max() == 1.0
    profile = g[10:, 10, 10]
    assert np.all(np.diff(profile) <= 0)
    assert g[12, 10, 10] == pytest.approx(np.exp(-0.5))  # sigma = 8 / 4 = 2 voxels
    assert g[17, 10, 10] == 0.0  # beyond 3 sigma


def test_gaussian_is_max_not_sum_and_handles_edges():
    g = gaussian_map((12, 12, 12), [(0, 0, 0), (1, 0, 0), (11, 11, 11)])
    assert g.max() == 1.0 and g[0, 0, 0] == 1.0 and g[1, 0, 0] == 1.0 and g[11, 11, 11] == 1.0
    assert not gaussian_map((5, 5, 5), []).any()


def test_gaussian_spacing_in_mm():
    g = gaussian_map((21, 21, 21), [(10, 10, 10)], kernel_size=8.0, spacing=(1.0, 1.0, 2.0))
    assert g[10, 10, 11] == pytest.approx(g[12, 10, 10])  # 2 mm either way


def test_points_outside_grid_rejected():
    with pytest.raises(GeometryError):
        gaussian_map((5, 5, 5), [(5, 0, 0)])
    with pytest.raises(InputError):
        euclidean_map((5, 5, 5), [(1, 2)])


# ---------------------------------------------------------------- Euclidean


def test_euclidean_equals_edt():
    pts = [(1, 2, 3), (7, 8, 2)]
    free = np.ones((9, 10, 6), dtype=bool)
    free[tuple(np.array(pts).T)] = False
    spacing = (0.8, 1.0, 2.5)
    expected = ndimage.distance_transform_edt(free, sampling=spacing)
    np.testing.assert_allclose(euclidean_map(free.shape, pts, spacing=spacing), expected, rtol=1e-6)
    scaled = euclidean_map(free.shape, pts, spacing=spacing, max_distance=3.0)
    np.testing.assert_allclose(scaled, np.minimum(expected / 3.0, 1.0), rtol=1e-6)


def test_euclidean_no_points_is_far():
    assert np.isinf(euclidean_map((4, 4, 4), [])).all()
    assert (euclidean_map((4, 4, 4), [], max_distance=5.0) == 1.0).all()


# ---------------------------------------------------------------- geodesic


@pytest.mark.parametrize(
    ("lamb", "spacing"), [(1.0, (1.0, 1.0, 1.0)), (0.5, (1.0, 1.0, 2.5)), (0.0, (0.7, 1.0, 1.3))]
)
def test_geodesic_matches_brute_force_dijkstra(lamb, spacing):
    image = np.random.default_rng(3).normal(size=(8, 9, 7))
    seeds = [(0, 0, 0), (5, 6, 3)]
    got = geodesic_map(image, seeds, spacing=spacing, lamb=lamb)
    expected = brute_force_geodesic(image, seeds, spacing, lamb)
    assert got.dtype == np.float32
    assert all(got[s] == 0 for s in seeds)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_geodesic_constant_image_pure_intensity_is_zero():
    d = geodesic_map(np.full((10, 11, 6), 3.0), [(2, 3, 4)], lamb=1.0)
    assert np.abs(d).max() < 1e-6


def test_geodesic_without_intensity_is_26_chamfer():
    d = geodesic_map(np.random.default_rng(0).normal(size=(9, 8, 7)), [(0, 0, 0)], lamb=0.0)
    steps = np.sort(np.indices(d.shape).reshape(3, -1), axis=0)  # ascending per voxel
    small, mid, big = steps
    chamfer = np.sqrt(3) * small + np.sqrt(2) * (mid - small) + (big - mid)
    np.testing.assert_allclose(d.ravel(), chamfer, rtol=1e-6)


def test_geodesic_intensity_wall_raises_distance_behind_it():
    image = np.zeros((20, 12, 12))
    image[10] = 5.0  # a bright plane across the whole volume
    d = geodesic_map(image, [(2, 6, 6)], lamb=1.0)
    assert d[8, 6, 6] < 1e-6  # same side, any distance: free
    assert d[15, 6, 6] == pytest.approx(10.0)  # up 5 and down 5 to cross the wall
    mixed = geodesic_map(image, [(2, 6, 6)], lamb=0.5)
    assert mixed[15, 6, 6] > mixed[8, 6, 6] + 5.0


def test_geodesic_no_points_and_graph_reuse():
    image = np.random.default_rng(1).normal(size=(6, 6, 6))
    graph = GeodesicGraph(image, lamb=0.7)
    assert np.isinf(graph.distance([])).all()
    a, b = [(0, 0, 0)], [(5, 5, 5)]
    both = graph.distance(a + b)
    np.testing.assert_array_equal(both, np.minimum(graph.distance(a), graph.distance(b)))
    assert (geodesic_map(image, [], max_distance=2.0) == 1.0).all()


def test_geodesic_rejects_bad_input():
    with pytest.raises(InputError):
        GeodesicGraph(np.full((3, 3, 3), np.nan))
    with pytest.raises(ConfigError):
        GeodesicGraph(np.zeros((3, 3, 3)), lamb=1.5)


def test_geodesic_scale_is_positive_and_click_free():
    assert geodesic_scale(np.zeros((4, 4, 4))) == 1.0
    assert geodesic_scale(np.zeros((4, 4, 4)), lamb=0.0) == pytest.approx(grid_diagonal((4, 4, 4)))
    assert geodesic_scale(np.random.default_rng(0).normal(size=(5, 5, 5))) > 1.0


# ---------------------------------------------------------------- HintEncoder


def test_encoder_channels_and_empty_values():
    image = np.zeros((10, 10, 6), dtype=np.float32)
    mecca = HintEncoder()
    itermrl = HintEncoder("geodesic", "fg_bg")
    assert mecca.n_channels == 1 and itermrl.n_channels == 2
    assert itermrl.kinds == (FG, BG)
    assert not mecca.encode(image, []).any()
    assert (itermrl.encode(image, []) == 1.0).all()
    maps = mecca.encode(image, [Click(EDGE, (5, 5, 3))])
    assert maps.shape == (1, 10, 10, 6) and maps.dtype == np.float32 and maps[0, 5, 5, 3] == 1.0


def test_encoder_puts_kinds_on_their_channels():
    image = np.random.default_rng(0).normal(size=(10, 10, 6))
    maps = HintEncoder("euclidean", "fg_bg").encode(image, [Click(FG, (1, 1, 1))])
    assert maps[0, 1, 1, 1] == 0.0 and (maps[1] == 1.0).all()
    assert 0.0 < maps[0].max() <= 1.0


def test_encoder_rejects_kinds_it_cannot_encode():
    image = np.zeros((5, 5, 5))
    with pytest.raises(InputError):
        HintEncoder("geodesic", "fg_bg").encode(image, [Click(EDGE, (1, 1, 1))])
    with pytest.raises(InputError):
        HintEncoder().encode(image, [Click(FG, (1, 1, 1))])
    with pytest.raises(GeometryError):
        HintEncoder().update(np.zeros((1, 4, 4, 4)), image, [])


@pytest.mark.parametrize(
    "bad", [{"encoding": "voronoi"}, {"channels": "rgb"}, {"lamb": 2.0}, {"distance_scale": 0.0}]
)
def test_encoder_rejects_bad_config(bad):
    with pytest.raises(ConfigError):
        HintEncoder(**bad)


@pytest.mark.parametrize(
    "encoder",
    [
        HintEncoder("gaussian", "edge"),
        HintEncoder("gaussian", "fg_bg"),
        HintEncoder("euclidean", "fg_bg"),
        HintEncoder("geodesic", "fg_bg", lamb=1.0),
        HintEncoder("geodesic", "fg_bg", lamb=0.5, distance_scale=4.0),
    ],
)
def test_incremental_update_equals_from_scratch(encoder, rng):
    image = rng.normal(size=(12, 11, 7)).astype(np.float32)
    kinds = encoder.kinds
    steps = [
        [Click(kinds[i % len(kinds)], tuple(rng.integers(0, (12, 11, 7)))) for i in range(n)]
        for n in (3, 0, 2, 4)
    ]
    maps = encoder.empty(image)
    history: list[Click] = []
    for new in steps:
        maps = encoder.update(maps, image, new, spacing=(1.0, 1.0, 2.0))
        history += new
        scratch = encoder.encode(image, history, spacing=(1.0, 1.0, 2.0))
        np.testing.assert_allclose(maps, scratch, rtol=1e-6, atol=1e-7)
        assert maps.min() >= 0.0 and maps.max() <= 1.0
