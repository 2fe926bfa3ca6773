"""The random walker: L. Grady, "Random walks for image segmentation", IEEE TPAMI 2006,
through ``skimage.segmentation.random_walker``, seeded by the clicks
(:mod:`mecca.methods.classical.seeded`)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from skimage.segmentation import random_walker

from mecca.data.roi import Crop
from mecca.interaction.clicks import InteractionKind
from mecca.interface import FG_BG
from mecca.methods.classical.seeded import Extra, SeededMethod, trivial_prob


def walker_data(image: np.ndarray, beta: float) -> tuple[np.ndarray, float]:
    """(data, beta) for ``random_walker`` with finite edge weights on any image.

    scikit-image scales beta by the image's standard deviation, so a flat image (a
    background ROI) gives 0/0 = NaN weights and a solver that never converges. With no
    contrast every edge weighs the same, which a non-flat stand-in with beta = 0 gives.
    """
    if float(np.std(image)) > 1e-6:
        return image, beta
    return np.arange(image.size, dtype=np.float64).reshape(image.shape), 0.0


@dataclass
class RandomWalkerMethod(SeededMethod):
    """Random walker on the crop from fg/bg clicks (scikit-image), probability output.

    Attributes:
        beta: edge-weight sharpness (scikit-image's ``beta``).
        seed_radius: each click seeds a cube of side ``2 * seed_radius + 1``.
        border_background: treat the crop border as background seeds.
    """

    beta: float = 130.0
    seed_radius: int = 1
    border_background: bool = True
    name: str = "random_walker"
    accepts: frozenset[InteractionKind] = FG_BG

    def from_seeds(self, crop: Crop, seeds: np.ndarray, extra: Extra) -> tuple[np.ndarray, Extra]:
        prob = trivial_prob(seeds)
        if prob is None:
            with warnings.catch_warnings():
                # cg_j stops at a tolerance, so probabilities may overshoot [0, 1] by ~1e-5;
                # they are clipped below, so scikit-image's warning about it is noise here.
                warnings.filterwarnings("ignore", "The probability range", UserWarning)
                data, beta = walker_data(crop.image, self.beta)
                full = random_walker(data, seeds, beta=beta, mode="cg_j", return_full_prob=True)
            prob = np.clip(full[0], 0.0, 1.0)
        return prob, extra
