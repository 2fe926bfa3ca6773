"""The benchmark's results: per-method summaries, ``results.json``, ``results.csv``,
``report.md`` (the layout of the MECCA paper's Tables 1-2) and the Dice-vs-clicks plot."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from mecca import metrics
from mecca.bench import cvpr25, plots, stats
from mecca.io import atomic_write


def finite_or_none(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def _mean_std(values: list[list[float | None]]) -> tuple[list[float | None], list[float | None]]:
    """Per-step mean and std over cases, ignoring None (infinite distances)."""
    means, stds = [], []
    for column in zip(*values, strict=True):
        xs = np.array([v for v in column if v is not None], dtype=np.float64)
        means.append(float(xs.mean()) if xs.size else None)
        stds.append(float(xs.std()) if xs.size else None)
    return means, stds


def summarise(cases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per-method summary; Dice in %, distances in mm and voxels, seconds as medians.

    ``per_step`` lists have one entry per step; ``noc85``/``noc90`` count clicks with
    failures counted as the protocol's total clicks (``failures85``/``failures90``).
    """
    per_case = list(cases.values())
    col = {k: [[s[k] for s in c["steps"]] for c in per_case] for k in per_case[0]["steps"][0]}
    per_step: dict[str, list[float | None]] = {}
    for key in ("dice", "assd_mm", "assd_vox", "hd95_mm", "hd95_vox", "misunderstanding"):
        per_step[f"{key}_mean"], per_step[f"{key}_std"] = _mean_std(col[key])
    per_step["seconds_median"] = [
        float(np.median(c)) for c in zip(*col["step_seconds"], strict=True)
    ]
    per_step["method_seconds_median"] = [
        float(np.median(c)) for c in zip(*col["method_seconds"], strict=True)
    ]
    curves = [
        [c["initial_dice"] / 100] + [d / 100 for d in ds]
        for c, ds in zip(per_case, col["dice"], strict=True)
    ]
    clicks = [[0, *cs] for cs in col["clicks"]]
    budget = max(sum(c) for c in clicks)
    out: dict[str, Any] = {"per_step": per_step}
    for thr in (85, 90):
        n = metrics.noc(curves, clicks, thr / 100, budget)
        out[f"noc{thr}"], out[f"failures{thr}"] = n["noc"], n["failures"]
    falls = [metrics.stability(c[1:]) for c in curves]
    out["dice_fell_share"] = float(np.mean([f[0] for f in falls]))
    out["dice_fall_mean"] = float(np.mean([f[1] for f in falls]))
    out["dice_auc"] = float(np.mean([metrics.dice_auc(c[1:]) for c in curves])) * 100
    honoured = [s.get("honoured_clicks") for c in per_case for s in c["steps"]]
    kept = [h for h in honoured if h is not None]
    # the method's own output (before a session honours the clicks); None: no fg/bg clicks
    out["honoured_clicks"] = float(np.mean(kept)) if kept else None
    if all("cvpr25" in c for c in per_case):  # the organisers' protocol: their scores too
        out["cvpr25"] = cvpr25.summarise(per_case)
    out["cases"] = cases
    return out


def write_results(report: dict[str, Any], out: Path) -> None:
    """``results.json``, ``results.csv`` and ``report.md`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(
        out / "results.json",
        lambda tmp: tmp.write_text(json.dumps(report, indent=1), encoding="utf-8"),
    )

    def write_csv(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            first = True
            for name, res in report["methods"].items():
                for case_id, case in res["cases"].items():
                    for t, step in enumerate(case["steps"], start=1):
                        if first:
                            writer.writerow(["method", "case", "step", *step])
                            first = False
                        writer.writerow([name, case_id, t, *step.values()])

    atomic_write(out / "results.csv", write_csv)
    atomic_write(
        out / "report.md", lambda tmp: tmp.write_text(format_report(report), encoding="utf-8")
    )
    plots.plot_dice_vs_clicks(report, out / "dice_vs_clicks.png")


def _pm(mean: float | None, std: float | None, digits: int = 2) -> str:
    if mean is None or std is None:
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_report(report: dict[str, Any]) -> str:
    """Markdown tables: Dice (%) and ASSD (mm) per step, then NoC, stability and speed."""
    steps = report["steps"]
    head = "| method | " + " | ".join(f"step {t}" for t in range(1, steps + 1)) + " |"
    rule = "|---" * (steps + 1) + "|"
    lines = [
        f"# Benchmark: {report['dataset']} ({report['split']}"
        + (f", target {report['target']}" if report.get("target") else "")
        + "), protocol "
        f"{report['protocol']}, seed {report['seed']}"
        + (f", re-crop {report['recrop']}" if report.get("recrop") else ""),
        "",
    ]
    skipped = report.get("skipped_cases") or []
    if skipped:
        lines += [f"Cases of the split without the target, not run: {len(skipped)}.", ""]
    models = {n: m for n, m in report.get("models", {}).items() if m is not None}
    if models:
        ran = ", ".join(f"{n}: {m}" for n, m in models.items())
        lines += [f"Models: {ran} (learned methods; the others have none).", ""]
    for key, title in (
        ("dice", "Dice (%)"),
        ("assd_mm", "ASSD (mm)"),
        ("misunderstanding", "Misunderstanding rate (share of crop voxels)"),
    ):
        lines += [f"## {title}", "", head, rule]
        for name, res in report["methods"].items():
            ps = res["per_step"]
            digits = 4 if key == "misunderstanding" else 2
            cells = [
                _pm(m, s, digits) for m, s in zip(ps[f"{key}_mean"], ps[f"{key}_std"], strict=True)
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "## Clicks, stability and speed",
        "",
        "| method | cases | NoC@85 (fail) | NoC@90 (fail) | Dice AUC | Dice fell | "
        "median s/step (model) | honoured clicks % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, res in report["methods"].items():
        ps = res["per_step"]
        lines.append(
            f"| {name} | {len(res['cases'])} | {res['noc85']:.1f} ({res['failures85']}) | "
            f"{res['noc90']:.1f} ({res['failures90']}) | {res['dice_auc']:.2f} | "
            f"{100 * res['dice_fell_share']:.0f} % | "
            f"{np.median(ps['seconds_median']):.3f} "
            f"({np.median(ps['method_seconds_median']):.3f}) | "
            + ("n/a" if res.get("honoured_clicks") is None else f"{res['honoured_clicks']:.1f}")
            + " |"
        )
    lines += [
        "",
        "honoured clicks %: of the foreground/background clicks given so far, the share "
        "whose voxel has its label in the method's own mask, over all steps and cases "
        "(before a session honours them; n/a: edge points only).",
    ]
    lines += ["", *cvpr25.format_section(report)]
    lines += ["", *stats.format_paired(report, next(iter(report["methods"])))]
    return "\n".join(lines).rstrip("\n") + "\n"
