"""Check ``--protocol cvpr25`` against the CVPR 2025 organisers' own code (docs/cvpr25.md).

Not a test: it needs a copy of their repository (JunMa11/CVPR-MedSegFMCompetition) and
their dependencies (``cc3d``, ``pandas``, ``torch``), and real volumes. Their scripts run
their whole evaluation at import, so this loads only their definitions, unchanged, from
the files: the functions of ``CVPR25_iter_eval.py`` (``compute_edt``, ``sample_coord``,
``compute_multi_class_dsc``, ``compute_multi_class_nsd``), the click block of its loop
(the ``if np.sum(error_mask) > 0:`` statement, executed as it is, with their variable
names), ``SurfaceDice.py`` as a module and ``mask3D_to_bbox`` of ``get_boxes.py``.

For each case (the binary target of the dataset's default, in their (z, y, x) order, with
the header spacing reversed to match) it compares, step by step over a box step and 5
clicks, their box with :func:`mecca.bench.cvpr25.middle_slice_box` (same perturbation
draw), their click with :func:`mecca.bench.cvpr25.organisers_click`, and their DSC and
NSD (with their ``dsc > 0.2`` rule) with :func:`mecca.metrics.dsc_nsd_cvpr25`. The
predictions are a fixed sequence: the box filled, then after each click the previous
prediction with a ball of radius 3 around the click set to the click's label (so the
next click depends on the last, as in the challenge). Exit status 1 on any difference.

    python benchmarks/cvpr25_check.py --repo /tmp/cvpr25_org \\
        --data ../shared/data/hippocampus --data ../shared/data/left_atrium --cases 3
"""

from __future__ import annotations

import argparse
import ast
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np

from mecca import metrics
from mecca.bench import cvpr25
from mecca.data.datasets import open_dataset


def _definitions(path: Path, names: set[str]) -> dict[str, Any]:
    """Run the imports and the named top-level functions of ``path`` (nothing else)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    keep = [
        node
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        or (isinstance(node, ast.FunctionDef) and node.name in names)
    ]
    namespace: dict[str, Any] = {"__name__": f"organisers_{path.stem}"}
    skip = {"cv2", "tqdm", "glob", "multiprocessing", "skimage", "copy"}
    keep = [n for n in keep if not _imports_any(n, skip)]
    exec(compile(ast.Module(keep, []), str(path), "exec"), namespace)  # noqa: S102
    return namespace


def _imports_any(node: ast.stmt, names: set[str]) -> bool:
    if isinstance(node, ast.Import):
        return any(a.name.split(".")[0] in names for a in node.names)
    if isinstance(node, ast.ImportFrom):
        return (node.module or "").split(".")[0] in names
    return False


def _click_block(path: Path) -> types.CodeType:
    """Their loop's click statement (``if np.sum(error_mask) > 0: ...``), compiled."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "np.sum(error_mask) > 0":
            return compile(ast.Module([node], []), str(path), "exec")
    raise SystemExit(f"no click block in {path}")


def _ball(shape: tuple[int, ...], centre: tuple[int, ...], radius: int = 3) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True)) <= radius**2


def check_case(
    org: dict[str, Any], block: types.CodeType, boxes: dict[str, Any], gt: np.ndarray, spacing
) -> list[str]:
    """Lines of the comparison of one case (gt in (z, y, x)); ``!!`` marks a difference."""
    lines, bad = [], 0
    gts = gt.astype(np.uint8)
    seed = int(gt.sum()) % 1000
    np.random.seed(seed)
    shift = int(np.random.randint(0, 6, 1)[0])
    np.random.seed(seed)
    theirs_box = {k: int(v) for k, v in boxes["mask3D_to_bbox"](gt, "case").items()}
    ours_box = cvpr25.middle_slice_box(gt, shift)
    bad += theirs_box != ours_box
    lines.append(
        f"  box (shift {shift}): {'same' if theirs_box == ours_box else '!! differs'} {ours_box}"
    )
    b = ours_box
    segs = np.zeros_like(gts)
    segs[
        b["z_min"] : b["z_max"] + 1,
        b["z_mid_y_min"] : b["z_mid_y_max"] + 1,
        b["z_mid_x_min"] : b["z_mid_x_max"] + 1,
    ] = 1
    for step in range(6):
        if step > 0:
            ns: dict[str, Any] = {
                **org,
                "error_mask": (segs != gts).astype(np.uint8),
                "segs_cls": segs,
                "gts_cls": gts,
                "clicks_cls": [{"fg": [], "bg": []}],
                "clicks_order": [[]],
                "ind": 0,
                "cls": 1,
                "verbose": False,
            }
            exec(block, ns)  # noqa: S102
            kind = ns["clicks_order"][0][-1]
            theirs = (
                None
                if kind is None
                else (tuple(int(v) for v in ns["clicks_cls"][0][kind][-1]), kind == "fg")
            )
            mine = cvpr25.organisers_click(segs, gts)
            same = theirs == mine
            bad += not same
            lines.append(f"  click {step}: ours {mine}, theirs {theirs}{'' if same else '  !!'}")
            if mine is not None:
                segs = np.where(_ball(segs.shape, mine[0]), np.uint8(mine[1]), segs)
        dsc_t = float(org["compute_multi_class_dsc"](gts, segs))
        nsd_t = float(org["compute_multi_class_nsd"](gts, segs, spacing)) if dsc_t > 0.2 else 0.0
        dsc_o, nsd_o = metrics.dsc_nsd_cvpr25(segs, gts, spacing)
        diff = max(abs(dsc_t - dsc_o), abs(nsd_t - nsd_o))
        bad += diff > 1e-9
        lines.append(
            f"  step {step + 1}: DSC ours {dsc_o:.6f} theirs {dsc_t:.6f}, NSD ours {nsd_o:.6f} "
            f"theirs {nsd_t:.6f}, max |diff| {diff:.1e}{'' if diff <= 1e-9 else '  !!'}"
        )
    lines.insert(0, "  " + ("AGREE" if bad == 0 else f"{bad} DIFFERENCES"))
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", type=Path, required=True, help="their repository's files")
    ap.add_argument("--data", type=Path, action="append", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--cases", type=int, default=3, help="cases per dataset")
    args = ap.parse_args()
    sys.path.insert(0, str(args.repo))  # their ``from SurfaceDice import ...``
    eval_py = args.repo / "CVPR25_iter_eval.py"
    org = _definitions(
        eval_py,
        {"compute_edt", "sample_coord", "compute_multi_class_dsc", "compute_multi_class_nsd"},
    )
    block = _click_block(eval_py)
    boxes = _definitions(args.repo / "get_boxes.py", {"mask2D_to_bbox", "mask3D_to_bbox"})
    failed = 0
    for data in args.data:
        ds = open_dataset(data)
        values = ds.resolve_target(None)
        for case in ds.cases(args.split)[: args.cases]:
            volume, gt = ds.load_case(case, values)
            gt_zyx = np.ascontiguousarray(cvpr25.to_zyx(np.asarray(gt, bool)))
            spacing = tuple(float(s) for s in reversed(volume.spacing))
            lines = check_case(org, block, boxes, gt_zyx, spacing)
            failed += lines[0].strip() != "AGREE"
            print(f"{data.name}/{case.case_id} shape (z, y, x) {gt_zyx.shape} spacing {spacing}")
            print("\n".join(lines))
    print("ALL AGREE" if failed == 0 else f"{failed} case(s) differ")
    return int(failed > 0)


if __name__ == "__main__":
    raise SystemExit(main())
