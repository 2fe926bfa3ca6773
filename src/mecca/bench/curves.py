"""Validation curves of training runs side by side (``mecca curves``).

Ablations that change how a model is trained (the reward weighting of MECCA's Fig. 9, the
labeled fraction of its Table 3, T = 1 vs 5 of IteR-MRL's Table 7) are compared at equal
training budgets: this reads each run's ``log.jsonl`` validation lines (Dice per step on
the first ``val_cases`` cases of the val split), keeps those up to ``upto`` episodes, and
writes ``curves.json``, ``curves.md`` (Dice after the last step at every common check,
and each run's best check) and ``curves.png`` (one line per run).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mecca.bench.plots import pyplot, save_png
from mecca.errors import ConfigError
from mecca.io import atomic_write
from mecca.training.run import read_log


def validation_curve(run: Path, upto: int | None = None) -> dict[int, list[float]]:
    """Episode (or step) -> validation Dice (%) per interaction step, from a run's log.

    A resumed run may log a check twice (the same episode after a restart); the last wins.
    """
    curve: dict[int, list[float]] = {}
    for record in read_log(Path(run)):
        if record.get("type") != "val":
            continue
        when = int(record.get("episode", record.get("step", -1)))
        per_step = record.get("dice_per_step") or [record["dice"]]
        if upto is None or when <= upto:
            curve[when] = [100.0 * float(d) for d in per_step]
    if not curve:
        raise ConfigError(f"run {run} has no validation lines in its log.jsonl", path=Path(run))
    return dict(sorted(curve.items()))


def compare_runs(runs: Mapping[str, Path], out: Path, upto: int | None = None) -> dict[str, Any]:
    """Write curves.json, curves.md and curves.png for ``runs`` (name -> run folder)."""
    if not runs:
        raise ConfigError("name at least one run (NAME=RUN_DIR)")
    curves = {name: validation_curve(path, upto) for name, path in runs.items()}
    common = sorted(set.intersection(*(set(c) for c in curves.values())))
    summary = {
        "upto": upto,
        "runs": {
            name: {
                "folder": str(runs[name]),
                "checks": {str(k): v for k, v in curve.items()},
                "best": _best(curve),
            }
            for name, curve in curves.items()
        },
        "common_checks": common,
    }
    out.mkdir(parents=True, exist_ok=True)
    _write_text(out / "curves.json", _json(summary))
    _write_text(out / "curves.md", _table(curves, common))
    _plot(curves, out / "curves.png")
    return summary


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _best(curve: dict[int, list[float]]) -> dict[str, Any]:
    when = max(curve, key=lambda k: curve[k][-1])
    return {"check": when, "dice_per_step": curve[when]}


def _json(data: Any) -> str:
    import json

    return json.dumps(data, indent=1) + "\n"


def _table(curves: dict[str, dict[int, list[float]]], common: list[int]) -> str:
    names = list(curves)
    lines = [
        "Validation Dice (%) after the last interaction step, at the checks all runs share",
        "",
        "| check | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for when in common:
        row = " | ".join(f"{curves[n][when][-1]:.1f}" for n in names)
        lines.append(f"| {when} | {row} |")
    lines += ["", "Best check of each run (Dice % per interaction step)", ""]
    lines += ["| run | check | Dice per step |", "|---|---|---|"]
    for name, curve in curves.items():
        best = _best(curve)
        steps = ", ".join(f"{d:.1f}" for d in best["dice_per_step"])
        lines.append(f"| {name} | {best['check']} | {steps} |")
    return "\n".join(lines) + "\n"


def _plot(curves: dict[str, dict[int, list[float]]], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, curve in curves.items():
        ax.plot(list(curve), [v[-1] for v in curve.values()], marker="o", ms=3, label=name)
    ax.set_xlabel("training episodes (steps)")
    ax.set_ylabel("validation Dice % after the last step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_png(fig, path)
