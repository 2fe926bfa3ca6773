"""Tests of mecca.metrics: hand-computed cases, conventions, and agreement with MONAI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_dice,
    compute_hausdorff_distance,
)
from scipy import ndimage
from scipy.spatial import cKDTree

from conftest import sphere
from mecca import metrics


def two_cubes() -> tuple[np.ndarray, np.ndarray]:
    """Two 4x4x4 cubes, the second shifted by one voxel along i."""
    a = np.zeros((12, 12, 12), bool)
    b = np.zeros_like(a)
    a[2:6, 2:6, 2:6] = True
    b[3:7, 2:6, 2:6] = True
    return a, b


def blob(rng: np.random.Generator, shape: tuple[int, int, int] = (24, 20, 16)) -> np.ndarray:
    """Random smooth blob (may touch the border)."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), 2.5)
    return noise > 0.05


def brute_distances(src: np.ndarray, dst: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Independent check: nearest-surface distances by a KD-tree over all surface points."""
    s = np.asarray(spacing, dtype=np.float64)
    ps = np.argwhere(metrics.surface_voxels(src)) * s
    pd = np.argwhere(metrics.surface_voxels(dst)) * s
    return cKDTree(pd).query(ps)[0]


# --- hand-computed ----------------------------------------------------------------------


def test_two_cubes_dice_and_distances() -> None:
    a, b = two_cubes()
    assert metrics.dice(a, b) == pytest.approx(0.75)  # 2 * 48 / 128
    d_ab, d_ba = metrics.surface_distances(a, b)
    # 56 surface voxels each; the i=2 face (16) and the centre of the i=5 face (4) are at 1
    for d in (d_ab, d_ba):
        assert d.size == 56
        assert np.count_nonzero(d == 1.0) == 20
        assert np.count_nonzero(d == 0.0) == 36
    assert metrics.assd(a, b) == pytest.approx(40 / 112)
    assert metrics.hd95(a, b) == pytest.approx(1.0)


def test_anisotropic_spacing_changes_mm_not_voxels() -> None:
    a, b = two_cubes()
    sp = (2.0, 1.0, 1.0)
    d_ab, _ = metrics.surface_distances(a, b, sp)
    assert sorted(np.unique(d_ab)) == [0.0, 1.0, 2.0]
    assert np.count_nonzero(d_ab == 2.0) == 16  # across the shifted face, 2 mm along i
    assert np.count_nonzero(d_ab == 1.0) == 4  # face centre: nearest surface 1 mm along j/k
    assert metrics.assd(a, b, sp) == pytest.approx(72 / 112)
    assert metrics.hd95(a, b, sp) == pytest.approx(2.0)
    res = metrics.evaluate(a, b, spacing=sp)
    assert res["assd_vox"] == pytest.approx(40 / 112)
    assert res["hd95_vox"] == pytest.approx(1.0)
    assert res["assd_mm"] == pytest.approx(72 / 112)
    assert (res["tp"], res["fp"], res["fn"]) == (48, 16, 16)
    assert res["volume_pred_ml"] == pytest.approx(64 * 2.0 / 1000)
    assert res["volume_gt_ml"] == pytest.approx(64 * 2.0 / 1000)


def test_evaluate_without_spacing_has_no_mm_keys() -> None:
    a, b = two_cubes()
    assert set(metrics.evaluate(a, b)) == {"dice", "assd_vox", "hd95_vox", "tp", "fp", "fn"}


def test_hd95_pools_both_directions_with_linear_interpolation() -> None:
    a = np.zeros((20, 20, 20), bool)
    a[5:15, 5:15, 5:15] = True
    b = a.copy()
    b[15:18, 8:11, 8:11] = True  # a 3-voxel spike: only gt -> pred sees it
    d_ab, d_ba = metrics.surface_distances(a, b)
    pooled = np.concatenate([d_ab, d_ba])
    assert metrics.hd95(a, b) == pytest.approx(np.percentile(pooled, 95))
    assert metrics.hd95(a, b) <= max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))
    assert metrics.assd(a, b) == pytest.approx(pooled.mean())


def test_surface_of_object_touching_border() -> None:
    full = np.ones((3, 3, 3), bool)
    surf = metrics.surface_voxels(full)
    assert np.count_nonzero(surf) == 26 and not surf[1, 1, 1]
    # an object at the border has a surface there, so crop + pad must keep it
    a = np.zeros((6, 6, 6), bool)
    a[0:3, 0:6, 0:6] = True
    b = np.zeros_like(a)
    b[0:2, 0:6, 0:6] = True
    assert metrics.surface_distances(a, b)[0].max() == pytest.approx(1.0)


def test_matches_brute_force_including_border(rng: np.random.Generator) -> None:
    for _ in range(4):
        a, b = blob(rng), blob(rng)
        sp = tuple(rng.uniform(0.5, 3.0, 3))
        d_ab, d_ba = metrics.surface_distances(a, b, sp)
        np.testing.assert_allclose(d_ab, brute_distances(a, b, sp), atol=1e-9)
        np.testing.assert_allclose(d_ba, brute_distances(b, a, sp), atol=1e-9)


def test_symmetric_in_arguments(rng: np.random.Generator) -> None:
    a, b = blob(rng), blob(rng)
    sp = (0.8, 1.3, 2.5)
    assert metrics.assd(a, b, sp) == pytest.approx(metrics.assd(b, a, sp))
    assert metrics.hd95(a, b, sp) == pytest.approx(metrics.hd95(b, a, sp))
    assert metrics.dice(a, b) == pytest.approx(metrics.dice(b, a))


def test_identical_masks() -> None:
    a = sphere((16, 16, 16), (8, 8, 8), 5)
    assert metrics.dice(a, a) == 1.0
    assert metrics.assd(a, a) == 0.0 and metrics.hd95(a, a) == 0.0


def test_empty_conventions() -> None:
    z = np.zeros((8, 8, 8), bool)
    a = z.copy()
    a[2:5, 2:5, 2:5] = True
    assert metrics.dice(z, z) == 1.0
    assert metrics.assd(z, z) == 0.0 and metrics.hd95(z, z) == 0.0
    for p, g in ((a, z), (z, a)):
        assert metrics.dice(p, g) == 0.0
        assert math.isinf(metrics.assd(p, g)) and math.isinf(metrics.hd95(p, g))
        res = metrics.evaluate(p, g, spacing=(1.0, 1.0, 2.0))
        assert math.isinf(res["assd_mm"]) and math.isinf(res["hd95_vox"])
    d_az, d_za = metrics.surface_distances(a, z)
    assert d_az.size == 26 and np.isinf(d_az).all() and d_za.size == 0


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        metrics.dice(np.zeros((3, 3, 3)), np.zeros((3, 3, 4)))
    with pytest.raises(ValueError):
        metrics.assd(np.ones((3, 3, 3)), np.ones((3, 3, 3)), spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError):
        metrics.hd95(np.ones((3, 3, 3)), np.ones((3, 3, 3)), spacing=(1.0, 1.0))


# --- interaction curves -----------------------------------------------------------------


def test_clicks_to_reach() -> None:
    curve = [0.5, 0.7, 0.86, 0.84, 0.91]
    clicks = [0, 1, 2, 1, 1]
    assert metrics.clicks_to_reach(curve, clicks, 0.85) == 3
    assert metrics.clicks_to_reach(curve, clicks, 0.90) == 5
    assert metrics.clicks_to_reach(curve, clicks, 0.95) is None
    assert metrics.clicks_to_reach(curve, clicks, 0.5) == 0  # already there before any click
    with pytest.raises(ValueError):
        metrics.clicks_to_reach(curve, clicks[:-1], 0.85)


def test_noc_counts_failures_as_max_clicks() -> None:
    curves = [[0.5, 0.9, 0.95], [0.3, 0.4, 0.5], [0.6, 0.7, 0.88]]
    clicks = [[0, 1, 1], [0, 1, 1], [0, 3, 3]]
    res = metrics.noc(curves, clicks, threshold=0.85, max_clicks=5)
    assert res["per_case"] == [1, None, None]  # the third reaches only after 6 > 5 clicks
    assert res["failures"] == 2 and res["cases"] == 3
    assert res["noc"] == pytest.approx((1 + 5 + 5) / 3)
    assert math.isnan(float(metrics.noc([], [], 0.85, 5)["noc"]))  # type: ignore[arg-type]


def test_per_step_improvement_auc_stability() -> None:
    curve = [0.5, 0.7, 0.6, 0.8, 0.75]
    np.testing.assert_allclose(metrics.per_step_improvement(curve), [0.2, -0.1, 0.2, -0.05])
    assert metrics.dice_auc(curve) == pytest.approx(np.mean(curve))
    share, drop = metrics.stability(curve)
    assert share == pytest.approx(0.5) and drop == pytest.approx(0.075)
    assert metrics.stability([0.5, 0.6, 0.7]) == (0.0, 0.0)
    assert metrics.stability([0.5]) == (0.0, 0.0)
    with pytest.raises(ValueError):
        metrics.dice_auc([])


# --- interactive misunderstanding -------------------------------------------------------


def test_misunderstanding_rate_hand_case() -> None:
    gt = np.array([1, 1, 1, 0, 0, 0, 1, 0], bool)
    prev = np.array([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    nxt = np.array([0.6, 0.4, 0.5, 0.6, 0.4, 0.5, 0.49, 0.52])
    # against the label: index 1 (fg fell), 3 (bg rose), 6 (fg fell), 7 (bg rose)
    assert metrics.misunderstanding_rate(prev, nxt, gt) == pytest.approx(4 / 8)
    # unchanged voxels (2, 5) are not moves: 6 voxels moved
    assert metrics.misunderstanding_rate(prev, nxt, gt, among_moved=True) == pytest.approx(4 / 6)
    # moves of at most 0.05 are ignored: 6 and 7 drop out of both counts
    assert metrics.misunderstanding_rate(prev, nxt, gt, tol=0.05) == pytest.approx(2 / 8)
    assert metrics.misunderstanding_rate(
        prev, nxt, gt, tol=0.05, among_moved=True
    ) == pytest.approx(2 / 4)


def test_misunderstanding_rate_edge_cases() -> None:
    gt = np.zeros((4, 4, 4), bool)
    p = np.full(gt.shape, 0.3)
    assert metrics.misunderstanding_rate(p, p, gt) == 0.0
    assert metrics.misunderstanding_rate(p, p, gt, among_moved=True) == 0.0
    assert metrics.misunderstanding_rate(p, p + 0.1, gt) == 1.0
    with pytest.raises(ValueError):
        metrics.misunderstanding_rate(p, p[:-1], gt)


# --- agreement with MONAI ---------------------------------------------------------------


def monai_scores(pred: np.ndarray, gt: np.ndarray, spacing, full: bool) -> dict[str, float]:
    """MONAI's Dice, HD95 (max of directed 95th percentiles), symmetric ASD (+ HD if full)."""
    yp = torch.from_numpy(pred[None, None].astype(np.float32))
    yt = torch.from_numpy(gt[None, None].astype(np.float32))
    kw = {"include_background": True, "spacing": spacing}
    out = {
        "dice": float(compute_dice(yp, yt, include_background=True)),
        "hd95_directed_max": float(compute_hausdorff_distance(yp, yt, percentile=95, **kw)),
        "assd": float(compute_average_surface_distance(yp, yt, symmetric=True, **kw)),
    }
    if full:
        out["hd"] = float(compute_hausdorff_distance(yp, yt, **kw))
    return out


def our_scores(pred: np.ndarray, gt: np.ndarray, spacing) -> dict[str, float]:
    """The same quantities from mecca.metrics (MONAI's HD95 rebuilt from our distances)."""
    d_pg, d_gp = metrics.surface_distances(pred, gt, spacing)
    return {
        "dice": metrics.dice(pred, gt),
        "hd95_directed_max": max(np.percentile(d_pg, 95), np.percentile(d_gp, 95)),
        "hd": max(d_pg.max(), d_gp.max()),
        "assd": float(np.concatenate([d_pg, d_gp]).mean()),
    }


def max_diffs(
    pairs: list[tuple[np.ndarray, np.ndarray]], spacing, full: bool = True
) -> dict[str, float]:
    """Largest |ours - MONAI| per quantity over (pred, gt) pairs."""
    out: dict[str, float] = {}
    for pred, gt in pairs:
        ours, theirs = our_scores(pred, gt, spacing), monai_scores(pred, gt, spacing, full)
        for key, value in theirs.items():
            out[key] = max(out.get(key, 0.0), abs(float(ours[key]) - value))
    return out


TOL = {"dice": 1e-6, "hd95_directed_max": 1e-4, "hd": 1e-4, "assd": 1e-4}


def assert_close(diffs: dict[str, float]) -> None:
    for key, value in diffs.items():
        assert value <= TOL[key], (key, value)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_agrees_with_monai_on_synthetic_shapes(rng: np.random.Generator) -> None:
    a, b = two_cubes()
    pairs = [(a, b), (blob(rng), blob(rng)), (blob(rng), blob(rng))]
    c = sphere((30, 30, 20), (15, 14, 10), 8)
    pairs.append((c, np.roll(c, 2, axis=1)))
    for spacing in (None, (0.7, 1.0, 2.5)):
        diffs = max_diffs(pairs, spacing)
        print(f"\nsynthetic, spacing={spacing}: max |ours - MONAI| = {diffs}")
        assert_close(diffs)


SHIFTS = [(1, 0, 0), (0, -2, 0), (0, 1, 1), (-2, 0, 1), (1, -1, 2)]


def shifted(mask: np.ndarray, offset: tuple[int, int, int]) -> np.ndarray:
    """``mask`` translated by ``offset`` voxels, background filling (no wrap-around)."""
    out = np.zeros_like(mask)
    src = tuple(slice(max(0, -o), mask.shape[a] - max(0, o)) for a, o in enumerate(offset))
    dst = tuple(slice(max(0, o), mask.shape[a] - max(0, -o)) for a, o in enumerate(offset))
    out[dst] = mask[src]
    return out


def real_pairs(root: Path, dataset: str, n: int, labels: list[int]):
    """(eroded, gt) and (shifted, gt) for the first ``n`` test cases, with header spacing."""
    cases = json.loads((root / dataset / "splits.json").read_text())["test"][:n]
    for i, case in enumerate(cases):
        img = nib.load(root / dataset / "labelsTr" / f"{case}.nii.gz")
        gt = np.isin(np.asarray(img.dataobj), labels)
        spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
        eroded = ndimage.binary_erosion(gt, ndimage.generate_binary_structure(3, 1))
        yield spacing, [(eroded, gt), (shifted(gt, SHIFTS[i % len(SHIFTS)]), gt)]


@pytest.mark.shared_data
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_agrees_with_monai_on_real_cases(shared_data: Path) -> None:
    """Hippocampus (5 test cases, labels 1+2) and left atrium (3 test cases) vs MONAI."""
    overall: dict[str, dict[str, float]] = {}
    for dataset, n, labels in (("hippocampus", 5, [1, 2]), ("left_atrium", 3, [1])):
        for spacing, pairs in real_pairs(shared_data, dataset, n, labels):
            for unit, sp in (("vox", None), ("mm", spacing), ("aniso", (0.7, 1.0, 2.5))):
                diffs = max_diffs(pairs, sp, full=False)
                assert_close(diffs)
                acc = overall.setdefault(f"{dataset}/{unit}", {})
                for key, value in diffs.items():
                    acc[key] = max(acc.get(key, 0.0), value)
    print("\nmax |ours - MONAI| on real test cases (eroded once, shifted 1-2 voxels):")
    for name, diffs in overall.items():
        print(f"  {name:22s} " + "  ".join(f"{k}={v:.2e}" for k, v in diffs.items()))


# --- CVPR 2025 protocol: NSD on surfels, the Dice > 0.2 rule, AUC over the click steps ----


def test_cell_areas_are_the_marching_cubes_areas() -> None:
    """Hand values: a corner cut sqrt(3)/8, a flat half cell 1 (s1*s2 in mm^2), complement
    cells the same as their complement, 8 corner cuts round a single voxel."""
    areas = metrics._cell_areas((1.0, 1.0, 1.0))
    assert areas[0] == areas[255] == 0.0
    assert areas[1] == pytest.approx(math.sqrt(3) / 8)  # one corner voxel in
    assert areas[0b1111] == pytest.approx(1.0)  # the a = 0 face in: a flat square
    assert areas[0b11] == pytest.approx(math.sqrt(2) / 2)  # one edge in: a tilted rectangle
    assert all(areas[c] == pytest.approx(areas[255 - c]) for c in range(256))
    s = (3.0, 0.5, 2.0)
    aniso = metrics._cell_areas(s)
    assert aniso[0b1111] == pytest.approx(s[1] * s[2])
    assert aniso[1] == pytest.approx(math.hypot(s[1] * s[2], s[0] * s[2], s[0] * s[1]) / 8)


def test_surface_dice_hand_cases() -> None:
    """Two single voxels one apart along i: the 8 surfels of each sit at the voxel's
    corners, 4 of them shared with the other voxel (distance 0) and 4 one step of i away,
    all of the same area; so NSD = 1/2 when that step is beyond the tolerance, 1 within."""
    a = np.zeros((5, 4, 4), bool)
    b = np.zeros_like(a)
    a[1, 1, 1] = b[2, 1, 1] = True
    assert metrics.surface_dice(a, b, (3.0, 1.0, 1.0), 2.0) == pytest.approx(0.5)
    assert metrics.surface_dice(a, b, (2.0, 1.0, 1.0), 2.0) == pytest.approx(1.0)  # <= tol
    assert metrics.surface_dice(a, b, (2.0, 1.0, 1.0), 1.999) == pytest.approx(0.5)
    assert metrics.surface_dice(a, b, None, 0.0) == pytest.approx(0.5)
    # surface voxels would give 0 (the two voxels are 3 mm apart): not the organisers' NSD
    assert metrics.surface_dice(a, a, (3.0, 1.0, 1.0), 0.0) == 1.0
    far = np.zeros((5, 4, 40), bool)
    far[1, 1, 1] = True
    assert metrics.surface_dice(far, np.roll(far, 30, axis=2), (1.0, 1.0, 1.0), 2.0) == 0.0


def test_surface_dice_empty_conventions_and_bad_input() -> None:
    empty, one = np.zeros((4, 4, 4), bool), np.zeros((4, 4, 4), bool)
    one[1, 1, 1] = True
    assert metrics.surface_dice(empty, empty, (1, 1, 1)) == 1.0
    assert metrics.surface_dice(one, empty, (1, 1, 1)) == 0.0
    assert metrics.surface_dice(empty, one, (1, 1, 1)) == 0.0
    with pytest.raises(ValueError, match="3D"):
        metrics.surface_dice(one[0], one[0], (1, 1))
    with pytest.raises(ValueError, match="tolerance"):
        metrics.surface_dice(one, one, (1, 1, 1), -1.0)
    with pytest.raises(ValueError, match="spacing"):
        metrics.surface_dice(one, one, (1, 1))


def monai_nsd(pred: np.ndarray, gt: np.ndarray, spacing, subvoxels: bool) -> float:
    from monai.metrics import compute_surface_dice

    yp = torch.from_numpy(pred[None, None].astype(np.float32))
    yt = torch.from_numpy(gt[None, None].astype(np.float32))
    nsd = compute_surface_dice(
        yp, yt, [2.0], include_background=True, spacing=list(spacing), use_subvoxels=subvoxels
    )
    return float(nsd)


def nsd_pairs(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, tuple]]:
    """Random blob pairs (independent, or one dilated 1-2 voxels) with anisotropic spacing."""
    out = []
    for t in range(8):
        gt = blob(rng, (30, 26, 18))
        pred = ndimage.binary_dilation(gt, iterations=1 + t % 2) if t % 2 else blob(rng, gt.shape)
        out.append((pred, gt, tuple(float(s) for s in rng.uniform(0.4, 3.0, 3))))
    return out


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_nsd_agrees_with_monai_subvoxels_and_differs_from_its_voxel_default(
    rng: np.random.Generator,
) -> None:
    sub = vox = 0.0
    for pred, gt, spacing in nsd_pairs(rng):
        ours = metrics.surface_dice(pred, gt, spacing, 2.0)
        sub = max(sub, abs(ours - monai_nsd(pred, gt, spacing, True)))
        vox = max(vox, abs(ours - monai_nsd(pred, gt, spacing, False)))
    print(f"\nNSD@2mm max |ours - MONAI subvoxels| = {sub:.2e}, |ours - MONAI voxels| = {vox:.3f}")
    assert sub < 1e-5  # MONAI works in float32
    assert vox > 0.01  # surface voxels are another definition


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_nsd_equals_deepminds_surface_distance(rng: np.random.Generator) -> None:
    """DeepMind's package is the organisers' SurfaceDice.py (same lookup table and steps)."""
    sd = pytest.importorskip("surface_distance")
    worst = 0.0
    for pred, gt, spacing in nsd_pairs(rng):
        ours = metrics.surface_dice(pred, gt, spacing, 2.0)
        distances = sd.compute_surface_distances(gt, pred, spacing)
        ref = sd.compute_surface_dice_at_tolerance(distances, 2.0)
        worst = max(worst, abs(ours - float(ref)))
    print(f"\nNSD@2mm max |ours - surface-distance| = {worst:.2e}")
    assert worst < 1e-12


def test_nsd_cvpr25_applies_the_dice_rule_on_the_label_mean() -> None:
    gt = np.zeros((20, 20, 20), np.uint8)
    gt[2:8, 2:8, 2:8] = 1
    gt[12:18, 12:18, 12:18] = 2
    spacing = (1.0, 1.0, 2.0)
    assert metrics.dsc_nsd_cvpr25(gt, gt, spacing) == (1.0, 1.0)
    pred = np.where(gt == 2, 2, 0)  # label 1 missed: mean Dice 0.5 > 0.2, NSD (0 + 1) / 2
    assert metrics.dsc_nsd_cvpr25(pred, gt, spacing) == pytest.approx((0.5, 0.5))
    low = np.zeros_like(gt)
    low[2:8, 2:8, 2:3] = 1  # Dice 2 * 36 / (36 + 216) = 0.286 on label 1, 0 on label 2
    dsc, nsd = metrics.dsc_nsd_cvpr25(low, gt, spacing)
    assert dsc == pytest.approx(2 * 36 / 252 / 2) and dsc < 0.2 and nsd == 0.0
    assert metrics.surface_dice(low == 1, gt == 1, spacing) > 0  # what the rule zeroed
    one = gt == 1
    assert metrics.nsd_cvpr25(one, one, spacing) == 1.0  # a bool mask is one label
    assert metrics.nsd_cvpr25(one, one, spacing, min_dice=1.0) == 0.0  # "> min_dice"
    empty = np.zeros_like(one)
    assert metrics.dsc_nsd_cvpr25(empty, empty, spacing) == (1.0, 1.0)
    assert metrics.dsc_nsd_cvpr25(one, empty, spacing) == (0.0, 0.0)


def test_auc_trapezoid_and_cvpr25_scores_match_the_organisers_integration() -> None:
    from scipy.integrate import cumulative_trapezoid

    dsc = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]  # box step, then 5 clicks
    nsd = [0.1, 0.0, 0.4, 0.4, 0.8, 0.9]
    assert metrics.auc_trapezoid(dsc[1:]) == pytest.approx(3.2)
    assert metrics.auc_trapezoid([0.7]) == 0.0
    assert metrics.auc_trapezoid([1.0] * 5) == 4.0  # the maximum over 5 click steps
    scores = metrics.cvpr25_scores(dsc, nsd)
    for key, curve in (("DSC_AUC", dsc), ("NSD_AUC", nsd)):
        theirs = cumulative_trapezoid(np.array(curve[-5:]), np.arange(5))[-1]
        assert scores[key] == pytest.approx(theirs)
    assert scores["DSC_Final"] == 1.0 and scores["NSD_Final"] == 0.9
    with pytest.raises(ValueError, match="NSD values"):
        metrics.cvpr25_scores(dsc, nsd[:3])
    with pytest.raises(ValueError, match="empty"):
        metrics.auc_trapezoid([])


@pytest.mark.shared_data
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_nsd_agrees_with_monai_subvoxels_on_real_cases(shared_data: Path) -> None:
    """Hippocampus test cases (labels 1+2, header spacing), eroded once and shifted."""
    worst = 0.0
    for spacing, pairs in real_pairs(shared_data, "hippocampus", 5, [1, 2]):
        for pred, gt in pairs:
            ours = metrics.surface_dice(pred, gt, spacing, 2.0)
            worst = max(worst, abs(ours - monai_nsd(pred, gt, spacing, True)))
    print(f"\nreal hippocampus NSD@2mm max |ours - MONAI subvoxels| = {worst:.2e}")
    assert worst < 1e-5
