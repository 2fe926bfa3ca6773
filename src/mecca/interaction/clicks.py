"""Interaction kinds, recordable clicks and the simulated users of the benchmarks.

Every function here is grid-agnostic: it works on whatever (I, J, K) arrays it is given
(the original grid or the network grid), in voxel units, with positions as integer
``(i, j, k)`` triples (the axis order of :mod:`mecca.io`).

Conventions, written down once:

* **Connectivity** is 26 (the full 3x3x3 neighbourhood) for object surfaces, for the
  "within one voxel of an error" test and for error components.
* **Object surface** of a mask ``m``: ``m & ~binary_erosion(m, 26-structure, border_value=1)``,
  i.e. the object voxels with at least one background 26-neighbour *inside the array*.
  The array edge is not an object edge (a crop may cut through the object).
* **Errors**: false negatives ``gt & ~pred`` (the user answers with a FOREGROUND click) and
  false positives ``pred & ~gt`` (BACKGROUND click), each split into 26-connected
  components.
* **Edge points not correctly predicted** (MECCA): surface voxels of ``gt`` that are wrong
  themselves or have a wrong 26-neighbour (``surface(gt) & dilate(pred != gt)``), so an
  edge whose voxel is right but whose neighbour across the boundary is wrong counts too.
* **Component centre** (IteR-MRL, CVPR 2025 challenge): the voxel of the component
  farthest from its border, the argmax of the Euclidean distance transform of the
  component with the array edge counting as border (so the click is not pushed onto the
  edge of a crop). Unlike the centroid it lies inside non-convex components. Ties go to
  the first voxel in raster (C) order.
* **Advice** (MECCA interaction guide): an integer label map, 0 = no advice. When given,
  users only click inside advice regions (``advice > 0``): error masks and edge candidates
  are intersected with it first; nothing valid there gives no clicks.
"""

from __future__ import annotations

import enum
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy import ndimage

from mecca.errors import ConfigError, GeometryError, InputError
from mecca.metrics import bounding_box

logger = logging.getLogger(__name__)

Position = tuple[int, int, int]
"""A voxel position (i, j, k) on the grid of the arrays it refers to."""

STRUCTURE_26 = ndimage.generate_binary_structure(3, 3)
"""The full 3x3x3 neighbourhood (26-connectivity)."""

_OFFSET_TRIES = 20
"""Random offsets drawn before an error-centre click falls back to the centre itself."""


class InteractionKind(enum.Enum):
    """What a user interaction says about the voxels it touches."""

    FOREGROUND = "foreground"
    BACKGROUND = "background"
    EDGE = "edge"
    BOX = "box"
    SCRIBBLE = "scribble"


@dataclass(frozen=True)
class Click:
    """One point interaction, JSON-serialisable so that an episode can be replayed.

    Attributes:
        kind: what the click says (FOREGROUND, BACKGROUND or EDGE for point clicks).
        position: voxel (i, j, k) on the grid of the arrays it was made on; stored as
            Python ints whatever integer type it was given as.
    """

    kind: InteractionKind
    position: Position

    def __post_init__(self) -> None:
        kind = self.kind
        if not isinstance(kind, InteractionKind):
            kind = _parse_kind(kind)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "position", _parse_position(self.position))

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": "edge", "position": [i, j, k]}``, plain JSON types."""
        return {"kind": self.kind.value, "position": list(self.position)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Click:
        """Inverse of :meth:`to_dict`; raises :class:`InputError` on a malformed record."""
        try:
            return cls(data["kind"], data["position"])
        except (KeyError, TypeError) as exc:
            raise InputError(
                f"not a click record: {data!r}",
                hint='expected {"kind": "foreground", "position": [i, j, k]}',
            ) from exc


def _parse_kind(value: object) -> InteractionKind:
    """InteractionKind from its lowercase string value."""
    try:
        return InteractionKind(value)
    except ValueError:
        choices = ", ".join(k.value for k in InteractionKind)
        raise InputError(
            f"unknown interaction kind {value!r}", hint=f"use one of {choices}"
        ) from None


def _parse_position(value: object) -> Position:
    """Three integral numbers -> a tuple of Python ints."""
    arr = np.asarray(value)
    if arr.shape != (3,) or not np.issubdtype(arr.dtype, np.number) or np.any(arr != np.round(arr)):
        raise InputError(f"a click position must be three integers (i, j, k), got {value!r}")
    return (int(arr[0]), int(arr[1]), int(arr[2]))


# --------------------------------------------------------------------------- geometry


def object_surface(mask: np.ndarray) -> np.ndarray:
    """Bool (I, J, K): object voxels with a background 26-neighbour inside the array."""
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask, structure=STRUCTURE_26, border_value=1)


def edge_candidates(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Bool (I, J, K): gt surface voxels that are wrong or have a wrong 26-neighbour.

    Computed on gt's bounding box grown by one voxel, which holds every candidate and all
    their neighbours, so the result is that of the whole volume (a test checks it) for a
    fraction of the work: 12 ms instead of 210 ms a call on the 240 x 240 x 155 BraTS case
    of ``benchmarks/session_latency.py`` (2026-12-05).
    """
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    out = np.zeros(gt.shape, dtype=bool)
    box = bounding_box(gt, margin=1)
    if box is None:
        return out
    wrong = pred[box] != gt[box]
    near_wrong = ndimage.binary_dilation(wrong, structure=STRUCTURE_26)
    out[box] = object_surface(gt[box]) & near_wrong
    return out


def spread_sample(coords: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of up to ``n`` rows of ``coords`` (M, 3), spread out, without replacement.

    D^2 sampling (k-means++ seeding): the first point is uniform, each next point is drawn
    with probability proportional to its squared distance to the nearest point chosen so
    far. Points spread over all error regions without always landing on the most isolated
    outliers, as farthest-point sampling would. Returns int64 (min(n, M),).
    """
    m = len(coords)
    k = min(int(n), m)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    pts = np.asarray(coords, dtype=np.float64)
    chosen = [int(rng.integers(m))]
    d2 = ((pts - pts[chosen[0]]) ** 2).sum(axis=1)
    for _ in range(k - 1):
        cdf = np.cumsum(d2)
        if cdf[-1] <= 0:
            break
        idx = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
        chosen.append(idx)
        d2 = np.minimum(d2, ((pts - pts[idx]) ** 2).sum(axis=1))
    return np.asarray(chosen, dtype=np.int64)


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


def component_centres(labels: np.ndarray, which: Sequence[int]) -> np.ndarray:
    """Int64 (len(which), 3): the deepest voxel of each listed component of ``labels``.

    ``labels`` is an int label map (0 = outside). The depth of a voxel is its Euclidean
    distance to the nearest voxel outside its component, the array edge counting as
    outside; it is computed in each component's bounding box grown by one voxel, which
    is exact (the nearest outside voxel always lies in that box) and cheap.
    """
    boxes = ndimage.find_objects(labels)
    centres = np.empty((len(which), 3), dtype=np.int64)
    for row, label in enumerate(which):
        box = boxes[label - 1]
        if box is None:
            raise InputError(f"label {label} does not occur in the label map")
        inside = np.pad(labels[box] == label, 1, constant_values=False)
        depth = ndimage.distance_transform_edt(inside)[1:-1, 1:-1, 1:-1]
        local = np.unravel_index(int(np.argmax(depth)), depth.shape)
        centres[row] = [sl.start + x for sl, x in zip(box, local, strict=True)]
    return centres


def _jitter(
    centre: np.ndarray, labels: np.ndarray, label: int, max_offset: int, rng: np.random.Generator
) -> Position:
    """``centre`` plus a random offset in [-max_offset, max_offset]^3 that stays inside.

    Draws up to ``_OFFSET_TRIES`` offsets and keeps the first that lands in the same
    component; falls back to the centre itself when none does.
    """
    if max_offset <= 0:
        return _parse_position(centre)
    cand = centre + rng.integers(-max_offset, max_offset + 1, size=(_OFFSET_TRIES, 3))
    ok = np.all((cand >= 0) & (cand < np.asarray(labels.shape)), axis=1)
    ok[ok] = labels[tuple(cand[ok].T)] == label
    return _parse_position(cand[int(np.argmax(ok))] if ok.any() else centre)


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


# --------------------------------------------------------------------------- users


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
        return [Click(InteractionKind.EDGE, _parse_position(c)) for c in chosen]


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
            Click(fg if is_in else bg, _parse_position(c))
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


USERS: dict[str, type[SimulatedUser]] = {
    "edge": EdgeUser,
    "error_centre": ErrorCentreUser,
    "distance": DistanceUser,
    "random": RandomUser,
    "none": NoUser,
}
"""Simulated users by name (the names the CLI and configs use)."""


def make_user(name: str, **options: Any) -> SimulatedUser:
    """The simulated user registered as ``name``, built with ``options``."""
    if name == "scribble" and name not in USERS:  # scribbles.py imports this module
        from mecca.interaction.scribbles import ScribbleUser

        USERS[name] = ScribbleUser
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


# --------------------------------------------------------------------------- conversion


def _depth(mask: np.ndarray) -> np.ndarray:
    """Float (shape of mask): distance to the nearest False voxel; inf when there is none."""
    if mask.all():
        return np.full(mask.shape, np.inf)
    return ndimage.distance_transform_edt(mask)


def _nearest_deep(mask: np.ndarray, point: np.ndarray, min_depth: float) -> Position | None:
    """The voxel of ``mask`` at depth >= ``min_depth`` nearest to ``point``, or None.

    Searches a window around the point that doubles until the nearest candidate is
    provably the global one; the window has a margin of ``ceil(min_depth) + 1`` voxels so
    that the depth test inside it equals the test on the whole array.
    """
    shape = np.asarray(mask.shape)
    margin = int(np.ceil(min_depth)) + 1
    radius = 4
    while True:
        lo = np.maximum(point - radius - margin, 0)
        hi = np.minimum(point + radius + margin + 1, shape)
        window = mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        cand = np.argwhere(_depth(window) >= min_depth) + lo
        whole = bool(np.all(lo == 0) and np.all(hi == shape))
        if not whole:
            cand = cand[np.all(np.abs(cand - point) <= radius, axis=1)]
        if len(cand):
            d2 = ((cand - point) ** 2).sum(axis=1)
            best = int(np.argmin(d2))
            if whole or d2[best] <= radius**2:
                return _parse_position(cand[best])
        elif whole:
            return None
        radius *= 2


def edge_click_to_fg_bg(
    click: Click, gt: np.ndarray, *, min_depth: float = 2.0
) -> tuple[Click, Click]:
    """Turn an EDGE click into the FOREGROUND/BACKGROUND pair a user would give instead.

    For methods that do not accept edge points. The simulated user knows the ground
    truth, so the foreground click is the gt voxel nearest to the edge point whose
    distance to the nearest non-gt voxel is >= ``min_depth`` voxels (at least one voxel
    in from the surface layer at the default 2), and the background click is the non-gt
    voxel nearest to the edge point at distance >= ``min_depth`` from the gt. Where a
    structure is too thin for that depth, the nearest voxel of that side is used.

    Args:
        click: an EDGE click on the grid of ``gt``.
        gt: bool (I, J, K) ground truth with both foreground and background.
        min_depth: wanted distance from the boundary, voxels.

    Returns:
        (FOREGROUND click, BACKGROUND click).
    """
    if click.kind is not InteractionKind.EDGE:
        raise InputError(f"only EDGE clicks can be converted, got {click.kind.value}")
    gt_b = np.asarray(gt, dtype=bool)
    point = np.asarray(click.position)
    if gt_b.ndim != 3 or np.any(point < 0) or np.any(point >= np.asarray(gt_b.shape)):
        raise GeometryError(f"click {click.position} is outside the mask of shape {gt_b.shape}")
    pair = []
    for kind, side in ((InteractionKind.FOREGROUND, gt_b), (InteractionKind.BACKGROUND, ~gt_b)):
        pos = _nearest_deep(side, point, min_depth)
        if pos is None:
            pos = _nearest_deep(side, point, 1.0)
        if pos is None:
            raise InputError(
                f"cannot place a {kind.value} click: the ground truth has no {kind.value}"
            )
        pair.append(Click(kind, pos))
    return pair[0], pair[1]


def edge_clicks_to_fg_bg(
    clicks: Sequence[Click], gt: np.ndarray, *, min_depth: float = 2.0
) -> list[Click]:
    """Every EDGE click replaced by its FOREGROUND/BACKGROUND pair; others kept as they are."""
    out: list[Click] = []
    for click in clicks:
        if click.kind is InteractionKind.EDGE:
            out.extend(edge_click_to_fg_bg(click, gt, min_depth=min_depth))
        else:
            out.append(click)
    return out
