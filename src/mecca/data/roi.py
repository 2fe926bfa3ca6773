"""Regions of interest, and the crop that a network sees.

A :class:`Box` is a half-open ``[start, stop)`` voxel box in ``(i, j, k)`` order on the
original image grid. :func:`make_crop` cuts the box out of an image, resamples it to the
fixed network grid (default ``(55, 55, 30)``, i.e. in-plane, in-plane, slices) and
normalises it; :func:`prob_to_box`, :func:`paste_prob` and :func:`paste_mask` are its exact
inverse for the network's output.

Resampling convention
---------------------
Voxels are unit cubes centred on integer indices (``align_corners=False`` in torch terms):
the box's outer faces map onto the grid's outer faces. Along an axis with box length ``n``
and grid length ``m`` (scale ``s = n / m``), a grid coordinate ``g`` and an original
coordinate ``x`` are related by::

    x = start + (g + 0.5) * s - 0.5        g = (x - start + 0.5) / s - 0.5

:meth:`Crop.to_grid` and :meth:`Crop.to_original` use exactly these formulas (so they are
inverses of each other), and the trilinear resampling samples exactly these positions
(replicating edge values beyond the outermost voxel centres). Resampling uses
``torch.nn.functional.interpolate``, measured ~15x faster than ``scipy.ndimage`` for a
(60, 80, 60) -> (55, 55, 30) resample on CPU (0.5 ms against 7-8 ms) with identical values.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from mecca.errors import ConfigError, GeometryError, InputError

log = logging.getLogger(__name__)

Int3 = tuple[int, int, int]
DEFAULT_GRID: Int3 = (55, 55, 30)


def _int3(values: Sequence[int] | np.ndarray, name: str) -> Int3:
    seq = tuple(int(v) for v in np.asarray(values).reshape(-1))
    if len(seq) != 3:
        raise InputError(f"{name} needs 3 values (i, j, k), got {len(seq)}")
    return (seq[0], seq[1], seq[2])


def _check_volume(array: np.ndarray, name: str) -> None:
    if array.ndim != 3:
        raise InputError(f"{name} must be a 3D (i, j, k) array, got shape {array.shape}")


@dataclass(frozen=True)
class Box:
    """Half-open voxel box ``[start, stop)`` per axis, in (i, j, k) order; never empty."""

    start: Int3
    stop: Int3

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _int3(self.start, "Box.start"))
        object.__setattr__(self, "stop", _int3(self.stop, "Box.stop"))
        if any(b <= a for a, b in zip(self.start, self.stop, strict=True)):
            raise InputError(f"empty box: start {self.start}, stop {self.stop}")

    @property
    def shape(self) -> Int3:
        """Number of voxels per axis."""
        return _int3([b - a for a, b in zip(self.start, self.stop, strict=True)], "shape")

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        """Index with ``array[box.slices]`` to cut the box out of a volume."""
        return (
            slice(self.start[0], self.stop[0]),
            slice(self.start[1], self.stop[1]),
            slice(self.start[2], self.stop[2]),
        )

    def clip(self, shape: Sequence[int]) -> Box:
        """The part of the box inside a volume of ``shape``; InputError if none is."""
        shp = _int3(shape, "shape")
        start = [max(a, 0) for a in self.start]
        stop = [min(b, n) for b, n in zip(self.stop, shp, strict=True)]
        if any(b <= a for a, b in zip(start, stop, strict=True)):
            raise InputError(f"box {self.start}-{self.stop} lies outside a volume of shape {shp}")
        return Box(_int3(start, "start"), _int3(stop, "stop"))

    def grow(self, margin: int | Sequence[int] | np.ndarray) -> Box:
        """Grow by ``margin`` voxels (negative shrinks).

        ``margin`` is one int for all six sides, 3 values (per axis, both sides) or 6 values
        ``(before_i, before_j, before_k, after_i, after_j, after_k)``. Not clipped.
        """
        m = np.asarray(margin, dtype=np.int64).reshape(-1)
        if m.size == 1:
            m = np.repeat(m, 6)
        elif m.size == 3:
            m = np.concatenate([m, m])
        elif m.size != 6:
            raise InputError(f"margin needs 1, 3 or 6 values, got {m.size}")
        start = np.asarray(self.start) - m[:3]
        stop = np.asarray(self.stop) + m[3:]
        return Box(_int3(start, "start"), _int3(stop, "stop"))

    def union(self, other: Box) -> Box:
        """The smallest box holding both."""
        start = np.minimum(self.start, other.start)
        stop = np.maximum(self.stop, other.stop)
        return Box(_int3(start, "start"), _int3(stop, "stop"))

    def at_least(self, extent: Sequence[int], shape: Sequence[int]) -> Box:
        """This box widened about its centre to at least ``extent`` voxels per axis (the
        extra split between both sides, shifted inwards at a volume's edge), within a
        volume of ``shape``; an axis already that long, or the volume's whole length,
        stays as it is."""
        shp = _int3(shape, "shape")
        start, stop = list(self.start), list(self.stop)
        for axis in range(3):
            need = min(int(extent[axis]), shp[axis]) - (stop[axis] - start[axis])
            if need <= 0:
                continue
            start[axis] -= need // 2
            stop[axis] += need - need // 2
            shift = max(0, -start[axis]) - max(0, stop[axis] - shp[axis])
            start[axis], stop[axis] = start[axis] + shift, stop[axis] + shift
        return Box(_int3(start, "start"), _int3(stop, "stop"))

    def grown_to_hold(self, mask: np.ndarray, shape: Sequence[int]) -> Box | None:
        """This box grown by half its size (at least 1 voxel) on each side that ``mask``
        (the mask on this box, ``self.shape``) touches, except the sides at the edge of a
        volume of ``shape``, clipped to it; None when the mask touches no such side.

        The rule by which a session's ROI (and the CVPR 2025 protocol's, with
        ``grow_roi``) follows an object that goes on past it."""
        shp = _int3(shape, "shape")
        start, stop = list(self.start), list(self.stop)
        for axis in range(3):
            grow = max(1, math.ceil(0.5 * self.shape[axis]))
            if start[axis] > 0 and np.take(mask, 0, axis=axis).any():
                start[axis] = max(0, start[axis] - grow)
            if stop[axis] < shp[axis] and np.take(mask, -1, axis=axis).any():
                stop[axis] = min(shp[axis], stop[axis] + grow)
        if (tuple(start), tuple(stop)) == (self.start, self.stop):
            return None
        return Box(_int3(start, "start"), _int3(stop, "stop"))

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Bool (N,) whether each (N, 3) voxel coordinate rounds to a voxel inside the box."""
        idx = np.floor(np.asarray(points, dtype=np.float64).reshape(-1, 3) + 0.5)
        return np.all((idx >= self.start) & (idx < self.stop), axis=1)

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> Box:
        """Tight box around the non-zero voxels of a 3D mask; InputError if it has none."""
        _check_volume(mask, "mask")
        nonzero = [
            np.flatnonzero(np.any(mask, axis=tuple(a for a in range(3) if a != ax)))
            for ax in range(3)
        ]
        if nonzero[0].size == 0:
            raise InputError("mask is empty: no box can be drawn around it")
        start = _int3([n[0] for n in nonzero], "start")
        stop = _int3([n[-1] + 1 for n in nonzero], "stop")
        return cls(start, stop)

    @classmethod
    def around_points(
        cls,
        points: np.ndarray | Sequence[Sequence[float]],
        margin: int | Sequence[int],
        shape: Sequence[int],
    ) -> Box:
        """Box around (N, 3) voxel coordinates (e.g. the user's first clicks) plus a margin.

        Points are rounded to the nearest voxel; the box is clipped to ``shape``. Points
        outside the volume raise InputError.
        """
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
            raise InputError(f"points must be a non-empty (N, 3) array, got shape {pts.shape}")
        idx = np.floor(pts + 0.5).astype(np.int64)
        shp = np.asarray(_int3(shape, "shape"))
        if np.any(idx < 0) or np.any(idx >= shp):
            raise InputError(f"points outside a volume of shape {tuple(shp)}: {pts.tolist()}")
        box = cls(_int3(idx.min(axis=0), "start"), _int3(idx.max(axis=0) + 1, "stop"))
        return box.grow(margin).clip(shape)


def random_margin_box(
    mask: np.ndarray, rng: np.random.Generator, low: int = 1, high: int = 11
) -> Box:
    """Ground-truth box grown by an independent random margin in [low, high] on each side.

    This is the training/benchmark ROI of the MECCA paper; the result is clipped to the
    volume, so a side at the volume edge may get less margin than drawn.
    """
    if not 0 <= low <= high:
        raise ConfigError(f"need 0 <= low <= high for random margins, got {low}, {high}")
    margins = rng.integers(low, high + 1, size=6)
    return Box.from_mask(mask).grow(margins).clip(mask.shape)


# --------------------------------------------------------------------------- normalisation


@dataclass(frozen=True)
class NormaliseConfig:
    """How a crop's intensities are normalised.

    Modes:
        ``zscore``: per-crop ``(x - mean) / std`` (default; suits MR with arbitrary units).
        ``dataset``: ``(x - mean) / std`` with the given dataset-wide ``mean`` and ``std``.
        ``ct_window``: clip to ``[centre - width/2, centre + width/2]`` (Hounsfield units),
            then ``ct_output='unit'`` scales the window linearly to [0, 1] and
            ``ct_output='zscore'`` z-scores the windowed values within the crop.

    ``percentiles=(lo, hi)`` (in percent, e.g. (0.5, 99.5)) first clips the crop to its own
    percentiles, damping outliers before the ``zscore`` / ``dataset`` statistics.
    A constant crop z-scores to all zeros instead of dividing by zero.
    """

    mode: Literal["zscore", "dataset", "ct_window"] = "zscore"
    mean: float | None = None
    std: float | None = None
    window_centre: float = 40.0
    window_width: float = 400.0
    ct_output: Literal["unit", "zscore"] = "unit"
    percentiles: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("zscore", "dataset", "ct_window"):
            raise ConfigError(f"unknown normalisation mode {self.mode!r}")
        if self.mode == "dataset" and (self.mean is None or self.std is None or self.std <= 0):
            raise ConfigError("mode 'dataset' needs mean and a positive std")
        if self.mode == "ct_window" and self.window_width <= 0:
            raise ConfigError(f"CT window width must be positive, got {self.window_width}")
        if self.ct_output not in ("unit", "zscore"):
            raise ConfigError(f"unknown ct_output {self.ct_output!r}")
        if self.percentiles is not None:
            lo, hi = self.percentiles
            if not 0 <= lo < hi <= 100:
                raise ConfigError(f"percentiles must satisfy 0 <= lo < hi <= 100, got {lo}, {hi}")


def _zscore(x: np.ndarray) -> np.ndarray:
    mean = float(x.mean())
    std = float(x.std())
    if std <= 1e-8 * max(1.0, abs(mean)):
        return np.zeros_like(x)
    return (x - mean) / std


def normalise(array: np.ndarray, cfg: NormaliseConfig | None = None) -> np.ndarray:
    """Normalise intensities as ``cfg`` says; returns float32 of the same shape."""
    cfg = cfg or NormaliseConfig()
    x = np.asarray(array, dtype=np.float64)
    if x.size == 0:
        raise InputError("cannot normalise an empty array")
    if cfg.percentiles is not None:
        lo, hi = np.percentile(x, cfg.percentiles)
        x = np.clip(x, lo, hi)
    if cfg.mode == "zscore":
        out = _zscore(x)
    elif cfg.mode == "dataset":
        out = (x - float(cfg.mean or 0.0)) / float(cfg.std or 1.0)
    else:
        lo = cfg.window_centre - cfg.window_width / 2
        x = np.clip(x, lo, lo + cfg.window_width)
        out = (x - lo) / cfg.window_width if cfg.ct_output == "unit" else _zscore(x)
    return out.astype(np.float32)


_normalise_array = normalise  # make_crop's keyword argument shadows the function's name


# --------------------------------------------------------------------------- resampling


def resample(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Trilinear resample of a 3D array to ``shape`` (align_corners=False); float32 out."""
    _check_volume(np.asarray(array), "array")
    size = _int3(shape, "shape")
    if any(n <= 0 for n in size):
        raise InputError(f"cannot resample to shape {size}")
    src = np.ascontiguousarray(array, dtype=np.float32)
    if src.shape == size:
        return src.copy()
    t = torch.from_numpy(src)[None, None]
    with torch.no_grad():
        out = F.interpolate(t, size=size, mode="trilinear", align_corners=False)
    return np.ascontiguousarray(out[0, 0].numpy())


def resample_box(array: np.ndarray, box: Box, grid: Sequence[int] = DEFAULT_GRID) -> np.ndarray:
    """Cut ``box`` out of a 3D array and resample it trilinearly to ``grid``; float32 out.

    Used for images and, as a float probability, for masks.
    """
    _check_volume(array, "array")
    if box.clip(array.shape) != box:
        raise GeometryError(f"box {box.start}-{box.stop} exceeds the volume shape {array.shape}")
    return resample(array[box.slices], grid)


# --------------------------------------------------------------------------- crops


@dataclass(frozen=True, eq=False)
class Crop:
    """A box of an image resampled to the network grid.

    Attributes:
        image: float32 (*grid), normalised intensities on the network grid.
        box: the box on the original grid.
        source_shape: shape (I, J, K) of the original image.
        grid: network grid shape, (i, j, k) order.
        label: uint8 (*grid) binary mask on the network grid, or None.
    """

    image: np.ndarray
    box: Box
    source_shape: Int3
    grid: Int3
    label: np.ndarray | None = None

    def _scale(self) -> np.ndarray:
        return np.asarray(self.box.shape, dtype=np.float64) / np.asarray(self.grid)

    def to_grid(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 3) original voxel coordinates to float64 network-grid coordinates."""
        pts = _points(points)
        return (pts - np.asarray(self.box.start) + 0.5) / self._scale() - 0.5

    def to_original(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 3) network-grid coordinates to float64 original voxel coordinates."""
        pts = _points(points)
        return (pts + 0.5) * self._scale() - 0.5 + np.asarray(self.box.start)


def _points(points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim == 1 and pts.size == 3:
        pts = pts[None]
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise InputError(f"points must be an (N, 3) array, got shape {pts.shape}")
    return pts


def make_crop(
    image: np.ndarray,
    box: Box,
    grid: Sequence[int] = DEFAULT_GRID,
    *,
    label: np.ndarray | None = None,
    normalise: NormaliseConfig | None = None,
) -> Crop:
    """Cut ``box`` out of a 3D image, resample it to ``grid`` and normalise it.

    The image is resampled trilinearly and normalised afterwards (so the network input has
    exactly the configured statistics). A label (any non-zero = target) is resampled
    trilinearly as a float and thresholded at 0.5, which round-trips better than nearest
    neighbour.
    """
    _check_volume(image, "image")
    size = _int3(grid, "grid")
    if label is not None and label.shape != image.shape:
        raise GeometryError(f"label shape {label.shape} differs from image shape {image.shape}")
    cfg = normalise or NormaliseConfig()
    img = _normalise_array(resample_box(image, box, size), cfg)
    lab = None
    if label is not None:
        lab = (resample_box(label != 0, box, size) >= 0.5).astype(np.uint8)
    return Crop(image=img, box=box, source_shape=_int3(image.shape, "shape"), grid=size, label=lab)


def prob_to_box(crop: Crop, prob: np.ndarray) -> np.ndarray:
    """Resample a (*grid) network output back to the box's original-resolution shape.

    Trilinear, the exact inverse mapping of :func:`make_crop`; float32 of ``crop.box.shape``.
    """
    arr = np.asarray(prob)
    if arr.shape != crop.grid:
        raise GeometryError(f"prediction shape {arr.shape} differs from the crop grid {crop.grid}")
    return resample(arr, crop.box.shape)


def paste_prob(crop: Crop, prob: np.ndarray) -> np.ndarray:
    """Full-size float32 (source_shape) map: the resampled prediction inside the box, 0 out."""
    out = np.zeros(crop.source_shape, dtype=np.float32)
    out[crop.box.slices] = prob_to_box(crop, prob)
    return out


def paste_mask(crop: Crop, prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Full-size uint8 mask: resampled prediction ``> threshold`` inside the box, 0 out
    (SPEC: the final mask is p > 0.5, so the start state p = 0.5 is an empty mask)."""
    return (paste_prob(crop, prob) > threshold).astype(np.uint8)
