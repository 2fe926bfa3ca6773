"""The benchmark reports how many clicks each method's own output honours."""

import json

from mecca.bench.report import format_report
from mecca.bench.runner import BenchSettings, run_benchmark


def test_the_report_gives_honoured_clicks_per_method(phantoms, tmp_path):
    settings = BenchSettings(
        data=phantoms,
        methods=("random_walker", "generalist"),
        split="train",
        steps=2,
        protocol="mecca",  # edge points: given as fg/bg pairs to methods without edge points
        max_cases=2,
    )
    report = run_benchmark(settings, tmp_path / "a", progress=False)
    for name in settings.methods:
        res = report["methods"][name]
        steps = [s for c in res["cases"].values() for s in c["steps"]]
        assert all(0.0 <= s["honoured_clicks"] <= 100.0 for s in steps), name
        assert 0.0 <= res["honoured_clicks"] <= 100.0
    stored = json.loads((tmp_path / "a" / "results.json").read_text())
    assert stored["methods"]["generalist"]["honoured_clicks"] is not None
    assert stored["models"] == {"random_walker": None, "generalist": "generalist"}
    text = (tmp_path / "a" / "report.md").read_text()
    assert "Models: generalist: generalist (learned methods" in text
    assert "honoured clicks %" in text
    row = next(line for line in text.splitlines() if line.startswith("| generalist | 2 |"))
    assert row.rstrip(" |").split("|")[-1].strip() == f"{res['honoured_clicks']:.1f}"
    # a method given only edge points has no labelled clicks: n/a
    for case in report["methods"]["generalist"]["cases"].values():
        for s in case["steps"]:
            s["honoured_clicks"] = None
    report["methods"]["generalist"]["honoured_clicks"] = None
    assert "| n/a |" in format_report(report)
