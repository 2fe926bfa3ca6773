"""A session whose ROI grows: carry the mask so far onto the new crop (one step with every
click) or replay the click history one step each. Val splits only (those of
``generalist_settings.py``), the points user of ``points_only.py`` (3 foreground then 3
background points, no box, ROI margin 40 mm), the shipped generalist, the product path
(:attr:`mecca.session.Session.carry_from_steps`):

    python benchmarks/session_carry.py [--out results.json]

Variants: ``replay`` (the session before 2026-12-07, ``carry_from_steps=None``), ``carry``
(every growth, ``1``), ``carry after the first step`` (``2``, the default since then).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import points_only  # the scripts beside this one
from generalist_settings import val_cases

from mecca.methods.generalist import method as generalist
from mecca.session import Session


def _session_carrying_from(steps: int | None) -> type[Session]:
    return type(f"Session_{steps}", (Session,), {"carry_from_steps": steps})


VARIANTS: dict[str, type[Session]] = {
    "replay": _session_carrying_from(None),
    "carry": _session_carrying_from(1),
    "carry after the first step": _session_carrying_from(2),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--extra", type=Path, default=Path.home() / ".cache/mecca-data-extra")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    method = generalist.generalist_factory(None)
    table: dict[str, dict[str, dict[str, float]]] = {}
    for name, cases in val_cases(args.data, args.extra.expanduser()):
        for label, cls in VARIANTS.items():
            points_only.Session = cls  # type: ignore[misc]  # run_session builds this one
            dice, seconds = [], []
            for volume, gt in cases:
                run: dict[str, Any] = points_only.run_session(method, volume, gt, 40.0)
                dice.append(run["dice"])
                seconds += run["seconds"]
            d = np.array(dice)
            table.setdefault(name, {})[label] = {
                "first": 100 * float(d[:, 0].mean()),
                "final": 100 * float(d[:, -1].mean()),
                "fell_%": 100 * float(np.mean(d[:, 1:] < d[:, :-1] - 1e-6)),
                "median_s": float(np.median(seconds)),
                "max_s": float(np.max(seconds)),
            }
            print(name, label, json.dumps({k: round(v, 3) for k, v in table[name][label].items()}))
    for label in VARIANTS:
        keys = ("first", "final", "fell_%", "median_s", "max_s")
        means = {k: round(float(np.mean([t[label][k] for t in table.values()])), 3) for k in keys}
        print(label, "mean over targets", json.dumps(means))
    if args.out:
        args.out.write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main()
