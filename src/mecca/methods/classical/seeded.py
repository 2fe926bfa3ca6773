"""What the click-seeded classical methods share: seed maps from clicks and the
:class:`SeededMethod` frame.

Seeds: every foreground/background click so far, each grown to a small cube (radius
``seed_radius`` voxels), and, optionally, the crop's outer border as background (the ROI is
the object's box plus a margin, so its border is background, as a user drawing the box
intends).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from mecca.data.roi import Crop
from mecca.errors import ConfigError
from mecca.interaction.clicks import Click, InteractionKind
from mecca.interface import FG_BG, MethodState, StepResult


def seed_labels(
    shape: tuple[int, ...], clicks: Sequence[Click], *, radius: int = 1, border_background: bool
) -> np.ndarray:
    """Label map of seeds: 1 = foreground, 2 = background, 0 = unknown (uint8, ``shape``).

    A later click wins where cubes overlap, so a correction overrides an earlier seed.
    """
    seeds = np.zeros(shape, np.uint8)
    if border_background:
        seeds[[0, -1], :, :] = 2
        seeds[:, [0, -1], :] = 2
        seeds[:, :, [0, -1]] = 2
    for click in clicks:
        if click.kind not in FG_BG:
            continue
        lo = [max(0, p - radius) for p in click.position]
        hi = [min(s, p + radius + 1) for p, s in zip(click.position, shape, strict=True)]
        value = 1 if click.kind is InteractionKind.FOREGROUND else 2
        seeds[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = value
    return seeds


Extra = dict[str, Any]


class SeededMethod(ABC):
    """The frame every click-seeded classical method shares (subclasses are dataclasses
    with ``seed_radius`` and ``border_background`` fields and a :meth:`from_seeds`).

    ``start`` keeps the given initial probability (else 0); ``step`` turns all clicks so
    far into a seed map (:func:`seed_labels`), asks :meth:`from_seeds` for the probability
    and times it. ``extra`` is the state's method-specific data (e.g. a graph reused
    between steps), returned possibly updated.
    """

    name: str
    seed_radius: int
    border_background: bool
    accepts: frozenset[InteractionKind] = FG_BG

    def check_seed_radius(self) -> None:
        if self.seed_radius < 0:
            raise ConfigError(f"{self.name} seed_radius must be >= 0, got {self.seed_radius}")

    def start(self, crop: Crop, *, init_prob: np.ndarray | None = None) -> MethodState:
        prob = np.zeros(crop.grid, np.float32) if init_prob is None else init_prob
        return MethodState(crop=crop, prob=prob.astype(np.float32, copy=False))

    @abstractmethod
    def from_seeds(self, crop: Crop, seeds: np.ndarray, extra: Extra) -> tuple[np.ndarray, Extra]:
        """Probability (float32, crop grid) from a seed map (1 fg, 2 bg, 0 free); each
        method implements it."""

    def step(
        self, state: MethodState, new: Sequence[Click], *, rng: np.random.Generator
    ) -> tuple[MethodState, StepResult]:
        t0 = time.perf_counter()
        clicks = state.clicks + tuple(new)
        seeds = seed_labels(
            state.crop.grid,
            clicks,
            radius=self.seed_radius,
            border_background=self.border_background,
        )
        prob, extra = self.from_seeds(state.crop, seeds, dict(state.extra))
        prob = np.asarray(prob, dtype=np.float32)
        seconds = time.perf_counter() - t0
        new_state = MethodState(crop=state.crop, clicks=clicks, prob=prob, extra=extra)
        return new_state, StepResult(prob=prob, seconds=seconds)


def trivial_prob(seeds: np.ndarray) -> np.ndarray | None:
    """0 everywhere without a foreground seed, 1 everywhere without a background seed,
    else None (the algorithm has to run)."""
    if not (seeds == 1).any():
        return np.zeros(seeds.shape, np.float32)
    if not (seeds == 2).any():
        return np.ones(seeds.shape, np.float32)
    return None
