"""Dice after 3 foreground then 3 background points, in-process sessions.

Usage: ``.venv/bin/python benchmarks/points_only.py --data DATASET [--split val]
[--target NAME] [--methods generalist,geos,growcut] [--margins 20] [--max-cases N]
[--boxes none,roi,prompt] [--box-slack 0] [--weights RUN_OR_BUNDLE] [--out points.json]``

The user of :mod:`mecca.bench.points` (the one ``benchmarks/slicer_clicks.py`` sends
through 3D Slicer's client) on :class:`mecca.Session` with the settings a user gets
(``mecca segment`` / the server: no ROI, the ROI derived from the points and grown as the
session does), one session per case and method. ``--margins`` (mm, comma-separated) runs
each method once per ``roi_margin_mm``: the margin around the first points, the
session's guess of the object's size. ``--boxes`` runs each method once per way the user
draws a box first (the page's box tool): ``none`` (no box, the default), ``roi`` (the
object's bounding box grown by ``--box-slack`` of its size per side, as the session's ROI
only: the page before 2026-12-07) and ``prompt`` (the same box with ``roi_as_box``: a box
prompt for the generalist, run as a step of its own before the points, whose Dice is
printed as "box"). ``--weights``: another generalist model than the shipped one (a run
folder: its best.pt). Prints per method, margin and box the mean and median Dice after
each point, and the median seconds per step. Choose settings on val splits.
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
from mecca.data.roi import Box
from mecca.errors import InputError
from mecca.interaction.clicks import Click, InteractionKind
from mecca.interface import InteractiveMethod
from mecca.io import Volume
from mecca.methods.generalist.method import generalist_factory
from mecca.session import Session


def drawn_box(gt: np.ndarray, slack: float) -> Box:
    """The object's bounding box grown by ``slack`` of its size per side, clipped: the box a
    user draws around it."""
    box = Box.from_mask(gt)
    grow = np.ceil(slack * np.asarray(box.shape, float)).astype(int)
    return box.grow(grow).clip(gt.shape)


def run_session(
    method: InteractiveMethod,
    volume: Volume,
    gt: np.ndarray,
    margin_mm: float,
    box: str = "none",
    slack: float = 0.0,
) -> dict[str, Any]:
    """The user on one :class:`mecca.Session` with a user's settings (without a box the
    ROI comes from the points with ``margin_mm`` and grows as the session grows it; with
    one, module docstring): Dice and seconds after each point, and the points given."""
    roi = None if box == "none" else drawn_box(gt, slack)
    session = Session(
        volume, roi, method=method, rng=0, roi_margin_mm=margin_mm, roi_as_box=box == "prompt"
    )
    pred = np.zeros(gt.shape, bool)
    box_dice = None
    if session.box_prompted:
        pred = session.step().mask.astype(bool)
        box_dice = float(metrics.dice(pred, gt))
    dice: list[float] = []
    seconds: list[float] = []
    points: list[list[Any]] = []
    for n in range(FOREGROUND_POINTS + BACKGROUND_POINTS):
        fg = is_foreground_turn(n)
        point = next_point(pred, gt, fg, within=session.roi)
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
    return {"dice": dice, "seconds": seconds, "points": points, "box_dice": box_dice}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--target", help="a named target (default: the dataset's)")
    parser.add_argument("--methods", default="generalist,geos,growcut")
    parser.add_argument("--margins", default="20", help="roi_margin_mm values, comma-separated")
    parser.add_argument("--max-cases", type=int, help="the first N cases holding the target")
    parser.add_argument("--boxes", default="none", help="none, roi, prompt (comma-separated)")
    parser.add_argument("--box-slack", type=float, default=0.0, help="drawn box's slack/side")
    parser.add_argument("--weights", type=Path, help="the generalist's model (run or bundle)")
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
        method = (
            generalist_factory(args.weights)
            if name == "generalist" and args.weights
            else methods.get(name)
        )
        for margin in margins:
            for box in args.boxes.split(","):
                key = f"{name}@{margin:g}mm" + ("" if box == "none" else f"+{box}")
                results[key] = {
                    cid: run_session(method, vol, gt, margin, box, args.box_slack)
                    for cid, vol, gt in cases
                }
                print(
                    f"{key}: " + " ".join(f"{r['dice'][-1]:.3f}" for r in results[key].values()),
                    flush=True,
                )
    what = f"{args.data.name} {args.split}" + (f" {args.target}" if args.target else "")
    print(
        f"{what}, {len(cases)} cases, Dice after each point ({FOREGROUND_POINTS} fg, "
        f"{BACKGROUND_POINTS} bg), box slack {args.box_slack:g}"
    )
    for key, per_case in results.items():
        d = np.array([c["dice"] for c in per_case.values()])
        s = np.array([c["seconds"] for c in per_case.values()])
        first = [c["box_dice"] for c in per_case.values()]
        box = "" if first[0] is None else f"box {np.mean(first):.3f}  "
        print(f"  {key:18s} mean   {box}" + " ".join(f"{v:.3f}" for v in d.mean(0)))
        print(f"  {'':18s} median " + " ".join(f"{v:.3f}" for v in np.median(d, 0)))
        print(f"  {'':18s} s/step median {np.median(s):.3f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
