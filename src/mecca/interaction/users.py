"""The simulated users of the benchmark protocols: seeded, deterministic stand-ins for a
person clicking on the errors of the current mask.

MECCA's edge points (:class:`EdgeUser`), IteR-MRL's error centres
(:class:`ErrorCentreUser`), the CVPR 2025 challenge's distance user, random and no
interaction (IteR-MRL's Table 6 ablation) and a scribbling user (:class:`ScribbleUser`,
strokes from :mod:`mecca.interaction.scribbles`), found by name with :func:`make_user`.
The conventions (surfaces, errors, component centres, advice) are
:mod:`mecca.interaction.clicks`'s.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy import ndimage

from mecca.errors import ConfigError, GeometryError, InputError
from mecca.interaction.clicks import (
    STRUCTURE_26,
    Click,
    InteractionKind,
    Position,
    component_centres,
    edge_candidates,
    parse_position,
    spread_sample,
)
from mecca.interaction.scribbles import error_strokes

logger = logging.getLogger(__name__)

_OFFSET_TRIES = 20
"""Random offsets drawn before an error-centre click falls back to the centre itself."""


@dataclass(frozen=True)
class _ErrorSide:
    """The 26-connected components of one kind of error (false negative or positive)."""

    kind: InteractionKind
    labels: np.ndarray  # int32 (I, J, K), 0 = not this error, 1..n = component
    sizes: np.ndarray  # int64 (n,), voxels of components 1..n


def _error_sides(
    pred: np.ndarray, gt: np.ndarray, allowed: np.ndarray | None
) -> tuple[_ErrorSide, _ErrorSide]:
    """False-negative (FOREGROUND) and false-positive (BACKGROUND) error components."""
    sides = []
    for kind, err in (
        (InteractionKind.FOREGROUND, gt & ~pred),
        (InteractionKind.BACKGROUND, pred & ~gt),
    ):
        if allowed is not None:
            err = err & allowed
        labels, count = ndimage.label(err, structure=STRUCTURE_26)
        sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        sides.append(_ErrorSide(kind, labels, sizes))
    return sides[0], sides[1]


def _largest(sides: Sequence[_ErrorSide], n: int) -> list[tuple[int, int]]:
    """(side index, label) of the ``n`` largest components, largest first.

    Ties: false negatives before false positives, then lower label (raster order).
    """
    sizes = np.concatenate([s.sizes for s in sides])
    side = np.concatenate([np.full(len(s.sizes), i) for i, s in enumerate(sides)])
    label = np.concatenate([np.arange(1, len(s.sizes) + 1) for s in sides])
    order = np.lexsort((label, side, -sizes))[: max(int(n), 0)]
    return [(int(side[o]), int(label[o])) for o in order]


def _jitter(
    centre: np.ndarray, labels: np.ndarray, label: int, max_offset: int, rng: np.random.Generator
) -> Position:
    """``centre`` plus a random offset in [-max_offset, max_offset]^3 that stays inside.

    Draws up to ``_OFFSET_TRIES`` offsets and keeps the first that lands in the same
    component; falls back to the centre itself when none does.
    """
    if max_offset <= 0:
        return parse_position(centre)
    cand = centre + rng.integers(-max_offset, max_offset + 1, size=(_OFFSET_TRIES, 3))
    ok = np.all((cand >= 0) & (cand < np.asarray(labels.shape)), axis=1)
    ok[ok] = labels[tuple(cand[ok].T)] == label
    return parse_position(cand[int(np.argmax(ok))] if ok.any() else centre)


def _error_centre_clicks(
    pred: np.ndarray,
    gt: np.ndarray,
    allowed: np.ndarray | None,
    n: int,
    max_offset: int,
    rng: np.random.Generator,
) -> list[Click]:
    """Clicks at the (jittered) centres of the ``n`` largest error components, largest first."""
    sides = _error_sides(pred, gt, allowed)
    picks = _largest(sides, n)
    centres: dict[tuple[int, int], np.ndarray] = {}
    for s, side in enumerate(sides):
        which = [label for si, label in picks if si == s]
        found = component_centres(side.labels, which)
        centres.update(zip(((s, w) for w in which), found, strict=True))
    return [
        Click(sides[s].kind, _jitter(centres[s, label], sides[s].labels, label, max_offset, rng))
        for s, label in picks
    ]


def _check_masks(
    pred: np.ndarray, gt: np.ndarray, advice: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Bool pred and gt, bool ``advice > 0`` (or None), all the same 3D shape."""
    pred_b = np.asarray(pred, dtype=bool)
    gt_b = np.asarray(gt, dtype=bool)
    if gt_b.ndim != 3 or pred_b.shape != gt_b.shape:
        raise GeometryError(
            f"prediction {pred_b.shape} and ground truth {gt_b.shape} must be the same 3D shape"
        )
    if advice is None:
        return pred_b, gt_b, None
    adv = np.asarray(advice)
    if adv.shape != gt_b.shape:
        raise GeometryError(f"advice map {adv.shape} does not match the masks {gt_b.shape}")
    return pred_b, gt_b, adv > 0


class SimulatedUser(ABC):
    """A seeded, deterministic stand-in for a person clicking on errors.

    Call with the current prediction and the ground truth (bool, same (I, J, K) shape);
    returns this step's clicks. ``step`` is 1-based; ``advice`` (int labels, 0 = none)
    restricts clicks to advice regions; ``image`` is accepted so that every user shares
    one signature (the users here do not look at intensities).
    """

    name: ClassVar[str]

    def __call__(
        self,
        pred: np.ndarray,
        gt: np.ndarray,
        *,
        step: int,
        rng: np.random.Generator,
        advice: np.ndarray | None = None,
        image: np.ndarray | None = None,
    ) -> list[Click]:
        if step < 1:
            raise InputError(f"steps are counted from 1, got step={step}")
        pred_b, gt_b, allowed = _check_masks(pred, gt, advice)
        if allowed is not None and not allowed.any():
            return []
        clicks = self._clicks(pred_b, gt_b, step=step, rng=rng, allowed=allowed)
        logger.debug("%s user, step %d: %d clicks", self.name, step, len(clicks))
        return clicks

    @abstractmethod
    def _clicks(
        self,
        pred: np.ndarray,
        gt: np.ndarray,
        *,
        step: int,
        rng: np.random.Generator,
        allowed: np.ndarray | None,
    ) -> list[Click]:
        """This step's clicks from validated bool masks (``allowed``: advice > 0 or None)."""


def _non_negative(**values: int) -> None:
    """Raise ConfigError for a negative count."""
    for key, value in values.items():
        if value < 0:
            raise ConfigError(f"{key} must be >= 0, got {value}")


@dataclass(frozen=True)
class EdgeUser(SimulatedUser):
    """MECCA's user: EDGE clicks on the true boundary where the prediction is wrong.

    Candidates are :func:`edge_candidates` (gt surface voxels in or next to an error);
    ``first`` points at step 1 and ``later`` points at each later step are drawn from them
    without replacement by :func:`spread_sample` (D^2 sampling, so points spread over the
    error regions instead of clumping). Fewer candidates give fewer clicks; a perfect
    prediction gives none. MECCA paper protocol: 25, then 5 per step (45 in 5 steps).
    """

    first: int = 25
    """Points at step 1."""
    later: int = 5
    """Points at each step after the first."""
    name: ClassVar[str] = "edge"

    def __post_init__(self) -> None:
        _non_negative(first=self.first, later=self.later)

    def _clicks(
        self,
        pred: np.ndarray,
        gt: np.ndarray,
        *,
        step: int,
        rng: np.random.Generator,
        allowed: np.ndarray | None,
    ) -> list[Click]:
        n = self.first if step == 1 else self.later
        cand = edge_candidates(pred, gt)
        if allowed is not None:
            cand &= allowed
        coords = np.argwhere(cand)
        chosen = coords[spread_sample(coords, n, rng)]
        return [Click(InteractionKind.EDGE, parse_position(c)) for c in chosen]


@dataclass(frozen=True)
class ErrorCentreUser(SimulatedUser):
    """IteR-MRL's user: one click near the centre of each of the ``n`` largest errors.

    False negatives get FOREGROUND clicks, false positives BACKGROUND clicks; both kinds
    compete for the ``n`` places by size (voxels). Each click is the component centre
    (deepest voxel) plus a random integer offset in [-max_offset, max_offset]^3, redrawn
    while it leaves the component and replaced by the centre after ``_OFFSET_TRIES``
    misses.
    """

    n: int = 5
    """Clicks per step (largest components first)."""
    max_offset: int = 3
    """Largest random offset per axis, voxels (0 = exactly at the centre)."""
    name: ClassVar[str] = "error_centre"

    def __post_init__(self) -> None:
        _non_negative(n=self.n, max_offset=self.max_offset)

    def _clicks(
        self,
        pred: np.ndarray,
        gt: np.ndarray,
        *,
        step: int,
        rng: np.random.Generator,
        allowed: np.ndarray | None,
    ) -> list[Click]:
        return _error_centre_clicks(pred, gt, allowed, self.n, self.max_offset, rng)


@dataclass(frozen=True)
class DistanceUser(SimulatedUser):
    """The CVPR 2025 interactive-segmentation challenge user: one click per step.

    The click is at the maximum of the Euclidean distance transform inside the largest
    26-connected error component: FOREGROUND for a false negative, BACKGROUND for a false
    positive. No random offset (the challenge user is deterministic).
    """

    name: ClassVar[str] = "distance"

    def _clicks(
        self,
        pred: np.ndarray,
        gt: np.ndarray,
        *,
        step: int,
        rng: np.random.Generator,
        allowed: np.ndarray | None,
    ) -> list[Click]:
        return _error_centre_clicks(pred, gt, allowed, 1, 0, rng)


@dataclass(frozen=True)
class RandomUser(SimulatedUser):
    """Ablation "random interaction": ``n`` distinct random voxels, labelled by the gt.

    Voxels are drawn uniformly (inside advice regions when given), without replacement;
    a voxel inside the gt gives a FOREGROUND click, outside a BACKGROUND click.
    """

    n: int = 5
    """Clicks per step."""
    name: ClassVar[str] = "random"

    def __post_init__(self) -> None:
        _non_negative(n=self.n)

    def _clicks(
        self,
        pred: np.ndarray,
        gt: np.ndarray,
        *,
        step: int,
        rng: np.random.Generator,
        allowed: np.ndarray | None,
    ) -> list[Click]:
        pool = np.flatnonzero(allowed) if allowed is not None else np.arange(gt.size)
        flat = rng.choice(pool, size=min(self.n, pool.size), replace=False)
        coords = np.stack(np.unravel_index(flat, gt.shape), axis=1)
        inside = gt.ravel()[flat]
        fg, bg = InteractionKind.FOREGROUND, InteractionKind.BACKGROUND
        return [
            Click(fg if is_in else bg, parse_position(c))
            for is_in, c in zip(inside, coords, strict=True)
        ]


@dataclass(frozen=True)
class NoUser(SimulatedUser):
    """Ablation "no interaction": never clicks."""

    name: ClassVar[str] = "none"

    def _clicks(
        self,
        pred: np.ndarray,
        gt: np.ndarray,
        *,
        step: int,
        rng: np.random.Generator,
        allowed: np.ndarray | None,
    ) -> list[Click]:
        return []


@dataclass(frozen=True)
class ScribbleUser(SimulatedUser):
    """Binary scribbling user: ``n`` strokes per step, given as one click per voxel.

    FOREGROUND clicks along strokes through missed object voxels, BACKGROUND clicks along
    strokes through false positives, so any fg/bg method (test-time adaptation, the
    classical seeded methods) can take them through ``step``; see :func:`error_strokes`.
    Multi-class strokes: call :func:`error_strokes` on label maps.
    """

    n: int = 1
    """Strokes per step (largest error components first)."""
    axis: int | None = 2
    """Strokes lie in a slice across this axis (None: 3D lines)."""
    max_offset: int = 2
    """Largest random offset of a stroke's anchor from the deepest error voxel, per axis."""
    max_length: float | None = None
    """Longest stroke in voxels (None: across the whole error component)."""
    name: ClassVar[str] = "scribble"

    def __post_init__(self) -> None:
        if self.n < 0 or self.max_offset < 0:
            raise ConfigError(f"n and max_offset must be >= 0, got {self.n}, {self.max_offset}")

    def _clicks(
        self,
        pred: np.ndarray,
        gt: np.ndarray,
        *,
        step: int,
        rng: np.random.Generator,
        allowed: np.ndarray | None,
    ) -> list[Click]:
        strokes = error_strokes(
            pred,
            gt,
            rng=rng,
            n=self.n,
            axis=self.axis,
            max_offset=self.max_offset,
            max_length=self.max_length,
            allowed=allowed,
        )
        fg, bg = InteractionKind.FOREGROUND, InteractionKind.BACKGROUND
        return [
            Click(fg if s.label else bg, (int(p[0]), int(p[1]), int(p[2])))
            for s in strokes
            for p in s.points
        ]


USERS: dict[str, type[SimulatedUser]] = {
    "edge": EdgeUser,
    "error_centre": ErrorCentreUser,
    "distance": DistanceUser,
    "random": RandomUser,
    "none": NoUser,
    "scribble": ScribbleUser,
}
"""Simulated users by name (the names the CLI and configs use)."""


def make_user(name: str, **options: Any) -> SimulatedUser:
    """The simulated user registered as ``name``, built with ``options``."""
    try:
        cls = USERS[name]
    except KeyError:
        raise ConfigError(
            f"unknown simulated user {name!r}", hint=f"choose one of {', '.join(USERS)}"
        ) from None
    try:
        return cls(**options)
    except TypeError as exc:
        raise ConfigError(f"bad options for simulated user {name!r}: {exc}") from exc
