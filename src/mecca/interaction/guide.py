"""MECCA's interaction guide (Sec. 3.5): advice regions where the method is least confident.

The crop on the network grid is split into SLIC supervoxels (scikit-image), the method's
per-voxel action confidence is averaged in each supervoxel, and the ``n_regions``
supervoxels with the LOWEST mean confidence become the advice regions shown to the user
(label 1 = least confident). The simulated user of the ablation (Table 5) clicks only
inside them (see :mod:`mecca.interaction.users`).

SLIC settings and what they mean in scikit-image 0.26
-----------------------------------------------------
``slic`` first min-max rescales a single-channel image to [0, 1] (so z-scoring the crop
beforehand changes nothing), multiplies intensities by ``1 / compactness`` and clusters
with the squared distance ``(dI / compactness)^2 + |spacing * dx|^2 / S^2``, where ``S``
is the seed grid step in voxels. With ``compactness=0.1`` and ``spacing=(2, 2, 2)`` an
intensity difference of 20 % of the crop's range weighs as much as one seed step of
distance: supervoxels follow strong edges but stay compact in noise. Measured on a
z-scored 55 x 55 x 30 ball-in-noise crop: about 75 % of each supervoxel's bounding box is
filled (a cube fills 100 %), every supervoxel is connected and sizes stay within a factor
~2.5 of each other; ``compactness=0.01`` collapses to one or two segments (noise
dominates and connectivity enforcement merges the fragments), ``1`` and above give
plain cubes. So 0.1, the paper's value, is compact enough and still edge-aware.

Segment schedule
----------------
"About 100 segments at first, fewer in later steps": step ``t`` (1-based) asks SLIC for
``max(20, 100 // t)`` segments, i.e. 100, 50, 33, 25, 20, 20, ... SLIC places its seeds
on a regular grid, so the number it returns differs a little (108, 49, 32, 32, 18 on a
55 x 55 x 30 crop). Larger supervoxels later give the user fewer, coarser regions to check
once the obvious errors are fixed.

Supervoxels ahead of time
-------------------------
SLIC of a 55 x 55 x 30 crop costs ~170 ms on this 2-core CPU, more than the networks of a
step. It depends only on the crop image and the step number, so :class:`SupervoxelCache`
computes each segment count once per crop and can start the next step's SLIC in a
background thread (scikit-image releases the GIL) while the user is placing clicks. A
step that comes before the prefetch has finished waits for it: the cost is moved, never
hidden.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from skimage.segmentation import slic

from mecca.data.roi import Crop
from mecca.errors import ConfigError, GeometryError, InputError

logger = logging.getLogger(__name__)

SEGMENTS_FIRST = 100
"""Supervoxels asked for at step 1 (MECCA Sec. 3.5)."""
SEGMENTS_MIN = 20
"""Fewest supervoxels asked for at any later step."""


def segments_for_step(step: int) -> int:
    """Supervoxels asked of SLIC at interaction step ``step`` (1-based): max(20, 100 // step)."""
    if step < 1:
        raise ConfigError(f"interaction steps count from 1, got step={step}")
    return max(SEGMENTS_MIN, SEGMENTS_FIRST // int(step))


def _check_inputs(image: np.ndarray, confidence: np.ndarray, n_regions: int) -> None:
    if image.ndim != 3:
        raise InputError(f"image must be a 3D (i, j, k) array, got shape {image.shape}")
    if confidence.shape != image.shape:
        raise GeometryError(
            f"confidence shape {confidence.shape} differs from image shape {image.shape}"
        )
    if not (np.all(np.isfinite(image)) and np.all(np.isfinite(confidence))):
        raise InputError("image and confidence must be finite (no NaN or inf)")
    if n_regions < 1:
        raise ConfigError(f"n_regions must be >= 1, got {n_regions}")


def supervoxels(
    image: np.ndarray,
    n_segments: int,
    *,
    spacing: Sequence[float] = (2.0, 2.0, 2.0),
    compactness: float = 0.1,
) -> np.ndarray:
    """SLIC supervoxels of a single-channel 3D image; int32 (I, J, K) labels 1..n."""
    labels = slic(
        np.asarray(image, dtype=np.float32),
        n_segments=int(n_segments),
        compactness=float(compactness),
        spacing=np.asarray(spacing, dtype=np.float64),
        channel_axis=None,
        start_label=1,
    )
    return np.asarray(labels, dtype=np.int32)


_EXECUTOR: ThreadPoolExecutor | None = None
_EXECUTOR_LOCK = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """One background worker for all prefetches (SLIC is single-threaded)."""
    global _EXECUTOR
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None:
            _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mecca-slic")
        return _EXECUTOR


class SupervoxelCache:
    """SLIC label maps of one crop image, per segment count: each computed at most once,
    on demand (:meth:`get`) or ahead of time in a background thread (:meth:`prefetch`).

    Thread-safe; a failed computation re-raises its error from :meth:`get`.
    """

    def __init__(
        self,
        image: np.ndarray,
        *,
        spacing: Sequence[float] = (2.0, 2.0, 2.0),
        compactness: float = 0.1,
    ) -> None:
        img = np.asarray(image, dtype=np.float32)
        if img.ndim != 3 or not np.all(np.isfinite(img)):
            raise InputError(f"the image must be a finite 3D array, got shape {img.shape}")
        self.image = img
        self.spacing = tuple(float(s) for s in spacing)
        self.compactness = float(compactness)
        self._futures: dict[int, Future[np.ndarray]] = {}
        self._lock = threading.Lock()

    def _future(self, n_segments: int, background: bool) -> Future[np.ndarray]:
        if n_segments < 1:
            raise ConfigError(f"n_segments must be >= 1, got {n_segments}")
        with self._lock:
            future = self._futures.get(n_segments)
            if future is None:
                if background:
                    future = _executor().submit(self._compute, n_segments)
                else:
                    future = Future()
                    future.set_running_or_notify_cancel()
                self._futures[n_segments] = future
                fresh = not background
            else:
                fresh = False
        if fresh:  # compute here, outside the lock; other callers wait on the future
            try:
                future.set_result(self._compute(n_segments))
            except BaseException as err:
                future.set_exception(err)
        return future

    def _compute(self, n_segments: int) -> np.ndarray:
        return supervoxels(
            self.image, n_segments, spacing=self.spacing, compactness=self.compactness
        )

    def prefetch(self, n_segments: int) -> None:
        """Start computing ``n_segments`` supervoxels in the background (no-op if known)."""
        self._future(int(n_segments), background=True)

    def get(self, n_segments: int) -> np.ndarray:
        """The int32 label map for ``n_segments`` (computed now, or waited for)."""
        return self._future(int(n_segments), background=False).result()

    def computed(self) -> list[int]:
        """Segment counts whose label maps are ready."""
        with self._lock:
            return sorted(n for n, f in self._futures.items() if f.done())


def lowest_mean_regions(labels: np.ndarray, values: np.ndarray, n_regions: int) -> np.ndarray:
    """Relabel the ``n_regions`` labels of lowest mean ``values`` as 1..n, the rest 0.

    Args:
        labels: int (I, J, K) label map, labels >= 1 (0 voxels are ignored).
        values: float (I, J, K) values to average per label.
        n_regions: how many labels to keep.

    Returns:
        int32 (I, J, K): 1 = lowest mean, 2 = next, ...; 0 elsewhere. Ties go to the lower
        original label, so the result is deterministic.
    """
    flat = labels.ravel()
    counts = np.bincount(flat)
    sums = np.bincount(flat, weights=values.ravel().astype(np.float64), minlength=counts.size)
    means = np.full(counts.size, np.inf)
    present = counts > 0
    means[present] = sums[present] / counts[present]
    means[0] = np.inf  # label 0 is "no supervoxel", never advice
    order = np.argsort(means, kind="stable")
    keep = order[: min(int(n_regions), int(np.count_nonzero(present[1:])))]
    rank = np.zeros(counts.size, dtype=np.int32)
    rank[keep] = np.arange(1, keep.size + 1, dtype=np.int32)
    return rank[labels]


def advice_regions(
    image: np.ndarray,
    confidence: np.ndarray,
    *,
    step: int,
    n_regions: int = 5,
    n_segments: int | None = None,
    spacing: Sequence[float] = (2.0, 2.0, 2.0),
    compactness: float = 0.1,
    cache: SupervoxelCache | None = None,
) -> np.ndarray:
    """Advice regions of one interaction step: the least confident SLIC supervoxels.

    Args:
        image: float (I, J, K) crop intensities on the network grid (normalised or not:
            SLIC rescales to [0, 1] itself).
        confidence: float (I, J, K) per-voxel action confidence in [0, 1], same grid.
        step: interaction step (1-based); sets the segment count when ``n_segments`` is
            None (see :func:`segments_for_step`).
        n_regions: supervoxels returned as advice (5 in the paper).
        n_segments: SLIC segment count, overriding the schedule.
        spacing: SLIC's per-axis weight of spatial distance ([2, 2, 2] in the paper).
        compactness: SLIC compactness (0.1 in the paper; see the module docstring).
        cache: supervoxels of this image, reused or prefetched (its own ``spacing`` and
            ``compactness`` apply).

    Returns:
        int32 (I, J, K): 0 = no advice, 1..n = advice region, 1 = lowest mean confidence;
        at most ``n_regions`` labels.
    """
    img = np.asarray(image)
    conf = np.asarray(confidence)
    _check_inputs(img, conf, n_regions)
    count = segments_for_step(step) if n_segments is None else int(n_segments)
    if count < 1:
        raise ConfigError(f"n_segments must be >= 1, got {count}")
    if cache is None:
        labels = supervoxels(img, count, spacing=spacing, compactness=compactness)
    elif cache.image.shape != img.shape:
        raise GeometryError(f"supervoxel cache shape {cache.image.shape} != image {img.shape}")
    else:
        labels = cache.get(count)
    advice = lowest_mean_regions(labels, conf, n_regions)
    logger.debug(
        "advice: %d supervoxels asked, %d made, %d regions returned",
        count,
        int(labels.max()),
        int(advice.max()),
    )
    return advice


def _nearest_grid_index(length: int, grid: int) -> np.ndarray:
    """Int64 (length,): nearest network-grid index of each box voxel along one axis.

    Inverts the resampling convention of :mod:`mecca.data.roi` (voxel centres,
    ``g = (x - start + 0.5) / s - 0.5`` with ``s = length / grid``), rounding half up;
    positions are relative to the box start.
    """
    local = np.arange(length, dtype=np.float64)
    g = (local + 0.5) * (grid / length) - 0.5
    return np.clip(np.floor(g + 0.5).astype(np.int64), 0, grid - 1)


def advice_to_box(crop: Crop, advice: np.ndarray) -> np.ndarray:
    """Map an advice label map from the network grid to the crop's box on the original grid.

    Nearest neighbour (labels must not be blended): each box voxel takes the label of the
    network-grid voxel nearest to its centre.

    Args:
        crop: the crop the advice was computed on.
        advice: int (*crop.grid) labels, 0 = none.

    Returns:
        int32 (crop.box.shape) labels.
    """
    arr = np.asarray(advice)
    if arr.shape != crop.grid:
        raise GeometryError(f"advice shape {arr.shape} differs from the crop grid {crop.grid}")
    index = [_nearest_grid_index(n, m) for n, m in zip(crop.box.shape, crop.grid, strict=True)]
    return np.asarray(arr[np.ix_(*index)], dtype=np.int32)


def advice_to_original(crop: Crop, advice: np.ndarray) -> np.ndarray:
    """:func:`advice_to_box` pasted into the full original grid (int32, 0 outside the box)."""
    out = np.zeros(crop.source_shape, dtype=np.int32)
    out[crop.box.slices] = advice_to_box(crop, advice)
    return out
