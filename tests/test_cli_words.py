"""The CLI speaks in its own terms: --channel for 4D input, CLI options in every hint, a
warning for a label map given as the image, `mecca models`, and the model that ran."""

import json

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import sphere
from mecca.cli import cli_message, main
from mecca.errors import InputError
from mecca.io import Volume, label_map_values

SHAPE = (24, 24, 16)


def _image(with_channels: int = 0) -> np.ndarray:
    rng = np.random.default_rng(0)
    ball = sphere(SHAPE, (12, 12, 8), 5)
    image = (ball * 100.0 + rng.normal(0, 5.0, SHAPE)).astype(np.float32)
    if with_channels:
        image = np.stack([image * (c + 1) for c in range(with_channels)], axis=-1)
    return image


def _save(path, array):
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    return path


def _clicks(path, steps):
    doc = {"format": "mecca.clicks", "version": 1, "space": "voxel", "steps": steps}
    path.write_text(json.dumps(doc))
    return path


FG_BG = [
    [{"kind": "foreground", "position": [12, 12, 8]}, {"kind": "background", "position": [2, 2, 2]}]
]


def _segment(tmp_path, image, *extra):
    clicks = _clicks(tmp_path / "clicks.json", FG_BG)
    args = ["segment", str(image), "--clicks", str(clicks), "--out", str(tmp_path / "m.nii.gz")]
    return CliRunner().invoke(main, [*args, "--method", "region_growing", *extra])


def test_4d_image_asks_for_channel_and_channel_segments_it(tmp_path):
    image = _save(tmp_path / "two.nii.gz", _image(with_channels=2))
    refused = _segment(tmp_path, image)
    assert refused.exit_code == 2
    assert "--channel N, N from 0 to 1" in refused.output and "channel=" not in refused.output
    out_of_range = _segment(tmp_path, image, "--channel", "5")
    assert out_of_range.exit_code == 2 and "--channel N, N from 0 to 1" in out_of_range.output
    done = _segment(tmp_path, image, "--channel", "1")
    assert done.exit_code == 0, done.output
    mask = nib.load(str(tmp_path / "m.nii.gz"))
    assert mask.shape == SHAPE and np.asarray(mask.dataobj)[12, 12, 8] == 1


def test_roi_outside_the_image_is_explained_with_cli_options(tmp_path):
    image = _save(tmp_path / "img.nii.gz", _image())
    result = _segment(tmp_path, image, "--roi", "0,0,0,30,24,16")
    assert result.exit_code == 2, result.output
    assert "--roi" in result.output and "box.clip" not in result.output


def test_cli_message_rewrites_python_hints():
    err = InputError("is 4D with 3 channels", hint="pass channel= a number from 0 to 2")
    assert cli_message(err).endswith("(pass --channel N, N from 0 to 2)")
    assert cli_message(InputError("x", hint="pass force=True")) == "x (pass --force)"
    no_option = cli_message(err, options=["--labels", "--json"])  # a command without it
    assert no_option.endswith("(save the channel to use as a 3D image)")
    outside = InputError(
        "click (1, 2, 3) is outside the ROI (0, 0, 0)-(1, 1, 1)",
        hint="click inside the ROI, or set_roi() a larger box (this resets the session)",
    )
    assert "give a larger --roi" in cli_message(outside) and "set_roi" not in cli_message(outside)


def test_label_map_opened_as_image_gets_a_warning(tmp_path):
    labels = sphere(SHAPE, (12, 12, 8), 5).astype(np.uint8) * 2
    assert label_map_values(Volume(labels.astype(np.float32), np.eye(4))) == [0, 2]
    assert label_map_values(Volume(_image(), np.eye(4))) is None
    ct_like = np.random.default_rng(0).integers(-1000, 1000, SHAPE).astype(np.float32)
    assert label_map_values(Volume(ct_like, np.eye(4))) is None
    warned = _segment(tmp_path, _save(tmp_path / "lab.nii.gz", labels))
    assert warned.exit_code == 0, warned.output
    assert "warning:" in warned.output and "looks like a label map" in warned.output
    quiet = _segment(tmp_path, _save(tmp_path / "img.nii.gz", _image()), "--force")
    assert quiet.exit_code == 0 and "warning" not in quiet.output


def test_models_lists_every_shipped_bundle_with_its_data_and_figures():
    from mecca.bundle import shipped_bundles

    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0, result.output
    for name in shipped_bundles():
        assert f"\n{name}  (method " in result.output
    assert "mecca_left_atrium  (method mecca: --method mecca --model mecca_left_atrium)" in (
        result.output
    )
    assert "trained on: left_atrium, train split, target default (label 1)" in result.output
    assert "test Dice 89.93 % after step 5" in result.output  # from the model card's table
    assert "edge_itermrl_hippocampus  (method edge_itermrl:" in result.output
    assert "never trained on: chaos_mr" in result.output  # the generalist's held-out data


def test_models_name_prints_summary_and_card_and_json():
    one = CliRunner().invoke(main, ["models", "itermrl_hippocampus"])
    assert one.exit_code == 0, one.output
    assert "trained on: hippocampus" in one.output and "# itermrl_hippocampus" in one.output
    as_json = CliRunner().invoke(main, ["models", "--json"])
    rows = {row["name"]: row for row in json.loads(as_json.output)}
    assert rows["pnet_left_atrium"]["datasets"] == ["left_atrium"]
    assert rows["mecca_hippocampus"]["method"] == "mecca"
    missing = CliRunner().invoke(main, ["models", "no_such_model"])
    assert missing.exit_code == 2 and "mecca_left_atrium" in missing.output


def test_damaged_bundle_is_listed_as_damaged(tmp_path):
    import shutil

    from mecca.bundle import SHIPPED

    copy = tmp_path / "mecca_phantom"
    shutil.copytree(SHIPPED / "mecca_phantom", copy)
    (copy / "models" / "model.pt").write_bytes(b"not the weights")
    result = CliRunner().invoke(main, ["models", str(copy)])
    assert result.exit_code == 0 and "DAMAGED" in result.output


@pytest.mark.parametrize(
    ("method", "expected"),
    [("region_growing", "method region_growing\n"), ("mecca", "method mecca, model mecca_phantom")],
)
def test_segment_says_which_model_ran(tmp_path, method, expected):
    image = _save(tmp_path / "img.nii.gz", _image())
    edge = [[{"kind": "edge", "position": [12, 12, 3]}, {"kind": "edge", "position": [12, 17, 8]}]]
    clicks = FG_BG if method == "region_growing" else edge
    path = _clicks(tmp_path / "c.json", clicks)
    args = ["segment", str(image), "--clicks", str(path), "--out", str(tmp_path / "m.nii.gz")]
    result = CliRunner().invoke(main, [*args, "--method", method])
    assert result.exit_code == 0, result.output
    assert expected in result.output
    if method == "mecca":
        assert "mecca models mecca_phantom" in result.output


def test_predict_npz_names_the_method_it_runs(tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    result = CliRunner().invoke(
        main, ["predict-npz", str(inputs), str(outputs), "--method", "region_growing"]
    )
    assert "method region_growing" in result.output  # said before the cases are read


def test_serve_start_message_names_each_method_model():
    from mecca.cli import _served_models
    from mecca.server.settings import ServerSettings

    lines = _served_models(ServerSettings(methods=("growcut", "mecca"), weights=()))
    assert lines == ["growcut", "mecca (model mecca_phantom)"]
    custom = ServerSettings(methods=("mecca",), weights=(("mecca", "mecca_hippocampus"),))
    assert _served_models(custom) == ["mecca (model mecca_hippocampus)"]


def test_benchmark_names_each_learned_model_before_it_starts(tmp_path):
    args = ["benchmark", "--data", str(tmp_path / "hippocampus"), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(main, [*args, "--methods", "mecca,growcut"])
    assert "method mecca, model mecca_hippocampus" in result.output  # the dataset's model
    assert "method growcut" not in result.output  # no model to name
    assert result.exit_code == 2 and "dataset folder not found" in result.output


def test_unknown_model_without_method_says_what_to_give(tmp_path):
    image = _save(tmp_path / "img.nii.gz", _image())
    clicks = _clicks(tmp_path / "c.json", FG_BG)
    args = ["segment", str(image), "--clicks", str(clicks), "--out", str(tmp_path / "m.nii.gz")]
    result = CliRunner().invoke(main, [*args, "--model", "no_such_model"])
    assert result.exit_code == 2
    assert "'no_such_model' is not a model bundle" in result.output
    assert "--method NAME" in result.output and "mecca models" in result.output


def test_a_command_without_channel_gives_words_it_can_follow(tmp_path):
    gt = _save(tmp_path / "gt.nii.gz", np.stack([sphere(SHAPE, (12, 12, 8), 5)] * 2, -1) * 1.0)
    result = CliRunner().invoke(main, ["evaluate", str(gt), str(gt)])
    assert result.exit_code == 2
    assert "save the channel to use as a 3D image" in result.output
    assert "--channel" not in result.output and "channel=" not in result.output


def test_a_box_round_the_object_is_the_generalists_box_prompt(tmp_path):
    image = _save(tmp_path / "ball.nii.gz", _image())
    clicks = _clicks(tmp_path / "fg.json", [[{"kind": "foreground", "position": [12, 12, 8]}]])
    args = ["segment", str(image), "--clicks", str(clicks), "--out", str(tmp_path / "m.nii.gz")]
    done = CliRunner().invoke(main, [*args, "--method", "generalist", "--box", "7,7,3,18,18,14"])
    assert done.exit_code == 0, done.output
    mask = np.asarray(nib.load(str(tmp_path / "m.nii.gz")).dataobj) > 0
    ball = sphere(SHAPE, (12, 12, 8), 5)
    assert 2 * (mask & ball).sum() / (mask.sum() + ball.sum()) > 0.8
    both = CliRunner().invoke(
        main, [*args, "--force", "--box", "7,7,3,18,18,14", "--roi-from-clicks"]
    )
    assert both.exit_code == 2 and "one of --roi, --box and --roi-from-clicks" in both.output
