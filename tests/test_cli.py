import json

import nibabel as nib
import numpy as np
from click.testing import CliRunner

from conftest import sphere
from mecca.cli import main


def test_help_lists_commands_with_examples():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in (
        "demo",
        "evaluate",
        "phantom",
        "train",
        "export-model",
        "segment",
        "benchmark",
        "serve",
        "compare",
        "models",
    ):
        assert command in result.output
        sub = CliRunner().invoke(main, [command, "--help"])
        assert sub.exit_code == 0 and "mecca " + command in sub.output


def _step_rows(output):
    return [line.split() for line in output.splitlines() if line.strip()[:1].isdigit()]


def test_demo_gives_each_method_the_user_it_takes():
    """Edge-point methods (MECCA, IteR-MRL trained with MECCA's user) get the edge user."""
    from mecca import methods
    from mecca.demo import default_user

    assert default_user(methods.get("mecca", model="mecca_phantom")) == "edge"
    assert default_user(methods.get("edge_itermrl")) == "edge"
    assert default_user(methods.get("itermrl", model="itermrl_hippocampus")) == "error_centre"
    assert default_user(methods.get("random_walker")) == "error_centre"
    result = CliRunner().invoke(main, ["demo", "--method", "edge_itermrl", "--steps", "1"])
    assert result.exit_code == 0, result.output
    assert "user edge" in result.output and _step_rows(result.output)[-1][1] == "25"


def test_demo_prints_a_step_table():
    args = ["demo", "--steps", "2", "--seed", "1", "--method", "random_walker"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = _step_rows(result.output)
    assert [r[0] for r in rows] == ["0", "1", "2"]
    assert 0.0 <= float(rows[-1][2]) <= 100.0


def test_default_demo_runs_the_default_method_and_says_so():
    from mecca.cli import DEFAULT_METHOD
    from mecca.methods.registry import DEFAULT_METHOD as REGISTRY_DEFAULT

    assert DEFAULT_METHOD == REGISTRY_DEFAULT == "generalist"
    result = CliRunner().invoke(main, ["demo"])
    assert result.exit_code == 0, result.output
    assert "method generalist  model generalist  user error_centre" in result.output
    rows = _step_rows(result.output)
    assert len(rows) == 6
    assert float(rows[-1][2]) > 75.0  # the generalist on the default phantom: 84.0 %


def test_demo_runs_the_shipped_generalist_and_says_so():
    result = CliRunner().invoke(main, ["demo", "--method", "generalist"])
    assert result.exit_code == 0, result.output
    assert "method generalist  model generalist  user error_centre" in result.output
    rows = _step_rows(result.output)
    assert len(rows) == 6
    # The shipped generalist (iteration 3000) on the default phantom: 81 % when shipped.
    assert float(rows[-1][2]) > 50.0


def test_demo_with_a_named_model_runs_that_model():
    result = CliRunner().invoke(main, ["demo", "--method", "mecca"])
    assert result.exit_code == 0, result.output
    assert "method mecca  model mecca_phantom  user edge" in result.output
    # The shipped phantom model segments the default phantom well (90.4 % when shipped).
    assert float(_step_rows(result.output)[-1][2]) > 85.0


def test_train_export_demo_end_to_end(tmp_path):
    """The whole path a user takes: phantoms -> train -> bundle -> demo with overlays."""
    runner = CliRunner()
    data, run, bundle = tmp_path / "ph", tmp_path / "run", tmp_path / "bundle"
    assert runner.invoke(main, ["phantom", "--out", str(data), "--n", "5"]).exit_code == 0
    settings = [
        "episodes=2",
        "grid=[16,16,8]",
        "width=4",
        "batch_size=1",
        "steps=2",
        "val_every=2",
        "val_cases=1",
        "checkpoint_every=1",
    ]
    args = ["train", "--data", str(data), "--out", str(run), "--no-progress"]
    for item in settings:
        args += ["--set", item]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["export-model", str(run), "--out", str(bundle)])
    assert result.exit_code == 0, result.output
    pngs = tmp_path / "png"
    result = runner.invoke(
        main, ["demo", "--model", str(bundle), "--steps", "2", "--overlays", str(pngs)]
    )
    assert result.exit_code == 0, result.output
    assert [p.name for p in sorted(pngs.glob("*.png"))] == ["step_1.png", "step_2.png"]
    again = runner.invoke(main, args)
    assert again.exit_code == 2 and "--resume" in again.output


def test_demo_refuses_a_model_for_a_classical_method():
    result = CliRunner().invoke(main, ["demo", "--method", "random_walker", "--model", "x"])
    assert result.exit_code == 2 and "takes no --model" in result.output


def test_phantom_writes_an_msd_dataset_and_refuses_overwrite(tmp_path):
    out = tmp_path / "ph"
    args = ["phantom", "--out", str(out), "--n", "3", "--seed", "2"]
    assert CliRunner().invoke(main, args).exit_code == 0
    assert len(list((out / "imagesTr").glob("*.nii.gz"))) == 3
    assert json.loads((out / "dataset.json").read_text())["default_target"] == "lesion"
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "force" in again.output
    assert CliRunner().invoke(main, [*args, "--force"]).exit_code == 0


def _write(path, array, spacing=(1.0, 1.0, 2.0)):
    nib.save(nib.Nifti1Image(array.astype(np.uint8), np.diag([*spacing, 1.0])), str(path))


def test_evaluate_json_in_voxels_and_mm(tmp_path):
    gt = sphere((24, 24, 16), (12, 12, 8), 5)
    _write(tmp_path / "gt.nii.gz", gt)
    _write(tmp_path / "pred.nii.gz", np.roll(gt, 1, axis=2))
    result = CliRunner().invoke(
        main, ["evaluate", str(tmp_path / "pred.nii.gz"), str(tmp_path / "gt.nii.gz"), "--json"]
    )
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert 0.5 < scores["dice"] < 1.0
    assert scores["hd95_mm"] == 2 * scores["hd95_vox"]


def test_evaluate_bad_input_is_one_line_error(tmp_path):
    gt = sphere((24, 24, 16), (12, 12, 8), 5)
    _write(tmp_path / "gt.nii.gz", gt)
    _write(tmp_path / "small.nii.gz", gt[:20])
    missing = CliRunner().invoke(
        main, ["evaluate", str(tmp_path / "nope.nii.gz"), str(tmp_path / "gt.nii.gz")]
    )
    assert missing.exit_code == 2 and "nope.nii.gz" in missing.output
    off_grid = CliRunner().invoke(
        main, ["evaluate", str(tmp_path / "small.nii.gz"), str(tmp_path / "gt.nii.gz")]
    )
    assert off_grid.exit_code == 2 and "error:" in off_grid.output
    assert "Traceback" not in off_grid.output
    unknown = CliRunner().invoke(
        main,
        ["evaluate", str(tmp_path / "gt.nii.gz"), str(tmp_path / "gt.nii.gz"), "--labels", "7"],
    )
    assert unknown.exit_code == 2 and "7" in unknown.output


def test_compare_prints_paired_differences_and_refuses_what_is_not_results(tmp_path):
    cases = {f"c{i}": i for i in range(4)}
    report = {
        "steps": 1,
        "methods": {
            name: {"cases": {c: {"steps": [{"dice": 80.0 + i + gap}]} for c, i in cases.items()}}
            for name, gap in (("mecca", 0.0), ("itermrl", 2.0))
        },
    }
    (tmp_path / "results.json").write_text(json.dumps(report))
    result = CliRunner().invoke(main, ["compare", str(tmp_path), "--reference", "itermrl"])
    assert result.exit_code == 0, result.output
    assert "| mecca | -2.00 | [-2.00, -2.00] | 0 / 4 of 4 |" in result.output
    missing = CliRunner().invoke(main, ["compare", str(tmp_path / "nowhere")])
    assert missing.exit_code != 0 and "no benchmark results here" in missing.output
    unknown = CliRunner().invoke(main, ["compare", str(tmp_path), "--reference", "pnet"])
    assert unknown.exit_code != 0 and "not in these results" in unknown.output
    (tmp_path / "bad.json").write_text("{not json")
    bad = CliRunner().invoke(main, ["compare", str(tmp_path / "bad.json")])
    assert bad.exit_code != 0 and "not a mecca benchmark results.json" in bad.output


def test_compare_pools_runs_of_other_seeds_and_refuses_the_same_seed(tmp_path):
    for seed, gap in ((0, 1.0), (1, -3.0)):
        report = {
            "steps": 1,
            "seed": seed,
            "methods": {
                name: {"cases": {f"c{i}": {"steps": [{"dice": 80.0 + i + d}]} for i in range(4)}}
                for name, d in (("mecca", 0.0), ("itermrl", gap))
            },
        }
        (tmp_path / f"s{seed}").mkdir()
        (tmp_path / f"s{seed}" / "results.json").write_text(json.dumps(report))
    runs = [str(tmp_path / "s0"), str(tmp_path / "s1")]
    result = CliRunner().invoke(main, ["compare", *runs])
    assert result.exit_code == 0, result.output
    assert "| itermrl | 82.50 | 78.50 | 80.50 | +1.00 -3.00 |" in result.output
    assert "| itermrl | -1.00 | [-1.00, -1.00] | 0 / 4 of 4 |" in result.output
    same = CliRunner().invoke(main, ["compare", runs[0], runs[0]])
    assert same.exit_code != 0 and "same seed" in same.output
    none = CliRunner().invoke(main, ["compare"])
    assert none.exit_code != 0 and "Missing argument" in none.output


def test_demo_on_a_dataset_folder_runs_the_default_or_the_generalist(phantoms):
    result = CliRunner().invoke(main, ["demo", "--data", str(phantoms), "--steps", "2"])
    assert result.exit_code == 0, result.output
    assert "method generalist  model generalist  user error_centre" in result.output
    assert "  target " in result.output.splitlines()[0]  # what it segments, named
    assert len(_step_rows(result.output)) == 3
    args = ["demo", "--data", str(phantoms), "--steps", "2", "--method", "generalist"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "method generalist  model generalist  user error_centre" in result.output
    assert len(_step_rows(result.output)) == 3
