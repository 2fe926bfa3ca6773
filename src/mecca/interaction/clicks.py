"""Interaction kinds, recordable clicks and their geometry (surfaces, error components).

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

The simulated users built on these rules are :mod:`mecca.interaction.users`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from mecca.data.roi import Box
from mecca.errors import GeometryError, InputError
from mecca.metrics import bounding_box

Position = tuple[int, int, int]
"""A voxel position (i, j, k) on the grid of the arrays it refers to."""

STRUCTURE_26 = ndimage.generate_binary_structure(3, 3)
"""The full 3x3x3 neighbourhood (26-connectivity)."""

BOX_MARGIN = 0.25
"""ROI margin around a box prompt, as a fraction of the box's size on each side (the
middle of the margins the generalist saw in training, 0.02-0.6; the CVPR 2025 protocol's
ROI)."""

BOX_MIN_EXTENT: tuple[int, int, int] | None = None
"""The least extent (voxels per axis) of a box prompt's ROI, or None (the default): the
margin alone. Widened about its centre, a thin structure's ROI (a spinal cord's box plus
its margin is 5 x 4 voxels across on OpenKBP's 3.9 mm grid, blown up to 48 on the
network's) holds some context. Measured on val and not adopted: with (16, 16, 8) the
box step rose on the thin targets but the final DSC fell, with the shipped model and with
one trained that way (docs/defaults.md)."""


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
        object.__setattr__(self, "position", parse_position(self.position))

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


def parse_position(value: object) -> Position:
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
                return parse_position(cand[best])
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


def box_prompt(
    box: Box,
    shape: Sequence[int],
    margin: float = BOX_MARGIN,
    min_extent: Sequence[int] | None = None,
) -> tuple[Box, tuple[Click, Click]]:
    """The ROI for a box prompt and the two BOX clicks that give the box to a method.

    ``box`` is on the original grid (half-open); the ROI is the box grown by ``margin`` of
    its size per side (at least one voxel), widened to ``min_extent`` voxels per axis
    (None: :data:`BOX_MIN_EXTENT`, off by default), clipped to ``shape``, so a method
    sees the context around the box as it did in training; the clicks are the box's
    first and last voxels, which a session maps to the network grid like any click.
    """
    size = np.asarray(box.shape, dtype=np.float64)
    grow = np.maximum(np.ceil(margin * size), 1).astype(np.int64)
    roi = box.grow(grow).clip(shape)
    least = BOX_MIN_EXTENT if min_extent is None else min_extent
    if least is not None:
        roi = roi.at_least(least, shape)
    inner = box.clip(shape)
    last = (inner.stop[0] - 1, inner.stop[1] - 1, inner.stop[2] - 1)
    kind = InteractionKind.BOX
    return roi, (Click(kind, inner.start), Click(kind, last))
