"""``mecca segment``: the clicks file, voxel and RAS clicks, outputs on the image grid."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import sphere
from mecca.cli import main
from mecca.data.phantoms import write_phantom_dataset
from mecca.errors import InputError, OverwriteError
from mecca.io import Volume, load, save_volume
from mecca.session.clicks_file import parse_clicks, read_clicks, segment

SHAPE = (40, 36, 20)
CENTRE = (20, 18, 10)
# oblique, anisotropic, LPS-like: a voxel click and its RAS position must agree
OBLIQUE = np.array(
    [
        [-0.9 * np.cos(0.3), -1.1 * np.sin(0.3), 0.0, 30.0],
        [-0.9 * np.sin(0.3), 1.1 * np.cos(0.3), 0.0, -12.0],
        [0.0, 0.0, 2.0, 5.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "clicks_phantom.json"


def _image(tmp_path: Path) -> tuple[Path, np.ndarray, Volume]:
    gt = sphere(SHAPE, CENTRE, 6)
    image = (gt * 2.0 + np.random.default_rng(0).normal(0, 0.2, SHAPE)).astype(np.float32)
    volume = Volume(image, OBLIQUE)
    path = save_volume(volume, tmp_path / "image.nii.gz")
    return path, gt, load(path)


def _doc(space: str, steps: list) -> dict:
    return {"format": "mecca.clicks", "version": 1, "space": space, "steps": steps}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_voxel_and_ras_clicks_give_the_same_mask_on_the_image_grid(tmp_path):
    path, gt, volume = _image(tmp_path)
    fg, bg = CENTRE, (4, 4, 3)
    voxel = parse_clicks(
        _doc("voxel", [[{"kind": "fg", "position": list(fg)}, {"kind": "background",
                                                                "position": list(bg)}]])
    )
    ras = [volume.voxel_to_world(np.array(p, float)).tolist() for p in (fg, bg)]
    world = parse_clicks(
        _doc("ras", [[{"kind": "foreground", "position": ras[0]},
                      {"kind": "bg", "position": ras[1]}]])
    )
    roi = None
    a = segment(path, voxel, tmp_path / "a.nii.gz", method="random_walker",
                prob_out=tmp_path / "p.nii.gz", advice_out=tmp_path / "adv.json")
    b = segment(path, world, tmp_path / "b.nii.gz", roi=roi, method="random_walker")
    np.testing.assert_array_equal(a.mask, b.mask)
    mask = nib.load(tmp_path / "a.nii.gz")
    np.testing.assert_allclose(mask.affine, OBLIQUE, atol=1e-5)
    assert mask.shape == SHAPE and mask.get_data_dtype() == np.uint8
    assert _dice(np.asarray(mask.dataobj), gt) > 0.9
    prob = np.asarray(nib.load(tmp_path / "p.nii.gz").dataobj)
    np.testing.assert_array_equal(prob > 0.5, np.asarray(mask.dataobj) > 0)
    assert json.loads((tmp_path / "adv.json").read_text()) == {"step": 1, "regions": []}


def test_more_steps_than_the_file_and_an_explicit_roi(tmp_path):
    path, gt, _ = _image(tmp_path)
    clicks = parse_clicks(_doc("voxel", [[{"kind": "fg", "position": list(CENTRE)}]]))
    result = segment(path, clicks, tmp_path / "m.nii.gz", roi=None, method="random_walker",
                     steps=3)
    assert result.step == 3
    from mecca.data.roi import Box

    box = Box((8, 6, 2), (33, 31, 19))
    boxed = segment(path, clicks, tmp_path / "r.nii.gz", roi=box, method="random_walker")
    assert boxed.box == box and not boxed.mask[:8].any()


def test_bad_clicks_files_are_refused_with_a_reason(tmp_path):
    cases = [
        ({"format": "other"}, "not a MECCA clicks file"),
        ({**_doc("voxel", []), "version": 7}, "version 7"),
        (_doc("lps", []), "space must be"),
        (_doc("voxel", {"a": 1}), "list of lists"),
        (_doc("voxel", [[{"kind": "lasso", "position": [1, 2, 3]}]]), "unknown click kind"),
        (_doc("voxel", [[{"kind": "fg", "position": [1, 2]}]]), "three finite numbers"),
        (_doc("voxel", [[{"kind": "fg", "position": [1, "x", 3]}]]), "three finite numbers"),
        (_doc("voxel", [[{"position": [1, 2, 3]}]]), "step 1 click 1"),
    ]
    for doc, message in cases:
        with pytest.raises(InputError, match=message):
            parse_clicks(doc)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        read_clicks(bad)
    with pytest.raises(InputError, match="not found"):
        read_clicks(tmp_path / "missing.json")


def test_bad_runs_write_nothing(tmp_path):
    path, _, _ = _image(tmp_path)
    outside = parse_clicks(_doc("voxel", [[{"kind": "fg", "position": [99, 0, 0]}]]))
    with pytest.raises(InputError, match="outside the image"):
        segment(path, outside, tmp_path / "o.nii.gz", method="random_walker")
    edge = parse_clicks(_doc("voxel", [[{"kind": "edge", "position": list(CENTRE)}]]))
    with pytest.raises(InputError, match="cannot take edge clicks"):
        segment(path, edge, tmp_path / "e.nii.gz", method="random_walker")
    with pytest.raises(InputError, match="no ROI and no clicks"):
        segment(path, parse_clicks(_doc("voxel", [])), tmp_path / "n.nii.gz")
    (tmp_path / "taken.nii.gz").write_bytes(b"keep me")
    good = parse_clicks(_doc("voxel", [[{"kind": "fg", "position": list(CENTRE)}]]))
    with pytest.raises(OverwriteError, match="--force"):
        segment(path, good, tmp_path / "new.nii.gz", prob_out=tmp_path / "taken.nii.gz",
                method="random_walker")
    assert (tmp_path / "taken.nii.gz").read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.nii.gz", "taken.nii.gz"]


def test_cli_runs_the_example_clicks_file_with_the_shipped_model(tmp_path):
    root = write_phantom_dataset(tmp_path / "phantoms", count=1, seed=0)
    image = root / "imagesTr" / "phantom_000.nii.gz"
    args = ["segment", str(image), "--clicks", str(EXAMPLE), "--roi", "34,40,13,52,58,29",
            "--method", "mecca",
            "--out", str(tmp_path / "mask.nii.gz"), "--advice", str(tmp_path / "adv.json")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "method mecca, model mecca_phantom" in result.output
    assert "2 steps" in result.output
    mask = load(tmp_path / "mask.nii.gz", dtype=None)
    source = load(image)
    assert mask.shape == source.shape
    np.testing.assert_allclose(mask.affine, source.affine, atol=1e-5)
    gt = np.asarray(nib.load(root / "labelsTr" / "phantom_000.nii.gz").dataobj) > 0
    assert _dice(mask.array, gt) > 0.3
    regions = json.loads((tmp_path / "adv.json").read_text())["regions"]
    assert 1 <= len(regions) <= 5 and regions[0]["rank"] == 1
    both = CliRunner().invoke(main, [*args, "--roi-from-clicks", "--force"])
    assert both.exit_code != 0 and "give one of" in both.output


def test_cli_segment_runs_the_default_and_the_generalist_and_says_so(tmp_path):
    root = write_phantom_dataset(tmp_path / "phantoms", count=1, seed=0)
    image = root / "imagesTr" / "phantom_000.nii.gz"
    example = EXAMPLE.with_name("clicks_phantom_fg_bg.json")
    args = ["segment", str(image), "--clicks", str(example), "--roi", "34,40,12,56,64,30",
            "--out", str(tmp_path / "mask.nii.gz")]
    default = CliRunner().invoke(main, [*args, "--force"])
    assert default.exit_code == 0, default.output
    assert "method generalist, model generalist" in default.output
    growcut = CliRunner().invoke(main, [*args, "--method", "growcut", "--force"])
    assert growcut.exit_code == 0 and "method growcut\n" in growcut.output
    result = CliRunner().invoke(main, [*args, "--method", "generalist", "--force"])
    assert result.exit_code == 0, result.output
    assert "method generalist, model generalist" in result.output
    assert "honoured by the method itself; the mask honours all of them" in result.output
    assert "2 steps" in result.output
    mask = load(tmp_path / "mask.nii.gz", dtype=None)
    gt = np.asarray(nib.load(root / "labelsTr" / "phantom_000.nii.gz").dataobj) > 0
    assert _dice(mask.array, gt) > 0.3
    assert "tip: one click" not in result.output  # an ROI and two clicks were given
    one = tmp_path / "one_click.json"
    step = [{"kind": "foreground", "position": [45, 52, 21]}]
    one.write_text(json.dumps({"format": "mecca.clicks", "version": 1, "steps": [step]}))
    tip = "tip: one click often marks only part of a large organ"
    first = ["segment", str(image), "--clicks", str(one), "--out", str(tmp_path / "m1.nii.gz")]
    alone = CliRunner().invoke(main, first)
    assert alone.exit_code == 0 and tip in alone.output and "--box" in alone.output
    geos = CliRunner().invoke(main, [*first, "--method", "geos", "--force"])
    assert geos.exit_code == 0 and tip not in geos.output  # it takes no box
    # a bundle given without --method runs the method the bundle names
    named = CliRunner().invoke(main, [*args, "--model", "mecca_phantom", "--force"])
    assert named.exit_code != 0 and "cannot take" in named.output  # mecca takes edge points
