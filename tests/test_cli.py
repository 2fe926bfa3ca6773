import json

import nibabel as nib
import numpy as np
from click.testing import CliRunner

from conftest import sphere
from mecca.cli import main


def test_help_lists_commands_with_examples():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "evaluate", "phantom"):
        assert command in result.output
        sub = CliRunner().invoke(main, [command, "--help"])
        assert sub.exit_code == 0 and "mecca " + command in sub.output


def test_demo_prints_a_step_table():
    result = CliRunner().invoke(main, ["demo", "--steps", "2", "--seed", "1"])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines() if line.strip()[:1].isdigit()]
    assert [r[0] for r in rows] == ["0", "1", "2"]
    assert 0.0 <= float(rows[-1][2]) <= 100.0


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
