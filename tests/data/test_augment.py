"""Flip/rotate augmentation: seeded, replayable, label stays binary and aligned."""

from __future__ import annotations

import numpy as np
import pytest

from mecca.data.augment import AugmentParams, apply_augment, random_flip_rotate
from mecca.errors import ConfigError, InputError

GRID = (55, 55, 30)


def _pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ii = np.indices(GRID, dtype=np.float32)
    label = (((ii[0] - 22) / 14) ** 2 + ((ii[1] - 30) / 9) ** 2 + ((ii[2] - 14) / 7) ** 2) <= 1
    image = label * 2.0 + rng.normal(0, 0.3, GRID)
    return image.astype(np.float32), label.astype(np.uint8)


def test_same_seed_same_result_and_different_seeds_differ():
    image, label = _pair()
    a = random_flip_rotate(image, label, np.random.default_rng(5))
    b = random_flip_rotate(image, label, np.random.default_rng(5))
    assert a[2] == b[2]
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    params = {random_flip_rotate(image, label, np.random.default_rng(s))[2] for s in range(10)}
    assert len(params) == 10


def test_replay_equals():
    image, label = _pair()
    for seed in range(5):
        img, lab, params = random_flip_rotate(image, label, np.random.default_rng(seed))
        img2, lab2 = apply_augment(image, label, params)
        np.testing.assert_array_equal(img, img2)
        np.testing.assert_array_equal(lab, lab2)


def test_label_stays_binary_and_aligned():
    image, label = _pair()
    for seed in range(5):
        img, lab, params = random_flip_rotate(image, label, np.random.default_rng(seed),
                                              max_degrees=10.0)
        assert lab is not None and lab.dtype == np.uint8 and lab.shape == GRID
        assert set(np.unique(lab)) <= {0, 1}
        assert img.dtype == np.float32 and img.shape == GRID
        assert abs(int(lab.sum()) - int(label.sum())) < 0.05 * label.sum()
        assert img[lab == 1].mean() - img[lab == 0].mean() > 1.5  # image moved with label
        assert abs(params.degrees) <= 10.0


def test_flip_twice_is_identity():
    image, label = _pair()
    params = AugmentParams(flips=(0, 1, 2))
    once = apply_augment(image, label, params)
    twice = apply_augment(once[0], once[1], params)
    np.testing.assert_array_equal(twice[0], image)
    np.testing.assert_array_equal(twice[1], label)
    np.testing.assert_array_equal(once[0], image[::-1, ::-1, ::-1])


def test_rotation_stays_in_plane():
    """Rotating in the (i, j) plane leaves each k-slice's content within that slice."""
    image = np.zeros(GRID, np.float32)
    image[20:35, 20:35, 10] = 1.0
    img, _ = apply_augment(image, None, AugmentParams(degrees=8.0))
    assert img[..., 10].sum() > 0 and np.all(img[..., :10] == 0) and np.all(img[..., 11:] == 0)


def test_channels_first_image_and_no_label():
    image, label = _pair()
    stacked = np.stack([image, -image])
    out, lab, params = random_flip_rotate(stacked, None, np.random.default_rng(1))
    assert lab is None and out.shape == stacked.shape
    single, _ = apply_augment(image, None, params)
    np.testing.assert_allclose(out[0], single)
    np.testing.assert_allclose(out[1], -single, atol=1e-6)


def test_p_flip_extremes_and_bad_arguments():
    image, label = _pair()
    _, _, none = random_flip_rotate(image, label, np.random.default_rng(0), p_flip=0.0,
                                    max_degrees=0.0)
    assert none == AugmentParams()
    _, _, all_ = random_flip_rotate(image, label, np.random.default_rng(0), p_flip=1.0)
    assert all_.flips == (0, 1, 2)
    with pytest.raises(ConfigError):
        random_flip_rotate(image, label, np.random.default_rng(0), p_flip=1.5)
    with pytest.raises(ConfigError):
        random_flip_rotate(image, label, np.random.default_rng(0), flip_axes=(0, 3))
    with pytest.raises(InputError):
        apply_augment(image, label[:, :, :5], AugmentParams())
