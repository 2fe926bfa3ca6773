"""Segmentation and interaction metrics, with every convention in one place.

Masks and grids
    Arrays are indexed (i, j, k). Masks are read as boolean (non-zero = foreground);
    ``pred`` and ``gt`` must have the same shape. ``spacing`` is the voxel size in mm
    along (i, j, k); ``spacing=None`` means distances in voxel units.

Dice
    ``2 |P & G| / (|P| + |G|)`` in [0, 1]. Both masks empty -> 1.0 (nothing to find and
    nothing found); exactly one empty -> 0.0.

Surfaces and distances
    The surface of a mask is the set of its voxels with at least one 6-neighbour (face
    connectivity) outside the mask: ``mask & ~binary_erosion(mask, 6-connectivity,
    border_value=0)``. It is a 3D boundary, and the outside of the volume counts as
    background, so an object touching the volume border has a surface there. The distance
    of a surface voxel of one mask is the Euclidean distance (centre to centre, scaled by
    ``spacing``) to the nearest surface voxel of the other mask; a voxel lying on both
    surfaces has distance 0. This is the definition of MONAI's ``get_mask_edges`` +
    ``get_surface_distance`` (euclidean, no sub-voxel edges).

ASSD and HD95
    Both pool the distances of the two directions (pred -> gt and gt -> pred) into one set.
    ASSD is the mean of the pooled set (sum of both directions / total count), identical
    to MONAI's ``compute_average_surface_distance(symmetric=True)``. HD95 is the 95th
    percentile of the pooled set with numpy's linear interpolation; note that MONAI's
    ``compute_hausdorff_distance(percentile=95)`` instead takes the maximum of the two
    directed 95th percentiles, which is never smaller. Both masks empty -> 0.0; exactly one
    empty -> ``inf`` (callers report it as a failure); never an exception.

Interaction curves
    A Dice curve is a sequence whose element 0 is the Dice before any click and element t
    the Dice after step t; ``clicks_per_step`` gives the clicks spent at each element (0
    for element 0). ``clicks_to_reach`` returns the cumulative clicks at the first element
    whose Dice >= threshold, or None when it is never reached (a failure). ``noc``
    averages over cases with failures counted as ``max_clicks`` (as in the interactive
    segmentation literature, e.g. NoC@85 / NoC@90); reaching the threshold only after more
    than ``max_clicks`` clicks is also a failure.
    ``per_step_improvement`` is ``diff`` of the curve: entry t-1 is Dice(t) - Dice(t-1),
    so the first entry is relative to the initial Dice (element 0).
    ``dice_auc`` is the mean of the curve's values: the area under the step-function
    Dice-vs-step curve divided by its number of steps, in [0, 1].
    ``stability`` returns (share of transitions where Dice fell, mean size of those falls;
    0.0 when none fell).

CVPR 2025 interactive-3D protocol (``surface_dice``, ``nsd_cvpr25``, ``auc_trapezoid``)
    Scores as the organisers of the CVPR 2025 challenge "Foundation Models for Interactive
    3D Biomedical Image Segmentation" compute them (their ``CVPR25_iter_eval.py`` and
    ``SurfaceDice.py``, which is DeepMind's surface-distance code). The **normalised surface
    Dice** (NSD) works on *surfels*, not on surface voxels: the surface is cut into the
    cells of the grid of voxel corners (each cell a 2x2x2 block of voxels, the volume
    padded with background); a cell whose 8 voxels are neither all in nor all out of the
    mask is a surfel, weighted by the area in mm^2 of the marching-cubes surface inside it
    (classic Lorensen-Cline cases: a cell with more than 4 voxels in gets the area of its
    complement). The distance of a surfel is the Euclidean distance (mm, via ``spacing``)
    from its centre to the nearest surfel centre of the other mask, and
    ``NSD = (area of pred surfels within tolerance of gt + area of gt surfels within
    tolerance of pred) / (total area of both)``, "within" meaning ``<= tolerance_mm``
    (2 mm in the challenge). MONAI's ``compute_surface_dice`` gives the same number with
    ``use_subvoxels=True``; its default counts surface voxels instead, each with weight 1,
    which can differ by several points. Both masks empty -> 1.0, one empty -> 0.0.
    ``nsd_cvpr25`` adds the organisers' rule: the NSD of a step is computed only when its
    Dice is > 0.2, else it is 0.0. For a label map, the Dice and the NSD are the means over
    the non-zero labels present in gt, and the rule tests the mean Dice. A case has 6 steps
    (the box prediction, then one per click for 5 clicks); ``DSC_AUC`` / ``NSD_AUC`` are
    the trapezoid rule with unit spacing over the **last 5** steps only (the click steps:
    the organisers leave the box step out as the box is optional), so they lie in [0, 4];
    ``DSC_Final`` / ``NSD_Final`` are the last step's values (``cvpr25_scores``).

Interactive misunderstanding (Definition 1 of the MECCA paper)
    A voxel is misunderstood in a step when its probability moved against its label:
    ``p_next - p_prev > tol`` on background (gt = 0) or ``< -tol`` on foreground
    (gt = 1). Voxels whose probability moved by at most ``tol`` (in particular unchanged
    voxels, Delta = 0) are NOT misunderstood: the definition's sign(0) != sign(y) would
    otherwise count every converged voxel. The rate divides by all voxels, or with
    ``among_moved=True`` by the voxels that moved by more than ``tol`` (0.0 when none did).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy import ndimage

Spacing = Sequence[float] | np.ndarray

__all__ = [
    "assd",
    "auc_trapezoid",
    "clicks_to_reach",
    "cvpr25_scores",
    "dice",
    "dice_auc",
    "dsc_nsd_cvpr25",
    "evaluate",
    "hd95",
    "misunderstanding_rate",
    "noc",
    "nsd_cvpr25",
    "per_step_improvement",
    "stability",
    "surface_dice",
    "surface_distances",
    "surface_voxels",
]


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as bool arrays of the same shape (ValueError otherwise)."""
    p, g = np.asarray(pred).astype(bool, copy=False), np.asarray(gt).astype(bool, copy=False)
    if p.shape != g.shape:
        raise ValueError(f"pred and gt shapes differ: {p.shape} vs {g.shape}")
    return p, g


def _spacing(spacing: Spacing | None, ndim: int) -> tuple[float, ...] | None:
    """Validated spacing (positive, one value per axis) or None for voxel units."""
    if spacing is None:
        return None
    s = tuple(float(v) for v in np.asarray(spacing, dtype=np.float64).ravel())
    if len(s) != ndim or not all(np.isfinite(v) and v > 0 for v in s):
        raise ValueError(f"spacing must be {ndim} positive finite values, got {spacing!r}")
    return s


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice overlap of two masks in [0, 1]; both empty -> 1.0, one empty -> 0.0."""
    p, g = _pair(pred, gt)
    denom = np.count_nonzero(p) + np.count_nonzero(g)
    if denom == 0:
        return 1.0
    return 2.0 * np.count_nonzero(p & g) / denom


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Bool mask of the voxels of ``mask`` with a face neighbour outside it (or outside the
    volume: the border counts as background)."""
    m = np.asarray(mask).astype(bool, copy=False)
    structure = ndimage.generate_binary_structure(m.ndim, 1)
    return m & ~ndimage.binary_erosion(m, structure=structure, border_value=0)


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """Slices of ``mask``'s bounding box grown by ``margin`` voxels (clipped to the array),
    or None for an empty mask. Per-axis projections: cheaper than argwhere or
    ``ndimage.find_objects`` on big volumes."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(ax for ax in range(mask.ndim) if ax != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        if idx.size == 0:
            return None
        box.append(slice(max(int(idx[0]) - margin, 0), int(idx[-1]) + margin + 1))
    return tuple(box)


def _directed(
    src_surface: np.ndarray, dst_surface: np.ndarray, spacing: tuple[float, ...] | None
) -> np.ndarray:
    """Distance from each voxel of ``src_surface`` to the nearest voxel of ``dst_surface``."""
    edt = ndimage.distance_transform_edt(~dst_surface, sampling=spacing)
    return np.asarray(edt)[src_surface].astype(np.float64)


def surface_distances(
    pred: np.ndarray, gt: np.ndarray, spacing: Spacing | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distances pred-surface -> gt-surface and gt-surface -> pred-surface.

    Returns two 1-D float64 arrays (mm when ``spacing`` is given, else voxels), one entry
    per surface voxel in C order. A direction whose target surface is empty gives ``inf``
    for each source voxel; an empty source gives an empty array. The work is done on the
    bounding box of both masks padded by one background voxel, which leaves the surfaces
    (the border counts as background anyway) and all distances unchanged.
    """
    p, g = _pair(pred, gt)
    sp = _spacing(spacing, p.ndim)
    if not p.any() and not g.any():
        return np.zeros(0), np.zeros(0)
    box = bounding_box(p | g)
    assert box is not None  # one of the masks is non-empty
    sp_, sg = (surface_voxels(np.pad(m[box], 1)) for m in (p, g))
    if not sg.any():
        return np.full(np.count_nonzero(sp_), np.inf), np.zeros(0)
    if not sp_.any():
        return np.zeros(0), np.full(np.count_nonzero(sg), np.inf)
    return _directed(sp_, sg, sp), _directed(sg, sp_, sp)


def _pooled(d_pg: np.ndarray, d_gp: np.ndarray) -> np.ndarray:
    return np.concatenate([d_pg, d_gp])


def _assd_from(d_pg: np.ndarray, d_gp: np.ndarray) -> float:
    """Mean of the pooled distances; 0.0 when both are empty (both masks empty)."""
    pooled = _pooled(d_pg, d_gp)
    return float(pooled.mean()) if pooled.size else 0.0


def _hd95_from(d_pg: np.ndarray, d_gp: np.ndarray) -> float:
    """95th percentile (linear) of the pooled distances; inf if any is inf, 0.0 if none."""
    pooled = _pooled(d_pg, d_gp)
    if pooled.size == 0:
        return 0.0
    if np.isinf(pooled).any():
        return float("inf")
    return float(np.percentile(pooled, 95.0))


def assd(pred: np.ndarray, gt: np.ndarray, spacing: Spacing | None = None) -> float:
    """Average symmetric surface distance (pooled mean); 0.0 both empty, inf one empty."""
    return _assd_from(*surface_distances(pred, gt, spacing))


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: Spacing | None = None) -> float:
    """95th percentile of the pooled surface distances; 0.0 both empty, inf one empty."""
    return _hd95_from(*surface_distances(pred, gt, spacing))


def evaluate(
    pred: np.ndarray, gt: np.ndarray, spacing: Spacing | None = None
) -> dict[str, float | int]:
    """All mask metrics of one case.

    Keys: ``dice``, ``assd_vox``, ``hd95_vox``, ``tp``, ``fp``, ``fn`` (voxel counts), and
    when ``spacing`` (mm) is given also ``assd_mm``, ``hd95_mm``, ``volume_pred_ml``,
    ``volume_gt_ml``. Distances are ``inf`` when exactly one mask is empty.
    """
    p, g = _pair(pred, gt)
    sp = _spacing(spacing, p.ndim)
    out: dict[str, float | int] = {
        "dice": dice(p, g),
        "tp": int(np.count_nonzero(p & g)),
        "fp": int(np.count_nonzero(p & ~g)),
        "fn": int(np.count_nonzero(~p & g)),
    }
    d_vox = surface_distances(p, g)
    out["assd_vox"], out["hd95_vox"] = _assd_from(*d_vox), _hd95_from(*d_vox)
    if sp is not None:
        d_mm = surface_distances(p, g, sp)
        out["assd_mm"], out["hd95_mm"] = _assd_from(*d_mm), _hd95_from(*d_mm)
        voxel_ml = float(np.prod(sp)) / 1000.0
        out["volume_pred_ml"] = np.count_nonzero(p) * voxel_ml
        out["volume_gt_ml"] = np.count_nonzero(g) * voxel_ml
    return out


def _curve(dice_per_step: Sequence[float]) -> np.ndarray:
    """A Dice curve as a 1-D float64 array (ValueError when empty)."""
    d = np.asarray(dice_per_step, dtype=np.float64).ravel()
    if d.size == 0:
        raise ValueError("empty Dice curve")
    return d


def clicks_to_reach(
    dice_per_step: Sequence[float], clicks_per_step: Sequence[int], threshold: float
) -> int | None:
    """Cumulative clicks at the first step whose Dice >= ``threshold``; None when never.

    Element t of both sequences belongs to the same step (element 0 is the initial state,
    usually with 0 clicks).
    """
    d = _curve(dice_per_step)
    c = np.asarray(clicks_per_step, dtype=np.int64).ravel()
    if c.shape != d.shape:
        raise ValueError(f"{d.size} Dice values but {c.size} click counts")
    reached = np.flatnonzero(d >= threshold)
    if reached.size == 0:
        return None
    return int(np.cumsum(c)[reached[0]])


def noc(
    curves: Sequence[Sequence[float]],
    clicks: Sequence[Sequence[int]],
    threshold: float,
    max_clicks: int,
) -> dict[str, float | int | list[int | None]]:
    """Number of clicks to reach ``threshold`` over cases (NoC@threshold).

    Returns ``noc`` (mean over cases, failures counted as ``max_clicks``), ``failures``
    (cases that never reached the threshold within ``max_clicks`` clicks), ``cases`` and
    ``per_case`` (clicks, or None for a failure). ``noc`` is nan when there are no cases.
    """
    if len(curves) != len(clicks):
        raise ValueError(f"{len(curves)} curves but {len(clicks)} click sequences")
    per_case: list[int | None] = []
    for curve, case_clicks in zip(curves, clicks, strict=True):
        n = clicks_to_reach(curve, case_clicks, threshold)
        per_case.append(n if n is not None and n <= max_clicks else None)
    counted = [max_clicks if n is None else n for n in per_case]
    return {
        "noc": float(np.mean(counted)) if counted else float("nan"),
        "failures": sum(n is None for n in per_case),
        "cases": len(per_case),
        "per_case": per_case,
    }


def per_step_improvement(dice_per_step: Sequence[float]) -> np.ndarray:
    """Dice gain of each step, shape (n - 1,): entry t-1 = Dice(t) - Dice(t-1), element 0
    of the input being the initial Dice."""
    return np.diff(_curve(dice_per_step))


def dice_auc(dice_per_step: Sequence[float]) -> float:
    """Mean Dice over the curve: area under the step-function Dice curve / steps, in [0, 1]."""
    return float(_curve(dice_per_step).mean())


def stability(dice_per_step: Sequence[float]) -> tuple[float, float]:
    """(share of transitions where Dice fell, mean size of those falls); (0, 0) if none."""
    diffs = np.diff(_curve(dice_per_step))
    falls = -diffs[diffs < 0]
    if diffs.size == 0 or falls.size == 0:
        return 0.0, 0.0
    return falls.size / diffs.size, float(falls.mean())


def misunderstanding_rate(
    p_prev: np.ndarray,
    p_next: np.ndarray,
    gt: np.ndarray,
    *,
    tol: float = 0.0,
    among_moved: bool = False,
) -> float:
    """Share of voxels whose probability moved against their label (Definition 1).

    ``p_prev``, ``p_next``: foreground probabilities of two consecutive steps, same shape
    as ``gt``. A voxel is counted when ``p_next - p_prev > tol`` with gt = 0 or
    ``< -tol`` with gt = 1; moves of at most ``tol`` are not moves. Divided by all voxels,
    or by the voxels that moved when ``among_moved`` (0.0 if the denominator is 0).
    """
    prev = np.asarray(p_prev, dtype=np.float64)
    nxt = np.asarray(p_next, dtype=np.float64)
    g = np.asarray(gt).astype(bool, copy=False)
    if not prev.shape == nxt.shape == g.shape:
        raise ValueError(f"shapes differ: {prev.shape}, {nxt.shape}, {g.shape}")
    delta = nxt - prev
    against = np.where(g, delta < -tol, delta > tol)
    denom = np.count_nonzero(np.abs(delta) > tol) if among_moved else g.size
    return float(np.count_nonzero(against) / denom) if denom else 0.0


# --------------------------------------------------------------------------- CVPR 2025 protocol

NSD_TOLERANCE_MM = 2.0
"""The CVPR 2025 challenge's NSD tolerance in mm."""
NSD_MIN_DICE = 0.2
"""The challenge computes a step's NSD only when its Dice is above this (else NSD = 0)."""
CVPR25_CLICKS = 5
"""Click steps of a challenge case (after the box step); the AUCs integrate over these."""


def _cell_corners(code: int) -> np.ndarray:
    """The 2x2x2 corner voxels of a cell as bool, bit ``4a + 2b + c`` of ``code`` = (a, b, c)."""
    bits = [(code >> (4 * a + 2 * b + c)) & 1 for a in (0, 1) for b in (0, 1) for c in (0, 1)]
    return np.array(bits, dtype=bool).reshape(2, 2, 2)


@lru_cache(maxsize=1)
def _cell_area_vectors() -> tuple[np.ndarray, ...]:
    """For each of the 256 cell codes, the area vectors (rows: normal x area, unit voxels)
    of the classic marching-cubes triangles inside the cell; a cell with more than 4
    corners in the mask is triangulated as its complement (the same surface)."""
    from skimage.measure import marching_cubes  # scikit-image is a dependency; import is slow

    vectors = []
    for code in range(256):
        corners = _cell_corners(code)
        if corners.sum() > 4:
            corners = ~corners
        if not corners.any():
            vectors.append(np.zeros((0, 3)))
            continue
        verts, faces, _, _ = marching_cubes(corners.astype(np.float64), 0.5, method="lorensen")
        tri = np.asarray(verts, dtype=np.float64)[faces]
        vectors.append(0.5 * np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]))
    return tuple(vectors)


@lru_cache(maxsize=64)
def _cell_areas(spacing: tuple[float, float, float]) -> np.ndarray:
    """Surface area (mm^2 with ``spacing`` in mm) inside a cell, indexed by cell code."""
    s0, s1, s2 = spacing
    scale = np.array([s1 * s2, s0 * s2, s0 * s1])  # how area vectors scale under diag(spacing)
    areas = [float(np.linalg.norm(v * scale, axis=1).sum()) for v in _cell_area_vectors()]
    out = np.array(areas)
    out.flags.writeable = False
    return out


def _cell_codes(mask: np.ndarray) -> np.ndarray:
    """Code of every cell of the corner grid of ``mask`` (shape - 1 per axis)."""
    m = mask.astype(np.uint8)
    n0, n1, n2 = (n - 1 for n in m.shape)
    codes = np.zeros((n0, n1, n2), np.uint8)
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                codes |= m[a : a + n0, b : b + n1, c : c + n2] << (4 * a + 2 * b + c)
    return codes


def surface_dice(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Spacing | None,
    tolerance_mm: float = NSD_TOLERANCE_MM,
) -> float:
    """Normalised surface Dice of two 3D masks at ``tolerance_mm``, on area-weighted
    surfels (definition: module docstring; equal to DeepMind's surface-distance
    ``compute_surface_dice_at_tolerance`` and MONAI's ``compute_surface_dice`` with
    ``use_subvoxels=True``). ``spacing`` in mm along (i, j, k); None = 1 voxel. Both masks
    empty -> 1.0, one empty -> 0.0."""
    p, g = _pair(pred, gt)
    if p.ndim != 3:
        raise ValueError(f"surface_dice takes 3D masks, got {p.ndim}D")
    sp = _spacing(spacing, 3) or (1.0, 1.0, 1.0)
    tol = float(tolerance_mm)
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tolerance_mm must be finite and >= 0, got {tolerance_mm!r}")
    if not p.any() and not g.any():
        return 1.0
    if not p.any() or not g.any():
        return 0.0
    box = bounding_box(p | g)
    assert box is not None
    codes_p, codes_g = (_cell_codes(np.pad(m[box], 1)) for m in (p, g))
    on_p, on_g = ((c != 0) & (c != 255) for c in (codes_p, codes_g))
    areas = _cell_areas(sp)  # type: ignore[arg-type]
    area_p, area_g = areas[codes_p[on_p]], areas[codes_g[on_g]]
    d_pg, d_gp = _directed(on_p, on_g, sp), _directed(on_g, on_p, sp)
    near = area_p[d_pg <= tol].sum() + area_g[d_gp <= tol].sum()
    return float(near / (area_p.sum() + area_g.sum()))


def dsc_nsd_cvpr25(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Spacing | None,
    tolerance_mm: float = NSD_TOLERANCE_MM,
    min_dice: float = NSD_MIN_DICE,
) -> tuple[float, float]:
    """(DSC, NSD) of one step as the CVPR 2025 organisers score it.

    ``pred`` and ``gt`` are masks or integer label maps of the same shape; the labels are
    the non-zero values present in ``gt`` (a bool mask is one label). DSC is the mean Dice
    over them; NSD is the mean :func:`surface_dice` over them when that DSC is
    > ``min_dice``, else 0.0. A ``gt`` without any label (never scored in the challenge)
    gives (1.0, 1.0) for an empty ``pred`` and (0.0, 0.0) otherwise.
    """
    p, g = np.asarray(pred), np.asarray(gt)
    if p.shape != g.shape:
        raise ValueError(f"pred and gt shapes differ: {p.shape} vs {g.shape}")
    labels = [label for label in np.unique(g) if label != 0]
    if not labels:
        return (1.0, 1.0) if not p.any() else (0.0, 0.0)
    dsc = float(np.mean([dice(p == label, g == label) for label in labels]))
    if not dsc > min_dice:
        return dsc, 0.0
    nsd = np.mean([surface_dice(p == label, g == label, spacing, tolerance_mm) for label in labels])
    return dsc, float(nsd)


def nsd_cvpr25(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Spacing | None,
    tolerance_mm: float = NSD_TOLERANCE_MM,
    min_dice: float = NSD_MIN_DICE,
) -> float:
    """NSD of one step with the organisers' rule: :func:`surface_dice` (mean over the
    labels of ``gt``) when the Dice is > ``min_dice``, else 0.0 (see :func:`dsc_nsd_cvpr25`)."""
    return dsc_nsd_cvpr25(pred, gt, spacing, tolerance_mm, min_dice)[1]


def auc_trapezoid(values: Sequence[float]) -> float:
    """Area under ``values`` by the trapezoid rule with unit spacing (0.0 for one value):
    ``sum((v[t] + v[t + 1]) / 2)``; n values in [0, 1] give at most n - 1."""
    v = _curve(values)
    return float(((v[1:] + v[:-1]) / 2.0).sum())


def cvpr25_scores(
    dsc_per_step: Sequence[float],
    nsd_per_step: Sequence[float],
    n_clicks: int = CVPR25_CLICKS,
) -> dict[str, float]:
    """A case's challenge scores from its per-step DSC and NSD (the box step, then one per
    click): ``DSC_AUC`` and ``NSD_AUC`` are :func:`auc_trapezoid` of the last ``n_clicks``
    steps (the box step left out, as the organisers do), ``DSC_Final`` and ``NSD_Final``
    the last step's values."""
    d, n = _curve(dsc_per_step), _curve(nsd_per_step)
    if d.shape != n.shape:
        raise ValueError(f"{d.size} DSC values but {n.size} NSD values")
    if n_clicks < 1:
        raise ValueError(f"n_clicks must be >= 1, got {n_clicks}")
    return {
        "DSC_AUC": auc_trapezoid(d[-n_clicks:].tolist()),
        "NSD_AUC": auc_trapezoid(n[-n_clicks:].tolist()),
        "DSC_Final": float(d[-1]),
        "NSD_Final": float(n[-1]),
    }
