"""Paired statistics of benchmark results (mecca.bench.stats)."""

import numpy as np
import pytest

from mecca.bench.stats import (
    format_paired,
    format_pooled,
    paired_against,
    paired_difference,
    pool_seeds,
)
from mecca.errors import ConfigError


def _report(finals: dict[str, list[float]]) -> dict:
    """A results.json-shaped report with one step per case."""
    methods = {
        name: {"cases": {f"c{i}": {"steps": [{"dice": d}]} for i, d in enumerate(ds)}}
        for name, ds in finals.items()
    }
    return {"steps": 1, "methods": methods}


def test_a_clear_gap_is_told_apart_and_a_noise_gap_is_not():
    rng = np.random.default_rng(1)
    base = rng.uniform(80, 90, 40)
    clear = paired_difference(base + 1.0 + rng.normal(0, 0.3, 40), base)
    assert clear["ci_low"] > 0 and clear["p_wilcoxon"] < 1e-6
    assert clear["better"] == 40 and clear["worse"] == 0 and clear["n"] == 40
    noise = paired_difference(base + rng.normal(0, 1.0, 40), base)
    assert noise["ci_low"] < 0 < noise["ci_high"] and noise["p_wilcoxon"] > 0.05
    assert noise["ci_low"] <= noise["mean"] <= noise["ci_high"]


def test_the_interval_is_seeded_and_equal_methods_have_no_p():
    a, b = [85.0, 86.0, 90.0, 70.0], [84.0, 87.0, 88.0, 71.0]
    assert paired_difference(a, b) == paired_difference(a, b)
    same = paired_difference(a, a)
    assert same["mean"] == 0.0 and same["p_wilcoxon"] is None and same["better"] == 0


def test_unpaired_or_empty_lists_are_refused():
    with pytest.raises(ConfigError, match="equal"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ConfigError, match="non-empty"):
        paired_difference([], [])


def test_every_method_is_compared_with_the_reference_on_shared_cases():
    report = _report({"mecca": [80.0, 85.0, 90.0], "itermrl": [81.0, 86.0, 91.0]})
    rows = paired_against(report, "mecca")
    assert set(rows) == {"itermrl"} and rows["itermrl"]["mean"] == pytest.approx(1.0)
    lines = format_paired(report, "itermrl")
    assert lines[0] == "## Paired difference to itermrl after step 1 (Dice points)"
    assert "| mecca | -1.00 | [-1.00, -1.00] | 0 / 3 of 3 |" in lines[-2]
    with pytest.raises(ConfigError, match="not in these results"):
        paired_against(report, "random_walker")
    assert format_paired(_report({"mecca": [80.0]}), "mecca") == []


def test_a_stored_paired_table_is_formatted_not_recomputed():
    report = _report({"mecca": [80.0, 85.0, 90.0], "itermrl": [81.0, 86.0, 91.0]})
    stored = paired_against(report, "mecca")
    report["paired"] = {"reference": "mecca", "step": 1, "methods": stored}
    stored["itermrl"]["mean"] = 9.0  # marks the stored rows
    assert "| itermrl | +9.00 |" in format_paired(report, "mecca")[-2]
    assert "| mecca | -1.00 |" in format_paired(report, "itermrl")[-2]  # other reference


def _seed_run(seed: int, finals: dict[str, list[float]], **fields: object) -> dict:
    return {**_report(finals), "seed": seed, "split": "test", "protocol": "mecca", **fields}


def test_runs_with_other_seeds_pool_case_by_case():
    runs = [
        _seed_run(0, {"mecca": [80.0, 90.0], "itermrl": [82.0, 90.0], "unet": [70.0, 70.0]}),
        _seed_run(1, {"mecca": [84.0, 90.0], "itermrl": [82.0, 89.0]}),
    ]
    pooled = pool_seeds(runs)
    assert pooled["seeds"] == [0, 1] and list(pooled["methods"]) == ["mecca", "itermrl"]
    assert pooled["seed_means"]["mecca"] == [85.0, 87.0]
    rows = paired_against(pooled, "mecca")  # cases averaged: mecca 82, 90; itermrl 82, 89.5
    assert rows["itermrl"]["mean"] == pytest.approx(-0.25)
    assert rows["itermrl"]["better"] == 0 and rows["itermrl"]["worse"] == 1
    lines = format_pooled(pooled, "mecca")
    assert "| mecca | 85.00 | 87.00 | 86.00 |  |" in lines
    assert "| itermrl | 86.00 | 85.50 | 85.75 | +1.00 -1.50 |" in lines
    assert any("averaged over 2 seeds" in line for line in lines)
    with pytest.raises(ConfigError, match="not in every run"):
        format_pooled(pooled, "unet")


def test_pooling_refuses_runs_that_are_not_one_benchmark():
    a = _seed_run(0, {"mecca": [80.0, 90.0]})
    with pytest.raises(ConfigError, match="two runs or more"):
        pool_seeds([a])
    with pytest.raises(ConfigError, match="same seed"):
        pool_seeds([a, _seed_run(0, {"mecca": [81.0, 90.0]})])
    with pytest.raises(ConfigError, match="differ in split"):
        pool_seeds([a, _seed_run(1, {"mecca": [80.0, 90.0]}, split="val")])
    other_model = _seed_run(1, {"mecca": [80.0, 90.0]}, weights=[["mecca", "runs/b"]])
    with pytest.raises(ConfigError, match="differ in weights"):
        pool_seeds([a, other_model])
    assert pool_seeds([a, _seed_run(1, {"mecca": [80.0, 90.0]}, weights=[])])["seeds"] == [0, 1]
    with pytest.raises(ConfigError, match="share no method"):
        pool_seeds([a, _seed_run(1, {"itermrl": [80.0, 90.0]})])
    with pytest.raises(ConfigError, match="other cases"):
        pool_seeds([a, _seed_run(1, {"mecca": [80.0, 90.0, 70.0]})])
