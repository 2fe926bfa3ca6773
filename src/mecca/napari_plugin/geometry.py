"""Between napari layer data and MECCA's voxel indices: pure numpy, no napari needed.

The plugin keeps the image layer as the (I, J, K) array the user gave (``mecca.io.load``
gives it) and gives every layer it makes the image layer's scale and translate, so a
row of a points or shapes layer's ``data`` is directly a voxel index ``(i, j, k)``. napari
puts voxel centres at whole numbers (voxel ``i`` spans ``[i - 0.5, i + 0.5)``), so a
clicked position rounds to its voxel with ``floor(x + 0.5)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from mecca.errors import InputError

Corners = tuple[tuple[int, int, int], tuple[int, int, int]]
"""A box ``(start, stop)``, half-open voxel indices (i, j, k): ``mecca.data.roi.Box``'s
corners, kept apart from it so that this module loads no torch (the remote client)."""

KINDS = ("foreground", "background", "edge")
"""The click kinds the plugin offers, as MECCA names them."""

KIND_COLOURS = {"foreground": "lime", "background": "magenta", "edge": "yellow"}
"""Points layer face colour of each click kind."""


def voxel_of(point: Sequence[float] | np.ndarray) -> tuple[int, int, int]:
    """The voxel (i, j, k) holding a layer data position (nearest voxel centre)."""
    ijk = np.floor(np.asarray(point, dtype=np.float64)[-3:] + 0.5).astype(int)
    return int(ijk[0]), int(ijk[1]), int(ijk[2])


def points_to_clicks(data: np.ndarray, kinds: Sequence[str]) -> list[tuple[str, tuple[int, ...]]]:
    """``(kind, (i, j, k))`` of each row of a points layer's data, in row order."""
    rows = np.asarray(data, dtype=np.float64).reshape(-1, 3)
    if len(rows) != len(kinds):
        raise InputError(f"{len(rows)} points but {len(kinds)} click kinds")
    return [(str(kind), voxel_of(row)) for row, kind in zip(rows, kinds, strict=True)]


def new_clicks(
    placed: Sequence[tuple[str, tuple[int, ...]]], known: Sequence[tuple[str, tuple[int, ...]]]
) -> list[tuple[str, tuple[int, ...]]]:
    """The placed clicks the session does not hold yet (each counted once), in order."""
    seen = {(k, tuple(p)) for k, p in known}
    out: list[tuple[str, tuple[int, ...]]] = []
    for kind, position in placed:
        key = (kind, tuple(position))
        if key not in seen:
            seen.add(key)
            out.append(key)
    return out


def rectangle_to_box(vertices: np.ndarray, shape: Sequence[int]) -> Corners:
    """The ROI box of a rectangle drawn on one slice (a shapes layer row, (4, 3)).

    The rectangle covers the voxels whose centres it holds on its two axes; on the axis
    it is flat along (the slice), the box is as deep as the rectangle's mean side,
    centred on the slice, as the server does with a box drawn on one slice. Clipped to
    ``shape``.
    """
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    low, high = v.min(axis=0), v.max(axis=0)
    start = np.ceil(low).astype(int)  # the first and last voxel centres inside
    stop = np.floor(high).astype(int) + 1
    flat = [a for a in range(3) if high[a] - low[a] < 1.0]
    if len(flat) != 1:
        raise InputError(
            "draw the ROI as a rectangle on one slice",
            hint="select the ROI layer's rectangle tool in a 2D view",
        )
    axis = flat[0]
    sides = [stop[a] - start[a] for a in range(3) if a != axis]
    depth = max(1, int(round(float(np.mean(sides)))))
    centre = voxel_of(low)[axis]
    start[axis] = centre - depth // 2
    stop[axis] = start[axis] + depth
    start = np.maximum(start, 0)
    stop = np.minimum(stop, np.asarray(shape[:3]))
    if np.any(stop <= start):
        raise InputError("the rectangle is outside the image", hint="draw it on the image")
    return (int(start[0]), int(start[1]), int(start[2])), (int(stop[0]), int(stop[1]), int(stop[2]))


def box_rectangles(box: Corners, axis: int) -> list[np.ndarray]:
    """The box as one rectangle (4, 3) per slice along ``axis``, each framing the voxels
    (half a voxel out from the outer centres), to show it in a 2D view across ``axis``."""
    start, stop = box
    a, b = (x for x in range(3) if x != axis)
    corners = [
        (start[a] - 0.5, start[b] - 0.5),
        (start[a] - 0.5, stop[b] - 0.5),
        (stop[a] - 0.5, stop[b] - 0.5),
        (stop[a] - 0.5, start[b] - 0.5),
    ]
    out = []
    for s in range(start[axis], stop[axis]):
        rect = np.zeros((4, 3))
        rect[:, axis] = s
        rect[:, [a, b]] = corners
        out.append(rect)
    return out


OVERLAP_RULES = ("overwrite", "keep", "lock")
"""What a label value does where its mask meets another value (``mecca.session.labels``):
``overwrite`` takes the mask's voxels, ``keep`` only those holding 0 (or the value itself),
``lock`` is ``overwrite`` and, besides, no other value takes its voxels."""


def paint(
    base: np.ndarray,
    mask: np.ndarray | None,
    value: int,
    rule: str = "overwrite",
    locked: Iterable[int] = (),
) -> np.ndarray:
    """``base`` with the mask's voxels set to ``value`` (the labels layer's new data), by
    the value's overlap ``rule`` (:data:`OVERLAP_RULES`): a voxel of ``base`` holding a
    ``locked`` value other than ``value`` never changes; with ``keep`` only voxels holding
    0 or ``value`` take it. Every other voxel keeps ``base``'s value, so a voxel the mask
    leaves goes back to what it held in ``base``."""
    if rule not in OVERLAP_RULES:
        hint = f"one of {', '.join(OVERLAP_RULES)}"
        raise InputError(f"unknown overlap rule {rule!r}", hint=hint)
    out = base.copy()
    if mask is None:
        return out
    take = np.asarray(mask) > 0
    others = locked_others(base, locked, value)
    if others is not None:
        take &= ~others
    if rule == "keep":
        take &= (base == 0) | (base == value)
    out[take] = value
    return out


def locked_others(data: np.ndarray, locked: Iterable[int], value: int) -> np.ndarray | None:
    """Where ``data`` holds a ``locked`` value other than ``value`` (bool, ``data``'s shape),
    or None when no other value is locked."""
    others = sorted({int(v) for v in locked} - {int(value)})
    if not others:
        return None
    return np.isin(np.asarray(data), others)
