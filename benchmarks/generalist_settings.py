"""Choose the generalist's inference settings on val splits (never test).

Each variant sets attributes of the shipped generalist (``GeneralistMethod``): the
``grid`` variants (the finer grid for a large ROI, ``max_grid`` / ``FINE_FROM``;
docs/defaults.md), the ``box_grid`` variants (the finer grid for a box prompt's large ROI
alone, ``box_fine``, with ``fine_flips``), the ``update`` variants (a click step's change
kept near its clicks or not, ``local``) and the ``roi`` variants (the CVPR user's ROI
grown when the mask reaches it, ``grow_roi`` of :func:`mecca.bench.cvpr25.run_case`) and
the ``recrop`` variants (a re-cropped method starts from the mask so far with every click
in one step, or from nothing with every click in one step or the history replayed one
click a step, ``recrop``) and the ``tta`` variants (test-time flips, ``flips``), the
``threshold`` and ``box_threshold`` variants (the mask's threshold, ``logit_offset``, and
the box-only step's, ``box_logit_offset``) and the ``box_context`` variants (a box
prompt's ROI widened to a least extent, ``BOX_MIN_EXTENT`` of
:mod:`mecca.interaction.clicks`). Two users:

* ``cvpr25``: box, then 5 clicks (:mod:`mecca.bench.cvpr25`): mean DSC after the box and
  final DSC, and the largest fall of the mean DSC from one click to the next;
* ``points``: 3 foreground then 3 background points, no box, a session with a user's
  settings (``run_session`` of ``benchmarks/points_only.py``, ROI margin 40 mm): mean Dice after
  the first and the third foreground point and after the last point, and the share of
  points after which Dice fell.

Usage::

    python benchmarks/generalist_settings.py
        grid|box_grid|update|roi|recrop|tta|threshold|box_threshold|box_context
        [--weights RUN_OR_BUNDLE]
        [--only "base grid,64x64x48 from 1.5"] [--data ../shared/data]
        [--extra ~/.cache/mecca-data-extra] [--all-cases] [--box-only] [--out results.json]

``--weights``: another model than the shipped one (a run folder: its best.pt);
``--only``: some of the variants; ``--all-cases``: every val case of every target (not the
first 8 of the hippocampus and OpenKBP); ``--box-only``: the CVPR user alone (the points
rows are NaN).

Val splits: hippocampus, left atrium, ACDC LV / RV / myocardium, and, when the extra
datasets are built, the unseen CHAOS liver / kidneys and OpenKBP larynx and esophagus, and
the OpenKBP spinal cord (first 8 cases holding each; the thin long targets where Dice fell
most on test, added 2026-12-06 late).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from points_only import run_session  # the script beside this one

from mecca.bench import cvpr25
from mecca.data.datasets import open_dataset
from mecca.errors import InputError
from mecca.interaction import clicks
from mecca.methods.generalist import method as generalist

VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "grid": {  # every input (4 flipped copies on either grid, as first measured)
        "base grid": {"max_grid": None, "box_fine": False},
        **{
            f"64x64x48 from {r}": {
                "max_grid": (64, 64, 48),
                "FINE_FROM": r,
                "fine_flips": generalist.FLIPS,
            }
            for r in (1.25, 1.5, 2.0)
        },
    },
    "box_grid": {  # box prompts alone on the finer grid (default since 2026-12-07: no flips)
        "box on the base grid": {"box_fine": False},
        "box on 64x64x48 from 1.5 flip i": {"box_fine": True, "fine_flips": ((0,),)},
        "box on 64x64x48 from 1.5 no flips": {"box_fine": True, "fine_flips": ()},
    },
    "update": {"global": {"local": False}, "local": {"local": True}},
    "slice_box": {"3D box": {"slice_boxes": False}, "slice box": {"slice_boxes": True}},
    "roi": {"fixed ROI": {"grow_roi": 0}, "ROI grows": {"grow_roi": 2}},
    "recrop": {
        "mask carried": {"recrop": "carry"},
        "all clicks at once": {"recrop": "restart"},
        "replayed": {"recrop": "replay"},
    },
    "threshold": {
        "p > 0.5": {"logit_offset": 0.0},
        "p > 0.4": {"logit_offset": 0.405},
        "p > 0.3": {"logit_offset": 0.847},
    },
    "box_threshold": {
        "box step p > 0.5": {"box_logit_offset": 0.0},
        "box step p > 0.4": {"box_logit_offset": 0.405},
        "box step p > 0.3": {"box_logit_offset": 0.847},
    },
    "box_context": {
        "margin alone": {"BOX_MIN_EXTENT": None},
        "at least 16x16x8": {"BOX_MIN_EXTENT": (16, 16, 8)},
        "at least 24x24x12": {"BOX_MIN_EXTENT": (24, 24, 12)},
    },
    "tta": {
        "no flips": {"flips": ()},
        "flip i": {"flips": ((0,),)},
        "flip i, j, ij": {"flips": ((0,), (1,), (0, 1))},
    },
}
DEFAULTS: dict[str, Any] = {
    "max_grid": None,
    "box_fine": True,
    "fine_flips": generalist.FINE_FLIPS,
    "local": False,
    "flips": generalist.FLIPS,
    "logit_offset": 0.0,
    "box_logit_offset": 0.0,
    "slice_boxes": False,
}
"""What every variant starts from: the shipped method's settings."""


def splits(data: Path, extra: Path) -> list[tuple[Path, str | None, int | None]]:
    """(dataset folder, target, case cap) of every val split used."""
    rows: list[tuple[Path, str | None, int | None]] = [
        (data / "hippocampus", None, 8),
        (data / "left_atrium", None, None),
        *[(data / "acdc", t, None) for t in ("lv", "rv", "myocardium")],
    ]
    if (extra / "chaos_mr").is_dir():
        rows += [(extra / "chaos_mr", t, None) for t in ("liver", "right_kidney", "left_kidney")]
        rows += [(extra / "openkbp_ct", t, 8) for t in ("larynx", "esophagus", "spinal_cord")]
    return rows


def val_cases(
    data: Path, extra: Path, all_cases: bool = False
) -> Iterator[tuple[str, list[tuple[Any, np.ndarray]]]]:
    """(``dataset:target``, its first val cases as (volume, truth)) for each of
    :func:`splits` (``all_cases``: every val case, no cap); a case without the target is
    passed over (OpenKBP: not every patient has every organ)."""
    for folder, target, cap in splits(data, extra):
        cap = None if all_cases else cap
        ds = open_dataset(folder)
        cases = []
        for case in ds.cases("val"):
            try:
                cases.append(ds.load_case(case, target))
            except InputError:
                continue
        yield f"{folder.name}:{target or ds.default_target}", cases[:cap]


def apply(method: generalist.GeneralistMethod, settings: dict[str, Any]) -> dict[str, Any]:
    """Set a variant: method attributes, FINE_FROM and BOX_MIN_EXTENT on their modules;
    returns the CVPR loop's options (``grow_roi``, ``recrop``)."""
    for key, value in DEFAULTS.items():
        setattr(method, key, value)
    generalist.FINE_FROM = 1.5
    clicks.BOX_MIN_EXTENT = None
    loop: dict[str, Any] = {}
    for key, value in settings.items():
        if key in ("grow_roi", "recrop"):
            loop[key] = value
        elif key == "FINE_FROM":
            generalist.FINE_FROM = value
        elif key == "BOX_MIN_EXTENT":
            clicks.BOX_MIN_EXTENT = value
        else:
            setattr(method, key, value)
    return loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("which", choices=sorted(VARIANTS))
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--extra", type=Path, default=Path.home() / ".cache/mecca-data-extra")
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--only", help="comma-separated variant names")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--all-cases", action="store_true", help="no cap on the val cases")
    parser.add_argument("--box-only", action="store_true", help="the CVPR user alone")
    args = parser.parse_args()
    method = generalist.generalist_factory(args.weights)
    variants = VARIANTS[args.which]
    if args.only:
        variants = {k: variants[k] for k in args.only.split(",")}
    table: dict[str, dict[str, dict[str, float]]] = {}
    points_runs: dict[tuple[str, int, str], list[float]] = {}  # variants that differ only
    # in the CVPR loop's options share the points user's sessions (run once)
    for name, cases in val_cases(args.data, args.extra.expanduser(), args.all_cases):
        for label, settings in variants.items():
            loop = apply(method, settings)
            box, curves, p1, p3, p6, fell = [], [], [], [], [], []
            for index, (volume, gt) in enumerate(cases):
                rng = np.random.default_rng([0, index])
                rec, _ = cvpr25.run_case(method, volume.array, gt, volume.spacing, rng=rng, **loop)
                box.append(rec["box_step"]["dice"])
                curves.append([s["dice"] for s in rec["steps"]])
                same = json.dumps({k: v for k, v in settings.items() if k not in loop})
                key = (name, index, same)
                if args.box_only:
                    points_runs[key] = [float("nan")] * 6
                elif key not in points_runs:
                    points_runs[key] = run_session(method, volume, gt, 40.0)["dice"]
                d = points_runs[key]
                p1.append(d[0])
                p3.append(d[2])
                p6.append(d[-1])
                fell += [b < a - 1e-6 for a, b in zip(d, d[1:], strict=False)]
            mean_curve = np.mean(curves, axis=0)
            row = {
                "cvpr25_box": float(np.mean(box)),
                "cvpr25_final": float(mean_curve[-1]),
                "cvpr25_fall": float(max(0.0, np.max(mean_curve[:-1] - mean_curve[1:]))),
                "points_1fg": 100 * float(np.mean(p1)),
                "points_3fg": 100 * float(np.mean(p3)),
                "points_final": 100 * float(np.mean(p6)),
                "points_fell_%": 100 * float(np.mean(fell)),
                "n": len(cases),
            }
            table.setdefault(name, {})[label] = row
            print(name, label, json.dumps({k: round(v, 2) for k, v in row.items()}), flush=True)
    for label in variants:
        means = {
            k: round(float(np.mean([t[label][k] for t in table.values()])), 2)
            for k in (
                "cvpr25_final",
                "cvpr25_fall",
                "points_1fg",
                "points_3fg",
                "points_final",
                "points_fell_%",
            )
        }
        print(label, "mean over targets", json.dumps(means), flush=True)
    if args.out:
        args.out.write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main()
