"""Dice after 3 foreground then 3 background points, no box, in-process sessions.

Usage: ``.venv/bin/python benchmarks/points_only.py --data DATASET [--split val]
[--target NAME] [--methods generalist,geos,growcut] [--margins 20] [--max-cases N]
[--out points.json]``

The user of :mod:`mecca.bench.points` (the one ``benchmarks/slicer_clicks.py`` sends
through 3D Slicer's client) on :class:`mecca.Session` with the settings a user gets
(``mecca segment`` / the server: no ROI, the ROI derived from the points and grown as the
session does), one session per case and method. ``--margins`` (mm, comma-separated) runs
each method once per ``roi_margin_mm``: the margin around the first points, the
session's guess of the object's size. Prints per method and margin the mean and median
Dice after each point, and the median seconds per step. Choose settings on val splits.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from mecca import methods, metrics
from mecca.bench.points import (
    BACKGROUND_POINTS,
    FOREGROUND_POINTS,
    is_foreground_turn,
    next_point,
)
from mecca.data.datasets import open_dataset
from mecca.errors import InputError
from mecca.interaction.clicks import Click, InteractionKind
from mecca.interface import InteractiveMethod
from mecca.io import Volume
from mecca.session import Session


def run_session(
    method: InteractiveMethod, volume: Volume, gt: np.ndarray, margin_mm: float
) -> dict[str, Any]:
    """The user on one :class:`mecca.Session` with a user's settings (no ROI: the ROI comes
    from the points with ``margin_mm`` and grows as the session grows it): Dice and
    seconds after each point, and the points given."""
    session = Session(volume, method=method, rng=0, roi_margin_mm=margin_mm)
    pred = np.zeros(gt.shape, bool)
    dice: list[float] = []
    seconds: list[float] = []
    points: list[list[Any]] = []
    for n in range(FOREGROUND_POINTS + BACKGROUND_POINTS):
        fg = is_foreground_turn(n)
        point = next_point(pred, gt, fg)
        if point is not None:
            kind = InteractionKind.FOREGROUND if fg else InteractionKind.BACKGROUND
            session.add_clicks([Click(kind, point)])
            points.append([kind.value, list(point)])
        if session.result is None and point is None:
            dice.append(0.0)
            seconds.append(0.0)
            continue
        t0 = time.perf_counter()
        result = session.step()
        seconds.append(time.perf_counter() - t0)
        pred = result.mask.astype(bool)
        dice.append(float(metrics.dice(pred, gt)))
    return {"dice": dice, "seconds": seconds, "points": points}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--target", help="a named target (default: the dataset's)")
    parser.add_argument("--methods", default="generalist,geos,growcut")
    parser.add_argument("--margins", default="20", help="roi_margin_mm values, comma-separated")
    parser.add_argument("--max-cases", type=int, help="the first N cases holding the target")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    ds = open_dataset(args.data)
    cases: list[tuple[str, Volume, np.ndarray]] = []
    for case in ds.cases(args.split):
        if args.max_cases is not None and len(cases) == args.max_cases:
            break
        try:
            volume, gt = ds.load_case(case, args.target)
        except InputError:  # the target is not contoured in this case
            print(f"{case.case_id}: no {args.target or 'target'}, passed over", flush=True)
            continue
        cases.append((case.case_id, volume, gt))
    margins = [float(m) for m in args.margins.split(",")]
    results: dict[str, Any] = {}
    for name in args.methods.split(","):
        method = methods.get(name)
        for margin in margins:
            key = f"{name}@{margin:g}mm"
            results[key] = {cid: run_session(method, vol, gt, margin) for cid, vol, gt in cases}
            print(
                f"{key}: " + " ".join(f"{r['dice'][-1]:.3f}" for r in results[key].values()),
                flush=True,
            )
    what = f"{args.data.name} {args.split}" + (f" {args.target}" if args.target else "")
    print(
        f"{what}, {len(cases)} cases, Dice after each point ({FOREGROUND_POINTS} fg, "
        f"{BACKGROUND_POINTS} bg), no box"
    )
    for key, per_case in results.items():
        d = np.array([c["dice"] for c in per_case.values()])
        s = np.array([c["seconds"] for c in per_case.values()])
        print(f"  {key:18s} mean   " + " ".join(f"{v:.3f}" for v in d.mean(0)))
        print(f"  {'':18s} median " + " ".join(f"{v:.3f}" for v in np.median(d, 0)))
        print(f"  {'':18s} s/step median {np.median(s):.3f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
