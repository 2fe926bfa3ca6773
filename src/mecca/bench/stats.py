"""Paired comparison of methods in one benchmark run: is a Dice gap more than case noise?

Every method of a ``mecca benchmark`` run sees the same cases, boxes and user, so the fair
test of "A beats B" is paired over cases: the per-case difference of the Dice after the
last step, its mean, a 95 % percentile bootstrap interval over cases (10 000 resamples,
seeded, so a rerun prints the same interval) and the two-sided Wilcoxon signed-rank
p-value (SciPy). With the 16-40 test cases of the shared splits a gap of a few tenths of a
point is usually inside the interval: the report then says the methods are not told apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from mecca.errors import ConfigError

RESAMPLES = 10_000


def final_dice(method_result: dict[str, Any]) -> dict[str, float]:
    """Case id -> Dice (%) after the last step, from one method's ``results.json`` entry."""
    return {case_id: float(c["steps"][-1]["dice"]) for case_id, c in method_result["cases"].items()}


def paired_difference(
    a: Sequence[float], b: Sequence[float], *, resamples: int = RESAMPLES, seed: int = 0
) -> dict[str, Any]:
    """Statistics of ``a - b`` over paired cases (same order).

    Returns ``n``, ``mean``, ``ci_low``/``ci_high`` (95 % bootstrap interval of the mean),
    ``better``/``worse`` (cases where a is above / below b) and ``p_wilcoxon`` (None when
    every difference is zero, where the test is undefined).
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size == 0:
        raise ConfigError(
            f"paired comparison needs two equal, non-empty lists: {x.shape}, {y.shape}"
        )
    diff = x - y
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(resamples, diff.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    p = float(stats.wilcoxon(diff).pvalue) if np.any(diff != 0) else None
    return {
        "n": int(diff.size),
        "mean": float(diff.mean()),
        "ci_low": float(low),
        "ci_high": float(high),
        "better": int((diff > 0).sum()),
        "worse": int((diff < 0).sum()),
        "p_wilcoxon": p,
    }


def paired_against(report: dict[str, Any], reference: str) -> dict[str, dict[str, Any]]:
    """Every other method of a benchmark report against ``reference``: method -> statistics
    of (method - reference) final Dice over the cases both have."""
    methods = report["methods"]
    if reference not in methods:
        raise ConfigError(
            f"method {reference!r} is not in these results",
            hint=f"choose one of {', '.join(methods)}",
        )
    ref = final_dice(methods[reference])
    out = {}
    for name, result in methods.items():
        if name == reference:
            continue
        mine = final_dice(result)
        shared = [c for c in ref if c in mine]
        out[name] = paired_difference([mine[c] for c in shared], [ref[c] for c in shared])
    return out


def format_paired(report: dict[str, Any], reference: str) -> list[str]:
    """Markdown lines: one row per method, its final-Dice difference to ``reference``
    (the report's stored ``paired`` table when it has that reference, else computed)."""
    stored = report.get("paired")
    if stored and stored.get("reference") == reference:
        rows = stored["methods"]
    else:
        rows = paired_against(report, reference)
    if not rows:
        return []
    lines = [
        f"## Paired difference to {reference} after step {report['steps']} (Dice points)",
        "",
        "Per-case difference (method - reference): mean, 95 % bootstrap interval over cases, "
        "cases above / below, Wilcoxon signed-rank p.",
        "",
        "| method | mean | 95 % interval | above / below | p |",
        "|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        p = "n/a" if r["p_wilcoxon"] is None else f"{r['p_wilcoxon']:.3g}"
        lines.append(
            f"| {name} | {r['mean']:+.2f} | [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}] | "
            f"{r['better']} / {r['worse']} of {r['n']} | {p} |"
        )
    return [*lines, ""]


SAME_BENCHMARK = ("dataset", "split", "target", "protocol", "initial", "steps", "weights")
"""results.json fields that several runs must share to be pooled over user seeds (results
written before ``weights`` was recorded count as the shipped models: no weights)."""


def pool_seeds(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Runs of one benchmark that differ only in ``--seed`` (the simulated user's draws and
    the random ROI margins) as one report of the methods they all have, whose per-case Dice
    after the last step is the mean over the runs, plus ``seeds`` and ``seed_means``
    (method -> mean final Dice of each run, in run order).

    One seed's user is one draw of many possible ones: a gap between methods that changes
    sign from seed to seed is the user's noise, not the methods'. Averaging each case over
    seeds before pairing keeps the cases the unit of the paired test (:func:`paired_against`
    works on the result). ConfigError when fewer than two runs are given, when they differ
    in anything but the seed, repeat a seed, share no method or hold other cases.
    """
    if len(reports) < 2:
        raise ConfigError(f"pooling over seeds needs two runs or more, got {len(reports)}")
    first = reports[0]
    for key in SAME_BENCHMARK:
        values = {str(r.get(key) or None) for r in reports}
        if len(values) > 1:
            raise ConfigError(f"these runs differ in {key} ({', '.join(sorted(values))})")
    seeds = [r.get("seed") for r in reports]
    if len(set(seeds)) < len(seeds):
        raise ConfigError(f"two runs have the same seed ({seeds}): pool different seeds")
    names = [m for m in first["methods"] if all(m in r["methods"] for r in reports)]
    if not names:
        raise ConfigError("these runs share no method")
    methods: dict[str, Any] = {}
    seed_means: dict[str, list[float]] = {}
    for name in names:
        finals = [final_dice(r["methods"][name]) for r in reports]
        if any(set(f) != set(finals[0]) for f in finals):
            raise ConfigError(f"method {name!r} has other cases in some runs")
        seed_means[name] = [float(np.mean(list(f.values()))) for f in finals]
        methods[name] = {
            "cases": {
                case: {"steps": [{"dice": float(np.mean([f[case] for f in finals]))}]}
                for case in finals[0]
            }
        }
    return {"steps": first["steps"], "seeds": seeds, "seed_means": seed_means, "methods": methods}


def format_pooled(pooled: dict[str, Any], reference: str) -> list[str]:
    """Markdown lines for :func:`pool_seeds`: each method's mean final Dice per seed, the
    mean over seeds and its lead over ``reference`` per seed, then the paired table of the
    seed-averaged cases."""
    if reference not in pooled["methods"]:
        raise ConfigError(
            f"method {reference!r} is not in every run",
            hint=f"choose one of {', '.join(pooled['methods'])}",
        )
    seeds, means = pooled["seeds"], pooled["seed_means"]
    lines = [
        f"## Dice (%) after step {pooled['steps']}, mean over cases, per user seed",
        "",
        f"| method | {' | '.join(f'seed {s}' for s in seeds)} | mean | - {reference}, per seed |",
        f"|---|{'---|' * len(seeds)}---|---|",
    ]
    for name, values in means.items():
        gaps = (
            " ".join(f"{v - r:+.2f}" for v, r in zip(values, means[reference], strict=True))
            if name != reference
            else ""
        )
        cells = " | ".join(f"{v:.2f}" for v in values)
        lines.append(f"| {name} | {cells} | {np.mean(values):.2f} | {gaps} |")
    paired = format_paired(pooled, reference)
    if paired:
        paired[0] += f", each case averaged over {len(seeds)} seeds"
    return [*lines, "", *paired]
