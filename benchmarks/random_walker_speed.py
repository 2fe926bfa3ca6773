"""Seconds per click of the random walker, before and after the fast solver, with Dice.

Usage: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/random_walker_speed.py
[--data ../shared/data/left_atrium] [--split val] [--cases 4] [--clicks 10]
[--solvers skimage,fast] [--roi box|clicks] [--margin-mm 10] [--out speed.json]``

Each case is segmented as a person does it in the web page: a :class:`mecca.session.Session`
on the full-size volume, with ``--roi box`` an ROI box drawn around the target (its box
plus ``--margin-mm`` on each side), with ``--roi clicks`` no box (the session derives the
ROI from the first click and grows it as clicks and mask reach its sides, replaying the
clicks on the grown crop), then one foreground or background click per step (the
simulated user of IteR-MRL with one click: the centre of the largest error), and the
step's full-size mask read back (what the page shows). Timed per click: ``Session.step()``
plus that mask. ``--solvers`` names the random walker's solvers to compare:
``skimage`` is the setting before 2026-12-06 (``skimage.segmentation.random_walker``,
cg_j, from scratch), ``fast`` the default since (cached graph, foreground system only,
warm start from the previous step). Both get the same clicks on the same cases, in one
process, one after the other per case, so a busy machine slows both alike.
Do not tune on the test split.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from mecca.data.datasets import open_dataset
from mecca.data.roi import Box
from mecca.interaction.users import ErrorCentreUser
from mecca.io import Volume
from mecca.methods.classical import RandomWalkerMethod
from mecca.metrics import dice
from mecca.session import Session

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "left_atrium"


def run_case(
    vol: Volume, gt: np.ndarray, solver: str, clicks: int, margin_mm: float | None
) -> dict[str, list[float]]:
    """Seconds and Dice after each of ``clicks`` one-click steps with ``solver``; the ROI
    is the target's box plus ``margin_mm``, or derived from the clicks when None."""
    roi = None
    if margin_mm is not None:
        margin = [int(np.ceil(margin_mm / s)) for s in vol.spacing]
        roi = Box.from_mask(gt).grow(margin).clip(gt.shape)
    session = Session(vol, roi, method=RandomWalkerMethod(solver=solver), rng=0)
    user = ErrorCentreUser(n=1)
    rng = np.random.default_rng(0)
    pred = np.zeros(gt.shape, bool)
    seconds, method_seconds, dices = [], [], []
    for step in range(1, clicks + 1):
        new = user(pred, gt, step=step, rng=rng)
        if not new:
            break
        session.add_clicks([(c.kind, c.position) for c in new])
        t0 = time.perf_counter()
        result = session.step()
        pred = np.asarray(result.mask, bool)
        seconds.append(time.perf_counter() - t0)
        method_seconds.append(result.seconds)
        dices.append(100 * dice(pred, gt))
    return {"seconds": seconds, "method_seconds": method_seconds, "dice": dices}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--split", default="val")
    parser.add_argument("--cases", type=int, default=4, help="First N cases of the split.")
    parser.add_argument("--clicks", type=int, default=10, help="Clicks (steps) per case.")
    parser.add_argument("--solvers", default="skimage,fast")
    parser.add_argument("--roi", choices=("box", "clicks"), default="box")
    parser.add_argument("--margin-mm", type=float, default=10.0)
    parser.add_argument("--out", type=Path, help="Write the figures as JSON here.")
    args = parser.parse_args()
    if args.split == "test":
        parser.error("benchmark on train or val cases: the test split is for final figures")
    solvers = [s.strip() for s in args.solvers.split(",") if s.strip()]
    ds = open_dataset(args.data)
    case_ids = list(ds.splits[args.split])[: args.cases]
    per: dict[str, dict[str, dict[str, list[float]]]] = {s: {} for s in solvers}
    for case_id in case_ids:
        vol, gt = ds.load_case(case_id)
        for solver in solvers:
            margin = args.margin_mm if args.roi == "box" else None
            per[solver][case_id] = run_case(vol, gt, solver, args.clicks, margin)
        print(
            f"{case_id} {vol.shape}: "
            + "; ".join(
                f"{s} {np.median(per[s][case_id]['seconds']):.3f} s/click, "
                f"Dice {per[s][case_id]['dice'][-1]:.2f} %"
                for s in solvers
            ),
            flush=True,
        )
    summary = {}
    for solver in solvers:
        secs = np.concatenate([r["seconds"] for r in per[solver].values()])
        method = np.concatenate([r["method_seconds"] for r in per[solver].values()])
        final = [r["dice"][-1] for r in per[solver].values()]
        summary[solver] = {
            "median_s_per_click": float(np.median(secs)),
            "p90_s_per_click": float(np.percentile(secs, 90)),
            "max_s_per_click": float(np.max(secs)),
            "median_method_s": float(np.median(method)),
            "mean_final_dice": float(np.mean(final)),
            "clicks_timed": int(secs.size),
        }
    roi = f"target box + {args.margin_mm:g} mm" if args.roi == "box" else "from the clicks"
    print(
        f"\n{args.split} split, {len(case_ids)} cases ({', '.join(case_ids)}), {args.clicks} "
        f"one-click steps each, ROI {roi}; "
        f"{platform.machine()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"load average {os.getloadavg()[0]:.1f} at the end"
    )
    print(
        "| solver | s per click (median) | p90 | max | method s (median) | Dice after last click |"
    )
    print("|---|---|---|---|---|---|")
    for solver, row in summary.items():
        print(
            f"| {solver} | {row['median_s_per_click']:.3f} | {row['p90_s_per_click']:.3f} | "
            f"{row['max_s_per_click']:.3f} | {row['median_method_s']:.3f} | "
            f"{row['mean_final_dice']:.2f} % |"
        )
    if len(solvers) == 2:
        a, b = (summary[s]["median_s_per_click"] for s in solvers)
        print(f"\n{solvers[0]} / {solvers[1]} median seconds per click: {a / b:.1f}x")
    if args.out is not None:
        args.out.write_text(json.dumps({"summary": summary, "cases": per}, indent=1))


if __name__ == "__main__":
    main()
