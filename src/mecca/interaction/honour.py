"""Clicks honoured: after a step every foreground (background) click's voxel is in (out of)
the mask, with a small neighbourhood of like intensity.

A method's own output may contradict a click (a network can miss a foreground click's
voxel). :func:`honour_clicks` corrects a probability map after the method: in click order
(a later click wins), the clicked voxel, and the voxels within ``radius`` (Chebyshev) whose
intensity is within ``tolerance`` x the image's robust range (1st-99th percentile) of the
clicked voxel's, get probability 1 (foreground) or 0 (background). Edge and box clicks
carry no label of a voxel and are left alone. :func:`honoured_clicks` counts the clicks a
mask already honours (what the method gave, measured before the correction).

Positions are given on the array's own grid after subtracting ``offset`` (a box's start):
clicks that fall outside the array cannot be honoured and are returned as such.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mecca.interaction.clicks import Click, InteractionKind

LABEL_OF = {InteractionKind.FOREGROUND: True, InteractionKind.BACKGROUND: False}
"""The label a click gives its voxel (the kinds that give one)."""


def _local(
    click: Click, offset: Sequence[int], shape: Sequence[int]
) -> tuple[int, int, int] | None:
    p = tuple(int(v) - int(o) for v, o in zip(click.position, offset, strict=True))
    if any(v < 0 or v >= n for v, n in zip(p, shape, strict=True)):
        return None
    return p[0], p[1], p[2]


def honoured_clicks(
    mask: np.ndarray, clicks: Sequence[Click], offset: Sequence[int] = (0, 0, 0)
) -> tuple[int, int]:
    """(honoured, labelled): of the foreground/background clicks inside ``mask``'s array,
    how many have their label in ``mask`` (bool or 0/1)."""
    honoured = labelled = 0
    for click in clicks:
        label = LABEL_OF.get(click.kind)
        p = None if label is None else _local(click, offset, mask.shape)
        if p is None:
            continue
        labelled += 1
        honoured += int(bool(mask[p]) == label)
    return honoured, labelled


def honour_clicks(
    prob: np.ndarray,
    image: np.ndarray,
    clicks: Sequence[Click],
    *,
    offset: Sequence[int] = (0, 0, 0),
    radius: int = 1,
    tolerance: float = 0.1,
) -> tuple[np.ndarray, tuple[Click, ...]]:
    """A copy of ``prob`` in which every foreground/background click is honoured (module
    docstring), and the labelled clicks outside the array (not honoured)."""
    if prob.shape != image.shape:
        raise ValueError(f"prob {prob.shape} and image {image.shape} differ")
    out = np.array(prob, dtype=np.float32, copy=True)
    outside: list[Click] = []
    labelled = [c for c in clicks if c.kind in LABEL_OF]
    if not labelled:
        return out, ()
    lo, hi = np.percentile(image, [1.0, 99.0]) if image.size else (0.0, 0.0)
    tol = tolerance * float(hi - lo)
    for click in labelled:
        p = _local(click, offset, out.shape)
        if p is None:
            outside.append(click)
            continue
        value = 1.0 if LABEL_OF[click.kind] else 0.0
        near = tuple(
            slice(max(0, v - radius), min(n, v + radius + 1))
            for v, n in zip(p, out.shape, strict=True)
        )
        like = np.abs(image[near].astype(np.float64) - float(image[p])) <= tol
        out[near][like] = value
        out[p] = value
    return out, tuple(outside)
