"""Test-time adaptation settings compared on a validation split (the scribble protocol).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tta_settings.py \\
        --data ../shared/data/hippocampus --split val --cases 4 \\
        --settings '{"paper": {"border_background": false}, "alpha1": {"alpha": 1}}' \\
        --out docs/results/hippocampus/tta_settings.json

Each entry of ``--settings`` is a name and ``TTAConfig`` keyword options (the rest keep
their defaults); every entry runs the first ``--cases`` cases of the split with the
shipped P-Net (``--model``) under the benchmark's scribble protocol (one stroke per step
along the largest error, ``mecca benchmark --protocol scribble``), the same ROI and strokes
seeds as the benchmark. It prints and writes, per entry, the P-Net's own Dice (before any
scribble), mean Dice after each step and the median seconds per adaptation. Use a
validation split: the settings chosen here are then reported on the test split.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from mecca.bench.runner import BenchSettings, run_case
from mecca.data.datasets import open_dataset
from mecca.methods.tta import TTAConfig, TTAMethod


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--model", default="pnet_hippocampus")
    parser.add_argument("--settings", required=True, help="JSON: {name: {TTAConfig options}}")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    entries = json.loads(args.settings)
    ds = open_dataset(args.data)
    values = ds.resolve_target(None)
    loaded = [ds.load_case(c, values) for c in ds.cases(args.split)[: args.cases]]
    bench = BenchSettings(
        data=args.data, methods=("tta",), split=args.split, protocol="scribble", steps=args.steps
    )
    rows = []
    for name, options in entries.items():
        method = TTAMethod.from_supervised(args.model, TTAConfig(**options))
        dice, seconds, initial, t0 = [], [], [], time.perf_counter()
        for index, (volume, gt) in enumerate(loaded):
            result, _ = run_case(bench, method, index, volume.array, gt, volume.spacing)
            initial.append(result["initial_dice"])
            dice.append([s["dice"] for s in result["steps"]])
            seconds += [s["method_seconds"] for s in result["steps"]]
        row = {
            "name": name,
            "options": options,
            "initial_dice": float(np.mean(initial)),
            "dice_per_step": [round(float(d), 2) for d in np.mean(dice, axis=0)],
            "seconds_median": round(float(np.median(seconds)), 2),
            "wall_seconds": round(time.perf_counter() - t0, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "data": str(args.data),
            "split": args.split,
            "cases": len(loaded),
            "model": args.model,
            "protocol": "scribble",
            "settings": rows,
        }
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
