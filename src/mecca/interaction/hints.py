"""Hint maps: clicks turned into float32 image channels on the network grid.

Three encodings, each a function of a grid shape (or image) and integer (i, j, k) points:

* :func:`gaussian_map` (MECCA): the maximum of 3D Gaussians at the points, 1 at a point,
  0 far away. "Kernel size 8 voxels" (MECCA paper) is read as the width of the +-2 sigma
  band, so sigma = kernel_size / 4 = 2 voxels; the Gaussian is evaluated out to 3 sigma
  (where it is below 0.012) and is exactly 0 beyond. The maximum, not the sum, keeps the
  map in [0, 1] and makes accumulation over steps an exact element-wise maximum.
* :func:`euclidean_map`: Euclidean distance to the nearest point.
* :func:`geodesic_map` (IteR-MRL, DeepIGeoS): geodesic distance to the nearest point,
  the shortest path on the 26-neighbour voxel graph whose edge between neighbours p, q
  costs ``sqrt((1 - lamb) * |p - q|^2 + lamb * (I_p - I_q)^2)`` (|p - q| in voxels, or mm
  with ``spacing``). ``lamb = 1`` is the pure intensity-gradient distance of IteR-MRL,
  ``lamb = 0`` a 26-neighbour chamfer distance. Solved exactly by Dijkstra's algorithm
  (:func:`scipy.sparse.csgraph.dijkstra`). A vectorised raster scan (6 directional
  sweeps, repeated until nothing changes, which also gives the exact answer) was measured
  against it on a 55 x 55 x 30 grid with 5 seeds: equal at lamb < 1 (about 0.1 s each),
  but about 3 times slower at lamb = 1, where noisy paths need about 10 sweeps, so
  Dijkstra is kept.

Distances as the network sees them (``max_distance`` / :func:`normalise_distance`):
``min(d / scale, 1)``: 0 at a click, growing away from it, 1 = "far or no click". The
scale never depends on the clicks (by default the grid diagonal for Euclidean maps and
:func:`geodesic_scale` for geodesic ones), so the normalisation is monotone and
accumulating clicks over steps is an exact element-wise minimum of normalised maps.
With no points, raw distance maps are +inf and normalised maps are all 1.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import csgraph

from mecca.errors import ConfigError, GeometryError, InputError
from mecca.interaction.clicks import Click, InteractionKind

logger = logging.getLogger(__name__)

Points = Sequence[Sequence[int]] | np.ndarray
"""Integer voxel positions, (N, 3) array-like of (i, j, k)."""

_HALF_OFFSETS = [o for o in itertools.product((-1, 0, 1), repeat=3) if o > (0, 0, 0)]
"""The 13 neighbour offsets that cover each undirected 26-neighbour edge once."""


def _as_points(points: Points, shape: Sequence[int]) -> np.ndarray:
    """Int64 (N, 3) points, checked to be integral and inside ``shape``."""
    arr = np.asarray(points)
    if arr.size == 0:
        return np.empty((0, 3), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 3 or np.any(arr != np.round(arr)):
        raise InputError(f"points must be an (N, 3) list of integer (i, j, k), got {arr.shape}")
    pts = arr.astype(np.int64)
    if np.any(pts < 0) or np.any(pts >= np.asarray(shape)):
        raise GeometryError(f"points {pts.tolist()} are not all inside the grid {tuple(shape)}")
    return pts


def _as_spacing(spacing: Sequence[float] | None) -> np.ndarray:
    """Float64 (3,) voxel size; ones (voxel units) when None."""
    if spacing is None:
        return np.ones(3)
    sp = np.asarray(spacing, dtype=np.float64)
    if sp.shape != (3,) or np.any(~np.isfinite(sp)) or np.any(sp <= 0):
        raise InputError(f"spacing must be three positive numbers, got {spacing!r}")
    return sp


def _as_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """A 3D grid shape as a tuple of ints."""
    if len(shape) != 3:
        raise GeometryError(f"hint maps are 3D, got shape {tuple(shape)}")
    return (int(shape[0]), int(shape[1]), int(shape[2]))


def gaussian_map(
    shape: Sequence[int],
    points: Points,
    *,
    kernel_size: float = 8.0,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """Float32 ``shape``: maximum over points of unit-peak 3D Gaussians.

    Args:
        shape: grid (I, J, K).
        points: (N, 3) integer voxel positions; none gives an all-zero map.
        kernel_size: width of the +-2 sigma band (sigma = kernel_size / 4), in voxels, or in
            the units of ``spacing`` (mm) when it is given.
        spacing: voxel size per axis; None = isotropic voxel units.

    Each Gaussian is computed in its own box of +-ceil(3 sigma) voxels only.
    """
    grid = _as_shape(shape)
    pts = _as_points(points, grid)
    if kernel_size <= 0:
        raise ConfigError(f"kernel_size must be > 0, got {kernel_size}")
    sigma = kernel_size / 4.0 / _as_spacing(spacing)
    radius = np.ceil(3.0 * sigma).astype(np.int64)
    out = np.zeros(grid, dtype=np.float32)
    for p in pts:
        lo = np.maximum(p - radius, 0)
        hi = np.minimum(p + radius + 1, grid)
        g = [
            np.exp(-0.5 * ((np.arange(lo[a], hi[a]) - p[a]) / sigma[a]) ** 2).astype(np.float32)
            for a in range(3)
        ]
        block = g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]
        view = out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        np.maximum(view, block, out=view)
    return out


def normalise_distance(distance: np.ndarray, scale: float) -> np.ndarray:
    """Float32 ``min(distance / scale, 1)``: 0 at a click, 1 far away (inf -> 1)."""
    if not scale > 0:
        raise ConfigError(f"a distance scale must be > 0, got {scale}")
    return np.minimum(np.asarray(distance, dtype=np.float64) / scale, 1.0).astype(np.float32)


def _finish(distance: np.ndarray, max_distance: float | None) -> np.ndarray:
    """Raw float32 distances, or normalised by ``max_distance`` when given."""
    if max_distance is None:
        return distance.astype(np.float32)
    return normalise_distance(distance, max_distance)


def grid_diagonal(shape: Sequence[int], spacing: Sequence[float] | None = None) -> float:
    """Length of the grid's corner-to-corner diagonal (voxels, or mm with spacing).

    The largest Euclidean distance between two voxels: the default scale of Euclidean
    hint maps, so that they fill [0, 1] without clipping.
    """
    extent = (np.asarray(_as_shape(shape)) - 1) * _as_spacing(spacing)
    return max(float(np.linalg.norm(extent)), 1.0)


def euclidean_map(
    shape: Sequence[int],
    points: Points,
    *,
    spacing: Sequence[float] | None = None,
    max_distance: float | None = None,
) -> np.ndarray:
    """Float32 ``shape``: Euclidean distance to the nearest point.

    Args:
        shape: grid (I, J, K).
        points: (N, 3) integer voxel positions; none gives +inf (or 1 when normalised).
        spacing: voxel size per axis, distances then in mm; None = voxel units.
        max_distance: when given, return ``min(d / max_distance, 1)`` instead of ``d``.
    """
    grid = _as_shape(shape)
    pts = _as_points(points, grid)
    if len(pts) == 0:
        return _finish(np.full(grid, np.inf), max_distance)
    free = np.ones(grid, dtype=bool)
    free[tuple(pts.T)] = False
    d = ndimage.distance_transform_edt(free, sampling=_as_spacing(spacing))
    return _finish(d, max_distance)


def _shifted_pairs(
    shape: tuple[int, int, int], offset: tuple[int, ...]
) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices (a, b) such that voxel ``a[x]`` + ``offset`` is voxel ``b[x]``."""
    a = tuple(slice(max(-o, 0), n - max(o, 0)) for o, n in zip(offset, shape, strict=True))
    b = tuple(slice(max(o, 0), n - max(-o, 0)) for o, n in zip(offset, shape, strict=True))
    return a, b


class GeodesicGraph:
    """The 26-neighbour voxel graph of one image, for geodesic distances to seed points.

    Build it once per image and ask for distances to several seed sets (the fg and bg
    channels, every step of an episode). Edge costs: see the module docstring.

    Args:
        image: float (I, J, K) intensities (normalised as the network sees them).
        spacing: voxel size per axis (mm); None = voxel units.
        lamb: weight of the intensity term in [0, 1]; 1 = pure intensity distance.
    """

    def __init__(
        self, image: np.ndarray, *, spacing: Sequence[float] | None = None, lamb: float = 1.0
    ):
        img = np.asarray(image, dtype=np.float64)
        if img.ndim != 3:
            raise GeometryError(f"geodesic maps need a 3D image, got shape {img.shape}")
        if not np.all(np.isfinite(img)):
            raise InputError("the image has NaN or infinite values; cannot compute geodesics")
        if not 0.0 <= lamb <= 1.0:
            raise ConfigError(f"lamb must be in [0, 1], got {lamb}")
        self.shape = _as_shape(img.shape)
        self._graph = self._build(img, _as_spacing(spacing), lamb)

    def _build(self, img: np.ndarray, spacing: np.ndarray, lamb: float) -> sparse.csr_matrix:
        """Sparse (V, V) matrix of edge costs, each undirected edge stored once."""
        dtype = np.int32 if img.size < 2**31 else np.int64  # csgraph wants int32 indices
        index = np.arange(img.size, dtype=dtype).reshape(img.shape)
        rows, cols, costs = [], [], []
        for offset in _HALF_OFFSETS:
            a, b = _shifted_pairs(self.shape, offset)
            step2 = float(((np.asarray(offset) * spacing) ** 2).sum())
            diff = img[b] - img[a]
            costs.append(np.sqrt((1.0 - lamb) * step2 + lamb * diff * diff).ravel())
            rows.append(index[a].ravel())
            cols.append(index[b].ravel())
        # Explicit zero costs (flat regions at lamb = 1) stay edges in csgraph.
        return sparse.csr_matrix(
            (np.concatenate(costs), (np.concatenate(rows), np.concatenate(cols))),
            shape=(img.size, img.size),
        )

    def distance(self, points: Points) -> np.ndarray:
        """Float32 (I, J, K) geodesic distance to the nearest point (+inf with no points)."""
        pts = _as_points(points, self.shape)
        if len(pts) == 0:
            return np.full(self.shape, np.inf, dtype=np.float32)
        seeds = np.unique(np.ravel_multi_index(tuple(pts.T), self.shape))
        d = csgraph.dijkstra(self._graph, directed=False, indices=seeds, min_only=True)
        return np.asarray(d, dtype=np.float32).reshape(self.shape)


def geodesic_map(
    image: np.ndarray,
    points: Points,
    *,
    spacing: Sequence[float] | None = None,
    lamb: float = 1.0,
    max_distance: float | None = None,
) -> np.ndarray:
    """Float32 (I, J, K): geodesic distance on ``image`` to the nearest point.

    Args:
        image: float (I, J, K) intensities.
        points: (N, 3) integer voxel positions; none gives +inf (or 1 when normalised).
        spacing: voxel size per axis (mm) for the Euclidean step term; None = voxels.
        lamb: intensity weight in [0, 1] (1 = IteR-MRL's intensity-gradient distance).
        max_distance: when given, return ``min(d / max_distance, 1)`` instead of ``d``.
    """
    d = GeodesicGraph(image, spacing=spacing, lamb=lamb).distance(points)
    return _finish(d, max_distance)


def geodesic_scale(
    image: np.ndarray, *, spacing: Sequence[float] | None = None, lamb: float = 1.0
) -> float:
    """Default normalising scale of geodesic maps of ``image`` (click-independent).

    The geodesic length of the grid diagonal for an image whose every voxel step changes
    the intensity by the image's mean absolute axis-neighbour difference ``g``:
    ``sqrt((1 - lamb) * L^2 + lamb * (g * N)^2)``, with L the diagonal in mm (voxels without
    spacing) and N in voxels. Falls back to 1 for a constant image at lamb = 1 (all
    distances are then 0).
    """
    img = np.asarray(image, dtype=np.float64)
    g = float(np.mean([np.abs(np.diff(img, axis=a)).mean() for a in range(3) if img.shape[a] > 1]))
    n_diag = grid_diagonal(img.shape)
    length = grid_diagonal(img.shape, spacing)
    scale = float(np.sqrt((1.0 - lamb) * length**2 + lamb * (g * n_diag) ** 2))
    return scale if scale > 0 else 1.0


_ENCODINGS = ("gaussian", "euclidean", "geodesic")
_CHANNELS = {
    "edge": (InteractionKind.EDGE,),
    "fg_bg": (InteractionKind.FOREGROUND, InteractionKind.BACKGROUND),
}


@dataclass(frozen=True)
class HintEncoder:
    """Turns the clicks of an episode into hint channels (C, I, J, K), float32.

    MECCA: ``HintEncoder("gaussian", "edge")``, one channel from EDGE clicks.
    IteR-MRL: ``HintEncoder("geodesic", "fg_bg")``, channels h+ (FOREGROUND clicks) and
    h- (BACKGROUND clicks). Gaussian maps are in [0, 1] with 1 at clicks and 0 = no click;
    distance maps are normalised to [0, 1] with 0 at clicks and 1 = far / no click (see the
    module docstring). A click of a kind the channels do not encode raises InputError
    (convert EDGE clicks with ``clicks.edge_clicks_to_fg_bg`` first).
    """

    encoding: str = "gaussian"
    """'gaussian', 'euclidean' or 'geodesic'."""
    channels: str = "edge"
    """'edge' (1 channel of EDGE clicks) or 'fg_bg' (2 channels: FOREGROUND, BACKGROUND)."""
    kernel_size: float = 8.0
    """Gaussian +-2 sigma width, voxels (mm when a spacing is passed)."""
    lamb: float = 1.0
    """Geodesic intensity weight in [0, 1]."""
    distance_scale: float | None = None
    """Distance that maps to 1; None = grid diagonal (Euclidean) or geodesic_scale()."""

    def __post_init__(self) -> None:
        if self.encoding not in _ENCODINGS:
            raise ConfigError(
                f"unknown hint encoding {self.encoding!r}", hint=f"use one of {_ENCODINGS}"
            )
        if self.channels not in _CHANNELS:
            raise ConfigError(
                f"unknown hint channels {self.channels!r}", hint=f"use one of {tuple(_CHANNELS)}"
            )
        if self.kernel_size <= 0 or not 0.0 <= self.lamb <= 1.0:
            raise ConfigError("kernel_size must be > 0 and lamb in [0, 1]")
        if self.distance_scale is not None and not self.distance_scale > 0:
            raise ConfigError(f"distance_scale must be > 0, got {self.distance_scale}")

    @property
    def kinds(self) -> tuple[InteractionKind, ...]:
        """The click kind of each channel, in channel order."""
        return _CHANNELS[self.channels]

    @property
    def n_channels(self) -> int:
        """Number of hint channels C."""
        return len(self.kinds)

    def empty(self, image: np.ndarray) -> np.ndarray:
        """Float32 (C, I, J, K) maps with no clicks: 0 for Gaussian, 1 for distances."""
        shape = _as_shape(np.shape(image))
        fill = 0.0 if self.encoding == "gaussian" else 1.0
        return np.full((self.n_channels, *shape), fill, dtype=np.float32)

    def encode(
        self,
        image: np.ndarray,
        clicks: Sequence[Click],
        *,
        spacing: Sequence[float] | None = None,
    ) -> np.ndarray:
        """Float32 (C, I, J, K) maps of all ``clicks`` so far on ``image`` (I, J, K)."""
        return self.update(self.empty(image), image, clicks, spacing=spacing)

    def update(
        self,
        prev_maps: np.ndarray,
        image: np.ndarray,
        new_clicks: Sequence[Click],
        *,
        spacing: Sequence[float] | None = None,
    ) -> np.ndarray:
        """Maps of the previous clicks combined with ``new_clicks``; a new array.

        Exactly equal to :meth:`encode` over all clicks (element-wise maximum for
        Gaussian maps, minimum for normalised distances, whose scale does not depend on
        the clicks), provided ``image`` and ``spacing`` are the same at every step.
        """
        out = np.array(prev_maps, dtype=np.float32)
        if out.shape != (self.n_channels, *np.shape(image)):
            raise GeometryError(
                f"previous hint maps {out.shape} do not fit {self.n_channels} channels of an "
                f"image {np.shape(image)}"
            )
        groups = self._group(new_clicks)
        logger.debug("%s hints: %s new clicks per channel", self.encoding, [len(g) for g in groups])
        if not any(len(g) for g in groups):
            return out
        make = self._map_maker(image, spacing)
        combine = np.maximum if self.encoding == "gaussian" else np.minimum
        for channel, points in zip(out, groups, strict=True):
            if len(points):
                combine(channel, make(points), out=channel)
        return out

    def _group(self, clicks: Sequence[Click]) -> list[list[tuple[int, int, int]]]:
        """Click positions per channel; InputError for a kind no channel encodes."""
        groups: list[list[tuple[int, int, int]]] = [[] for _ in self.kinds]
        for click in clicks:
            if click.kind not in self.kinds:
                raise InputError(
                    f"{click.kind.value} clicks cannot be encoded by '{self.channels}' hint "
                    f"channels",
                    hint="convert edge clicks with edge_clicks_to_fg_bg, or change channels",
                )
            groups[self.kinds.index(click.kind)].append(click.position)
        return groups

    def _map_maker(
        self, image: np.ndarray, spacing: Sequence[float] | None
    ) -> Callable[[Points], np.ndarray]:
        """A function points -> one normalised map on ``image``'s grid."""
        shape = _as_shape(np.shape(image))
        if self.encoding == "gaussian":
            return lambda pts: gaussian_map(
                shape, pts, kernel_size=self.kernel_size, spacing=spacing
            )
        if self.encoding == "euclidean":
            scale = self.distance_scale or grid_diagonal(shape, spacing)
            return lambda pts: euclidean_map(shape, pts, spacing=spacing, max_distance=scale)
        graph = GeodesicGraph(image, spacing=spacing, lamb=self.lamb)
        scale = self.distance_scale or geodesic_scale(image, spacing=spacing, lamb=self.lamb)
        return lambda pts: normalise_distance(graph.distance(pts), scale)
