"""Validation curves of training runs compared at equal budgets (mecca curves)."""

import json

import pytest
from click.testing import CliRunner

from mecca.bench.curves import compare_runs, validation_curve
from mecca.cli import main
from mecca.errors import ConfigError


def write_log(run, checks, *, key="episode"):
    run.mkdir(parents=True)
    lines = [{"type": "start", key: 0}]
    for when, dice in checks:
        lines.append({"type": "train", key: when, "total": 0.1})
        lines.append({"type": "val", key: when, "dice_per_step": dice})
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return run


def test_a_curve_keeps_checks_up_to_the_budget_and_the_last_of_a_repeated_check(tmp_path):
    run = write_log(tmp_path / "a", [(50, [0.5, 0.6]), (100, [0.6, 0.7]), (100, [0.6, 0.75]),
                                     (150, [0.9, 0.95])])
    curve = validation_curve(run, upto=100)
    assert list(curve) == [50, 100]
    assert curve[100] == pytest.approx([60.0, 75.0])


def test_supervised_runs_count_steps(tmp_path):
    run = tmp_path / "s"
    run.mkdir()
    (run / "log.jsonl").write_text(json.dumps({"type": "val", "step": 250, "dice": 0.8}) + "\n")
    assert validation_curve(run) == {250: pytest.approx([80.0])}


def test_compare_writes_json_table_and_plot(tmp_path):
    a = write_log(tmp_path / "a", [(50, [0.5, 0.6]), (100, [0.6, 0.7])])
    b = write_log(tmp_path / "b", [(50, [0.4, 0.8]), (75, [0.1, 0.2]), (100, [0.5, 0.65])])
    summary = compare_runs({"plain": a, "focal": b}, tmp_path / "out")
    assert summary["common_checks"] == [50, 100]
    assert summary["runs"]["focal"]["best"] == {"check": 50, "dice_per_step": [40.0, 80.0]}
    table = (tmp_path / "out" / "curves.md").read_text()
    assert "| 100 | 70.0 | 65.0 |" in table
    assert (tmp_path / "out" / "curves.png").stat().st_size > 1000
    assert json.loads((tmp_path / "out" / "curves.json").read_text()) == summary


def test_a_run_without_validation_is_refused(tmp_path):
    run = write_log(tmp_path / "a", [])
    with pytest.raises(ConfigError, match="no validation"):
        validation_curve(run)


def test_the_command_line(tmp_path):
    a = write_log(tmp_path / "a", [(50, [0.5, 0.6])])
    result = CliRunner().invoke(main, ["curves", "--run", f"x={a}", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "| 50 | 60.0 |" in result.output
    bad = CliRunner().invoke(main, ["curves", "--run", str(a), "--out", str(tmp_path / "o")])
    assert bad.exit_code != 0 and "NAME=VALUE" in bad.output
