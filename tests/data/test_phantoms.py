"""Procedural phantoms: deterministic, well-formed, realistic enough to be non-trivial."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
from scipy import ndimage as ndi

from mecca.data.phantoms import Phantom, make_phantom
from mecca.errors import ConfigError

log = logging.getLogger(__name__)

KINDS = ["mr", "ct"]


def _phantom(seed: int, kind: str = "mr", **kw) -> Phantom:
    return make_phantom(rng=np.random.default_rng(seed), kind=kind, **kw)


def _best_global_threshold_dice(image: np.ndarray, target: np.ndarray) -> float:
    """Best Dice over every global threshold, bright-target or dark-target direction."""
    values = np.sort(image.ravel())
    best = 0.0
    for th in np.quantile(values, np.linspace(0.0, 1.0, 401)):
        for seg in (image >= th, image <= th):
            inter = np.count_nonzero(seg & target)
            best = max(best, 2 * inter / (np.count_nonzero(seg) + np.count_nonzero(target)))
    return best


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_by_seed_and_seeds_differ(kind):
    a, b, c = _phantom(3, kind), _phantom(3, kind), _phantom(4, kind)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    assert not np.array_equal(a.label, c.label)
    assert not np.allclose(a.image, c.image)


@pytest.mark.parametrize("kind", KINDS)
def test_fields_and_geometry(kind):
    p = _phantom(0, kind, spacing=(0.8, 0.8, 2.5))
    assert p.image.shape == p.label.shape == (64, 64, 40)
    assert p.image.dtype == np.float32 and p.label.dtype == np.uint8
    assert np.all(np.isfinite(p.image))
    assert p.spacing == (0.8, 0.8, 2.5) and p.kind == kind
    np.testing.assert_array_equal(p.affine, np.diag([0.8, 0.8, 2.5, 1.0]))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(64, 64, 40), (96, 80, 24), (20, 20, 20)])
def test_target_present_and_inside_with_margin(kind, shape):
    adjacent = 0
    for seed in range(10):
        p = _phantom(seed, kind, shape=shape)
        assert set(np.unique(p.label)) == {0, 1, 2}
        idx = np.argwhere(p.label == 1)
        assert len(idx) > 20
        assert idx.min() >= 2 and (np.asarray(shape) - 1 - idx.max(axis=0)).min() >= 2
        adjacent += bool(np.any(ndi.binary_dilation(p.label == 1) & (p.label == 2)))
    assert adjacent >= 5  # the distractor touches the target in most phantoms


def test_mr_contrast_positive_but_overlapping_and_not_thresholdable():
    for seed in range(5):
        p = _phantom(seed, "mr")
        target, background = p.image[p.label == 1], p.image[p.label == 0]
        assert target.mean() > background.mean() + 15
        # histograms overlap: many background voxels are brighter than dim target voxels
        assert np.mean(background > np.percentile(target, 10)) > 0.01
        assert _best_global_threshold_dice(p.image, p.label == 1) < 0.95


def test_ct_units_and_not_thresholdable():
    for seed in range(5):
        p = _phantom(seed, "ct")
        corners = p.image[[0, 0, -1, -1], [0, -1, 0, -1], :]
        assert np.all(np.abs(corners.mean(axis=-1) + 1000) < 10)  # air
        body = p.image[24:40, 24:40][p.label[24:40, 24:40] == 0]
        assert 25 < np.median(body) < 55  # soft tissue ~40 HU
        target = p.image[p.label == 1]
        assert abs(np.median(target) - 40) > 20  # hyper- or hypodense lesion
        tissue = p.image[(p.label == 0) & (p.image > -500)]
        lo, hi = np.percentile(target, [10, 90])
        assert np.mean((tissue > lo) & (tissue < hi)) > 0.01  # overlapping histograms
        assert _best_global_threshold_dice(p.image, p.label == 1) < 0.95


def test_bad_arguments():
    with pytest.raises(ConfigError):
        make_phantom(rng=np.random.default_rng(0), kind="pet")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        make_phantom((64, 64), rng=np.random.default_rng(0))
    with pytest.raises(ConfigError):
        make_phantom((10, 10, 10), rng=np.random.default_rng(0))
    with pytest.raises(ConfigError):
        make_phantom(rng=np.random.default_rng(0), spacing=(1.0, 0.0, 1.0))


def test_timing_report():
    """Reports the median time per 64 x 64 x 40 phantom (printed, not asserted)."""
    for kind in KINDS:
        _phantom(0, kind)
        times = []
        for seed in range(20):
            t0 = time.perf_counter()
            _phantom(seed, kind)
            times.append(time.perf_counter() - t0)
        msg = f"phantom {kind} 64x64x40: median {1e3 * np.median(times):.1f} ms"
        log.info(msg)
        print(msg)
