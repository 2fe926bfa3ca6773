"""The page's box drawn on one slice, on val splits (never test): how deep should it reach?

A person draws the Box tool's two corners on one axial slice; the server cannot know how
far the object runs across slices, so it makes the box as deep as ``SLICE_BOX_DEPTH``
times its mean in-plane size in mm (:func:`mecca.server.app.box_from_corners`). This
runs that user with the default method (the generalist): the corners are the object's
2D bounding box on the axial slice (k) through its interior-most voxel, half a voxel
outside it, as a person draws it tight; the session segments the box at once (as the
server does), then 3 correction clicks follow at the interior-most voxel of the largest
error (the CVPR 2025 user's click): anywhere, as the page takes them since 2026-12-07 (a
click outside the box's ROI grows it), or with ``--inside-roi`` only inside the ROI, as
the page took them before.
Printed per target and depth factor: mean Dice after the box and after the 3 clicks.

Usage::

    python benchmarks/slice_box_val.py [--depths 1,1.5,2] [--data ../shared/data]
        [--extra ~/.cache/mecca-data-extra] [--inside-roi] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from generalist_settings import val_cases  # the script beside this one
from scipy import ndimage

from mecca.bench import cvpr25
from mecca.io import Volume
from mecca.methods.registry import DEFAULT_METHOD
from mecca.server import app
from mecca.session import Session


def slice_corners(volume: Volume, gt: np.ndarray) -> list[list[float]]:
    """The object's 2D box on the axial slice through its interior-most voxel, in mm."""
    depth = ndimage.distance_transform_edt(gt)
    k = int(np.unravel_index(int(np.argmax(depth)), gt.shape)[2])
    ii, jj = np.nonzero(gt[:, :, k])
    lo, hi = [ii.min() - 0.5, jj.min() - 0.5, k], [ii.max() + 0.5, jj.max() + 0.5, k]
    return [volume.voxel_to_world(np.array(c, float)).tolist() for c in (lo, hi)]


def run(volume: Volume, gt: np.ndarray, clicks: int, inside_roi: bool = False) -> list[float]:
    """Dice after the box and after each correction click."""
    session = Session(volume, method=DEFAULT_METHOD)
    box = app.box_from_corners(volume, slice_corners(volume, gt), in_mm=True)
    session.set_roi(box, as_box=True)
    session.step()
    dice = [_dice(session.result.mask, gt)]
    for _ in range(clicks):
        mask, truth = session.result.mask.astype(bool), gt
        if inside_roi:  # the page before 2026-12-07: clicks in the box's ROI only
            roi = np.zeros(gt.shape, bool)
            roi[session.roi.slices] = True
            mask, truth = mask & roi, gt & roi
        found = cvpr25.organisers_click(cvpr25.to_zyx(mask), cvpr25.to_zyx(truth))
        if found is None:
            dice.append(dice[-1])
            continue
        (z, y, x), inside = found
        session.add_click("foreground" if inside else "background", (x, y, z))
        session.step()
        dice.append(_dice(session.result.mask, gt))
    return dice


def _dice(mask: np.ndarray, gt: np.ndarray) -> float:
    return float(2 * (mask & gt).sum() / max(int(mask.sum() + gt.sum()), 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depths", default="1,1.5,2")
    parser.add_argument("--clicks", type=int, default=3)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--extra", type=Path, default=Path.home() / ".cache/mecca-data-extra")
    parser.add_argument("--inside-roi", action="store_true", help="clicks in the ROI only")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    depths = [float(d) for d in args.depths.split(",")]
    table: dict[str, dict[str, list[float]]] = {}
    for name, cases in val_cases(args.data, args.extra.expanduser()):
        for depth in depths:
            app.SLICE_BOX_DEPTH = depth
            curves = [run(volume, gt, args.clicks, args.inside_roi) for volume, gt in cases]
            mean = [round(100 * float(v), 2) for v in np.mean(curves, axis=0)]
            table.setdefault(name, {})[str(depth)] = mean
            print(name, f"depth x{depth}", "Dice after the box, then each click:", mean, flush=True)
    for depth in depths:
        rows = [t[str(depth)] for t in table.values()]
        print(f"depth x{depth} mean over targets", [round(v, 2) for v in np.mean(rows, axis=0)])
    if args.out:
        args.out.write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main()
