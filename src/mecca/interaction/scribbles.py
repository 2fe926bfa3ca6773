"""Scribble strokes for simulated scribbling users: one stroke through each of the largest
error regions (the user itself is :class:`mecca.interaction.users.ScribbleUser`).

For scribble-based correction (test-time adaptation, Sambaturu et al. 2021, SPEC Sec. 5):
the annotators of that paper drew scribbles on the slices where a correction was needed.
The simulated user here does the same from the current label map and the ground truth.

Conventions (those of :mod:`mecca.interaction.clicks` where they overlap):

* **Error components**: for each true label ``L``, the voxels with ``gt == L`` predicted
  otherwise, split into 26-connected components; a stroke is labelled with the true label
  of its component. Components compete by size (voxels) across labels; ties go to the
  lower label, then to the lower component number (raster order of first voxel).
* **Stroke**: the longer (in voxels) of two candidates, both inside the component and
  through (or next to) its *anchor*, the deepest voxel (see
  :func:`~mecca.interaction.clicks.component_centres`) plus an optional random offset
  that stays inside the component:

  - a straight line through the anchor along the component's longest principal axis (the
    eigenvector of the largest eigenvalue of its voxel-coordinate covariance), sampled
    every half voxel, rounded, and clipped to the contiguous run inside the component
    around the anchor: what a person draws across a blob-like error, whose skeleton
    collapses to a point;
  - the medial path: the part of the component's skeleton (``skeletonize``) connected to
    the skeleton voxel nearest the anchor: what a person draws along a thin curved error
    such as the rim an under-segmentation leaves, which a straight line crosses in a voxel
    or two.

  ``max_length`` caps either (half on each side of the anchor; geodesic along the
  skeleton). Both are 26-connected.
* **In-plane strokes** (``axis``, default 2, the slice axis of (i, j, k) arrays): the
  stroke lies in the slice through the anchor, as when scribbling on one slice in a viewer;
  the principal axis is then that of the component's voxels in this slice. ``None``: 3D.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize

from mecca.errors import ConfigError, GeometryError
from mecca.interaction.clicks import STRUCTURE_26, component_centres

logger = logging.getLogger(__name__)

UNLABELED = -1
"""Value of unscribbled voxels in a scribble label volume."""

_OFFSET_TRIES = 20
"""Random anchor offsets drawn before falling back to the deepest voxel itself."""


@dataclass(frozen=True)
class Stroke:
    """One scribble: voxels along a line, all with one label.

    Attributes:
        label: the class label the stroke asserts (0 = background).
        points: int64 (N, 3) distinct voxel positions (i, j, k): in order along a line
            stroke, in raster order along a medial path.
    """

    label: int
    points: np.ndarray


@dataclass(frozen=True)
class _Component:
    """One error component: its true label, its label map and its number in that map."""

    label: int
    labels: np.ndarray
    number: int
    size: int


def _error_components(
    pred: np.ndarray, gt: np.ndarray, allowed: np.ndarray | None
) -> list[_Component]:
    """Every error component (one true label each), largest first (ties: label, number)."""
    wrong = pred != gt
    if allowed is not None:
        wrong &= allowed
    found: list[_Component] = []
    for label in np.unique(gt[wrong]):
        labels, count = ndimage.label(wrong & (gt == label), structure=STRUCTURE_26)
        sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        found += [_Component(int(label), labels, i + 1, int(s)) for i, s in enumerate(sizes)]
    found.sort(key=lambda c: (-c.size, c.label, c.number))
    return found


def _anchor(
    mask: np.ndarray, deepest: np.ndarray, max_offset: int, rng: np.random.Generator
) -> np.ndarray:
    """``deepest`` plus a random offset in [-max_offset, max_offset]^3 that stays in ``mask``."""
    if max_offset <= 0:
        return deepest
    cand = deepest + rng.integers(-max_offset, max_offset + 1, size=(_OFFSET_TRIES, 3))
    ok = np.all((cand >= 0) & (cand < np.asarray(mask.shape)), axis=1)
    ok[ok] = mask[tuple(cand[ok].T)]
    return cand[int(np.argmax(ok))] if ok.any() else deepest


def principal_axis(coords: np.ndarray) -> np.ndarray:
    """Unit float64 (3,) direction of largest spread of (N, 3) coordinates (axis 0 if none)."""
    centred = coords - coords.mean(axis=0)
    cov = centred.T @ centred
    if not np.any(cov):
        return np.array([1.0, 0.0, 0.0])
    _, vectors = np.linalg.eigh(cov)
    return vectors[:, -1]


def line_in_mask(
    mask: np.ndarray, anchor: np.ndarray, direction: np.ndarray, max_length: float | None = None
) -> np.ndarray:
    """Int64 (N, 3): voxels of the line through ``anchor`` along ``direction`` inside ``mask``.

    Sampled every half voxel, rounded, and cut to the contiguous run around the anchor
    (the anchor must lie in ``mask``); ``max_length`` caps the length in voxels, half on
    each side. Consecutive duplicates are dropped; the run is 26-connected.
    """
    half = float(np.linalg.norm(mask.shape))
    if max_length is not None:
        half = min(half, max_length / 2.0)
    steps = np.arange(-np.floor(2 * half), np.floor(2 * half) + 1) / 2.0
    pts = np.rint(anchor + steps[:, None] * direction).astype(np.int64)
    inside = np.all((pts >= 0) & (pts < np.asarray(mask.shape)), axis=1)
    inside[inside] = mask[tuple(pts[inside].T)]
    centre = int(np.flatnonzero(steps == 0)[0])
    outside = np.flatnonzero(~inside)
    lo = outside[outside < centre].max(initial=-1) + 1
    hi = outside[outside > centre].min(initial=len(pts))
    run = pts[lo:hi]
    keep = np.ones(len(run), bool)
    keep[1:] = np.any(run[1:] != run[:-1], axis=1)
    return run[keep]


def medial_path(
    mask: np.ndarray, anchor: np.ndarray, axis: int | None, max_length: float | None = None
) -> np.ndarray:
    """Int64 (N, 3): the medial-axis voxels of ``mask`` connected to the one nearest ``anchor``.

    The skeleton (``skimage.morphology.skeletonize``) of the slice through the anchor
    across ``axis`` (in 2D), or of the whole mask when ``axis`` is None (in 3D); its
    voxels 26-connected (8 in a slice) to the skeleton voxel nearest the anchor, within a
    geodesic (chessboard) distance of ``max_length / 2`` along the skeleton when given.
    Raster order; empty when the skeleton is.
    """
    if axis is None:
        skeleton = skeletonize(mask)
    else:
        index: list[slice | int] = [slice(None)] * 3
        index[axis] = int(anchor[axis])
        skeleton = np.zeros_like(mask)
        skeleton[tuple(index)] = skeletonize(mask[tuple(index)])
    coords = np.argwhere(skeleton)
    if len(coords) == 0:
        return coords.astype(np.int64)
    start = np.zeros_like(skeleton)
    start[tuple(coords[np.argmin(((coords - anchor) ** 2).sum(axis=1))])] = True
    reach = 0 if max_length is None else max(int(max_length // 2), 1)
    path = ndimage.binary_dilation(start, STRUCTURE_26, iterations=reach, mask=skeleton)
    return np.argwhere(path).astype(np.int64)


def _in_slice(mask: np.ndarray, axis: int, index: int) -> np.ndarray:
    """``mask`` with every slice across ``axis`` but ``index`` cleared."""
    out = np.zeros_like(mask)
    cut: list[slice | int] = [slice(None)] * 3
    cut[axis] = index
    out[tuple(cut)] = mask[tuple(cut)]
    return out


def _stroke(
    comp: _Component,
    *,
    axis: int | None,
    max_offset: int,
    max_length: float | None,
    rng: np.random.Generator,
) -> Stroke:
    """The stroke through one error component: the longer of its principal-axis line and
    its medial path (see the module docstring)."""
    mask = comp.labels == comp.number
    deepest = component_centres(comp.labels, [comp.number])[0]
    anchor = _anchor(mask, deepest, max_offset, rng)
    if axis is not None:
        mask = _in_slice(mask, axis, int(anchor[axis]))
    direction = principal_axis(np.argwhere(mask).astype(np.float64))
    line = line_in_mask(mask, anchor, direction, max_length)
    path = medial_path(mask, anchor, axis, max_length)
    return Stroke(comp.label, path if len(path) > len(line) else line)


def error_strokes(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    rng: np.random.Generator,
    n: int = 1,
    axis: int | None = 2,
    max_offset: int = 0,
    max_length: float | None = None,
    allowed: np.ndarray | None = None,
) -> list[Stroke]:
    """One stroke through each of the ``n`` largest error components, largest first.

    Args:
        pred: int or bool (I, J, K) predicted labels.
        gt: int or bool (I, J, K) true labels, same shape.
        rng: draws the anchor offsets.
        n: strokes (error components) at most.
        axis: strokes lie in the slice through the anchor across this axis; None = 3D.
        max_offset: largest random anchor offset per axis, voxels (0 = the deepest voxel).
        max_length: longest stroke, voxels (None = across the whole component).
        allowed: bool (I, J, K) where strokes may be drawn (e.g. advice regions), or None.

    Returns:
        The strokes, each labelled with the true label of its component; fewer (or none)
        when there are fewer error components.
    """
    pred_a, gt_a = np.asarray(pred).astype(np.int64), np.asarray(gt).astype(np.int64)
    if gt_a.ndim != 3 or pred_a.shape != gt_a.shape:
        raise GeometryError(
            f"prediction {pred_a.shape} and ground truth {gt_a.shape} must be the same 3D shape"
        )
    if axis is not None and axis not in (0, 1, 2):
        raise ConfigError(f"stroke axis must be 0, 1, 2 or None, got {axis}")
    if n < 0 or max_offset < 0:
        raise ConfigError(f"n and max_offset must be >= 0, got {n} and {max_offset}")
    comps = _error_components(pred_a, gt_a, allowed)[:n]
    strokes = [
        _stroke(c, axis=axis, max_offset=max_offset, max_length=max_length, rng=rng) for c in comps
    ]
    logger.debug(
        "scribble user: %d strokes, %s voxels", len(strokes), [len(s.points) for s in strokes]
    )
    return strokes


def strokes_to_scribbles(strokes: Sequence[Stroke], shape: Sequence[int]) -> np.ndarray:
    """Int16 ``shape`` scribble label volume: stroke labels, -1 elsewhere (later wins)."""
    out = np.full(tuple(int(s) for s in shape), UNLABELED, np.int16)
    for stroke in strokes:
        out[tuple(stroke.points.T)] = stroke.label
    return out
