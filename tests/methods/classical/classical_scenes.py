"""Small synthetic scenes shared by the classical-method tests (not a test module)."""

from __future__ import annotations

import numpy as np

from conftest import sphere
from mecca.data.roi import Box, Crop, make_crop
from mecca.interaction.clicks import Click, InteractionKind

FG, BG = InteractionKind.FOREGROUND, InteractionKind.BACKGROUND
SHAPE = (32, 32, 20)
CENTRE = (16, 16, 10)


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(2 * (pred & gt).sum() / (pred.sum() + gt.sum()))


def ball_image(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy bright ball (radius 6) in a 32 x 32 x 20 volume, and its mask."""
    rng = np.random.default_rng(seed)
    gt = sphere(SHAPE, CENTRE, 6)
    return gt * 2.0 + rng.normal(0, 0.2, gt.shape), gt


def ball_crop() -> tuple[Crop, np.ndarray]:
    """The ball as a crop of the whole volume on its own grid, and its mask."""
    image, gt = ball_image()
    return make_crop(image, Box((0, 0, 0), SHAPE), grid=SHAPE), gt


def two_balls_crop() -> tuple[Crop, np.ndarray, np.ndarray]:
    """Two equally bright balls A and B joined by a bright tube; returns crop, A, B.

    A fg click in A alone makes most methods take B too (same intensity, connected);
    a bg click in B should then remove B where the method can.
    """
    a = sphere(SHAPE, (16, 9, 10), 5)
    b = sphere(SHAPE, (16, 23, 10), 5)
    i, j, k = np.indices(SHAPE)
    tube = ((i - 16) ** 2 + (k - 10) ** 2 <= 4) & (j >= 9) & (j <= 23)
    rng = np.random.default_rng(0)
    image = (a | b | tube) * 2.0 + rng.normal(0, 0.2, SHAPE)
    return make_crop(image, Box((0, 0, 0), SHAPE), grid=SHAPE), a, b


A_CLICK = Click(FG, (16, 9, 10))
B_CLICK = Click(BG, (16, 23, 10))
