"""Choose when the generalist runs on its finer grid (``max_grid``, ``FINE_FROM``) on val.

Runs the CVPR 2025 protocol (box, then 5 clicks; :mod:`mecca.bench.cvpr25`) with the
shipped generalist under each candidate (the base grid always; 64 x 64 x 48 from a ROI
1.25, 1.5 or 2 times the base grid along some axis) and prints the mean DSC after the box, the
final DSC and the median network seconds per step, per split and target::

    python benchmarks/generalist_grid.py [--data ../shared/data] [--extra ~/.cache/mecca-data-extra]

Val splits only (never test): hippocampus, left atrium, ACDC LV / RV / myocardium, and the
unseen CHAOS liver and OpenKBP larynx when the extra datasets are built.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mecca.bench import cvpr25
from mecca.data.datasets import open_dataset
from mecca.errors import InputError
from mecca.methods.generalist import method as generalist

CAPS = {
    "base grid": ((48, 48, 32), 0.0),
    **{f"64x64x48 from {r}": ((64, 64, 48), r) for r in (1.25, 1.5, 2.0)},
}


def splits(data: Path, extra: Path) -> list[tuple[Path, str | None, int | None]]:
    """(dataset folder, target, case cap) of every val split used."""
    rows: list[tuple[Path, str | None, int | None]] = [
        (data / "hippocampus", None, None),
        (data / "left_atrium", None, None),
        *[(data / "acdc", t, None) for t in ("lv", "rv", "myocardium")],
    ]
    if (extra / "chaos_mr").is_dir():
        rows += [(extra / "chaos_mr", "liver", None), (extra / "openkbp_ct", "larynx", 8)]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--extra", type=Path, default=Path.home() / ".cache/mecca-data-extra")
    args = parser.parse_args()
    method = generalist.generalist_factory()
    table: dict[str, dict[str, list[float]]] = {}
    for folder, target, cap in splits(args.data, args.extra.expanduser()):
        ds = open_dataset(folder)
        cases = ds.cases("val")[:cap]
        name = f"{folder.name}:{target or ds.default_target}"
        for label, (grid, ratio) in CAPS.items():
            method.max_grid, generalist.FINE_FROM = grid, ratio
            box, final, secs = [], [], []
            for index, case in enumerate(cases):
                try:
                    volume, gt = ds.load_case(case, target)
                except InputError:  # OpenKBP: not every patient has every organ
                    continue
                rec, _ = cvpr25.run_case(
                    method,
                    volume.array,
                    gt,
                    volume.spacing,
                    rng=np.random.default_rng([0, index]),
                )
                box.append(rec["box_step"]["dice"])
                final.append(rec["steps"][-1]["dice"])
                secs += [s["method_seconds"] for s in rec["steps"]]
            row = {
                "box": float(np.mean(box)),
                "final": float(np.mean(final)),
                "s": float(np.median(secs)),
                "n": len(box),
            }
            table.setdefault(name, {})[label] = row
            print(name, label, json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)
    for label in CAPS:
        print(
            label,
            "mean final",
            round(float(np.mean([t[label]["final"] for t in table.values()])), 4),
        )


if __name__ == "__main__":
    main()
