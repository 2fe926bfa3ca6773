"""MSD-layout datasets: listing, splits, targets, loading cases, writing, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import sphere
from mecca.data.datasets import Case, Dataset, open_dataset, write_msd_dataset
from mecca.errors import DatasetError, GeometryError, InputError, OverwriteError
from mecca.io import Volume, save_mask

SHAPE = (10, 11, 12)
LABELS = {1: "necrosis", 2: "edema", 3: "non-enhancing", 4: "enhancing"}
TARGETS = {"whole_tumour": [1, 2, 3, 4], "tumour_core": [1, 3, 4], "enhancing": [4]}
IDS = [f"case_{n:02d}" for n in range(6)]
SPLITS = {"train": IDS[:4], "val": [IDS[4]], "test": [IDS[5]]}


def make_case(n: int) -> tuple[str, Volume, np.ndarray]:
    """A small image with a four-label 'tumour'; case 3 has no enhancing part (label 4)."""
    affine = np.diag([1.0, 1.2, 2.0, 1.0])
    affine[:3, 3] = [n, -n, 5.0]
    label = np.zeros(SHAPE, np.uint8)
    label[sphere(SHAPE, (5, 5, 6), 4)] = 2
    label[sphere(SHAPE, (5, 5, 6), 2.5)] = 3
    label[sphere(SHAPE, (5, 5, 6), 1.5)] = 1
    if n != 3:
        label[4:6, 7:9, 5:7] = 4
    image = (label * 10.0 + n).astype(np.float32)
    return IDS[n], Volume(image, affine), label


def write(root: Path, **kwargs) -> Dataset:
    args = {"labels": LABELS, "targets": TARGETS, "default_target": "whole_tumour"}
    args["splits"] = SPLITS
    args.update(kwargs)
    return write_msd_dataset(root, (make_case(n) for n in range(len(IDS))), **args)


@pytest.fixture
def ds(tmp_path) -> Dataset:
    return write(tmp_path / "tumours")


# ----------------------------------------------------------------------------- listing


def test_listing_and_files(ds, tmp_path):
    cases = ds.cases()
    assert [c.case_id for c in cases] == IDS
    assert len(ds) == 6 and ds.name == "tumours"
    assert cases[0] == Case(
        "case_00",
        tmp_path / "tumours" / "imagesTr" / "case_00.nii.gz",
        tmp_path / "tumours" / "labelsTr" / "case_00.nii.gz",
    )
    info = json.loads((ds.root / "dataset.json").read_text())
    assert info["numCases"] == 6 and info["labels"]["0"] == "background"
    assert ds.case("case_02").case_id == "case_02"
    with pytest.raises(DatasetError, match="no case 'nope'"):
        ds.case("nope")


def test_splits(ds):
    assert set(ds.splits) == {"train", "val", "test"}
    assert [c.case_id for c in ds.cases("train")] == SPLITS["train"]
    assert [c.case_id for c in ds.cases("test")] == ["case_05"]
    with pytest.raises(DatasetError, match="train, val, test") as err:
        ds.cases("validation")
    assert "validation" in str(err.value)


def test_no_splits_file(tmp_path):
    ds = write(tmp_path / "d", splits=None)
    assert ds.splits == {}
    with pytest.raises(DatasetError, match="no splits.json"):
        ds.cases("test")


def test_split_naming_unknown_case(ds):
    (ds.root / "splits.json").write_text(json.dumps({"test": ["case_00", "ghost"]}))
    with pytest.raises(DatasetError, match="ghost"):
        open_dataset(ds.root)


# ----------------------------------------------------------------------------- targets


def test_targets_and_default(ds):
    assert ds.targets == {k: tuple(v) for k, v in TARGETS.items()}
    assert ds.default_target == "whole_tumour"
    assert ds.resolve_target() == (1, 2, 3, 4)
    assert ds.resolve_target("tumour_core") == (1, 3, 4)
    assert ds.resolve_target(labels=[2, 1, 2]) == (1, 2)
    assert ds.resolve_target("edema") == (2,)  # a label name is a one-label target


def test_unknown_targets_refused(ds):
    with pytest.raises(DatasetError, match="unknown target 'tumor'") as err:
        ds.resolve_target("tumor")
    assert "whole_tumour" in str(err.value) and "enhancing" in str(err.value)
    with pytest.raises(DatasetError, match=r"unknown label value\(s\) \[7\]") as err:
        ds.resolve_target(labels=[1, 7])
    assert "4 (enhancing)" in str(err.value)
    with pytest.raises(DatasetError, match="background"):
        ds.resolve_target(labels=[0, 1])
    with pytest.raises(DatasetError, match="not both"):
        ds.resolve_target("enhancing", labels=[4])


# ----------------------------------------------------------------------------- loading


def test_load_case_whole_tumour_is_the_union(ds):
    _, written, label = make_case(1)
    image, mask = ds.load_case(ds.cases()[1])
    assert mask.dtype == bool and mask.shape == image.shape == SHAPE
    np.testing.assert_array_equal(mask, label > 0)
    np.testing.assert_array_equal(image.array, written.array)
    np.testing.assert_allclose(image.affine, written.affine, atol=1e-6)  # float32 in NIfTI
    _, core = ds.load_case("case_01", "tumour_core")
    np.testing.assert_array_equal(core, np.isin(label, (1, 3, 4)))
    _, edema = ds.load_case("case_01", (2,))
    np.testing.assert_array_equal(edema, label == 2)
    np.testing.assert_array_equal(ds.load_image("case_01").array, written.array)


def test_empty_target_in_case(ds):
    with pytest.raises(InputError, match="case 'case_03' has no voxel") as err:
        ds.load_case("case_03", "enhancing")
    assert "case_03" in str(err.value.path)


def test_case_without_label(ds):
    (ds.root / "labelsTr" / "case_02.nii.gz").unlink()
    reopened = open_dataset(ds.root)
    assert reopened.case("case_02").label_path is None
    reopened.load_image("case_02")
    with pytest.raises(DatasetError, match="'case_02' has no label file"):
        reopened.load_case("case_02")


def test_label_off_the_image_grid(ds):
    _, vol, label = make_case(0)
    moved = Volume(vol.array, vol.affine + np.diag([0, 0, 0.5, 0]))
    save_mask(label, moved, ds.root / "labelsTr" / "case_00.nii.gz", force=True)
    with pytest.raises(GeometryError, match="mm away"):
        ds.load_case("case_00")


def test_other_format_and_hidden_files(tmp_path):
    ds = write(tmp_path / "d", extension=".nrrd")
    (ds.root / "imagesTr" / "._case_00.nrrd").write_bytes(b"mac junk")
    (ds.root / "imagesTr" / "notes.txt").write_text("ignored")
    ds = open_dataset(ds.root)
    assert [c.case_id for c in ds.cases()] == IDS
    _, mask = ds.load_case("case_00")
    np.testing.assert_array_equal(mask, make_case(0)[2] > 0)


# ----------------------------------------------------------------------------- layout errors


def test_missing_dataset_json(ds):
    (ds.root / "dataset.json").unlink()
    with pytest.raises(DatasetError, match="no dataset.json") as err:
        open_dataset(ds.root)
    assert "imagesTr/<case>" in str(err.value)


def test_missing_images_folder(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "dataset.json").write_text("{}")
    with pytest.raises(DatasetError, match="no imagesTr folder") as err:
        open_dataset(tmp_path / "d")
    assert "labelsTr/<case>" in str(err.value)
    with pytest.raises(DatasetError, match="not found"):
        open_dataset(tmp_path / "absent")


def test_malformed_dataset_json(ds):
    (ds.root / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="cannot be read"):
        open_dataset(ds.root)
    (ds.root / "dataset.json").write_text(json.dumps({"labels": {"1": "a"}, "targets": {"t": [2]}}))
    with pytest.raises(DatasetError, match="target 't'"):
        open_dataset(ds.root)


def test_duplicate_case_files(ds):
    save_mask(make_case(0)[2], make_case(0)[1], ds.root / "imagesTr" / "case_00.nrrd")
    with pytest.raises(DatasetError, match="two files"):
        open_dataset(ds.root)


# ----------------------------------------------------------------------------- writing


def test_no_overwrite_without_force_and_stale_cases_removed(ds):
    with pytest.raises(OverwriteError, match="force"):
        write(ds.root)
    smaller = write_msd_dataset(
        ds.root,
        [make_case(0), make_case(1)],
        labels=LABELS,
        targets=TARGETS,
        default_target="enhancing",
        force=True,
    )
    assert [c.case_id for c in smaller.cases()] == IDS[:2]
    assert smaller.default_target == "enhancing" and smaller.splits == {}
    assert sorted(p.name for p in (ds.root / "labelsTr").iterdir()) == [
        "case_00.nii.gz",
        "case_01.nii.gz",
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"default_target": "tumor"}, "default_target 'tumor'"),
        ({"targets": {"bad": [9]}, "default_target": "bad"}, "target 'bad'"),
        ({"labels": {1: "a", 2: "b", 3: "c"}}, r"label value\(s\)"),
        ({"splits": {"test": ["ghost"]}}, "ghost"),
    ],
)
def test_write_refuses_inconsistent_description(tmp_path, kwargs, message):
    with pytest.raises(DatasetError, match=message):
        write(tmp_path / "d", **kwargs)


def test_write_refuses_bad_case_ids(tmp_path):
    _, vol, label = make_case(0)
    for bad in ["../escape", "x.nii.gz", ""]:
        with pytest.raises(DatasetError, match="not a usable file name"):
            write_msd_dataset(
                tmp_path / "d",
                [(bad, vol, label)],
                labels=LABELS,
                targets=TARGETS,
                default_target="enhancing",
            )


# ----------------------------------------------------------------------------- per-case labels


def test_per_case_labels(ds):
    info = {
        "name": "misc-like",
        "cases": {
            "case_00": {"labels": {"1": "liver", "2": "spleen", "3": "kidney", "4": "cyst"}},
            "case_01": {"labels": {"2": "spleen"}},
        },
    }
    (ds.root / "dataset.json").write_text(json.dumps(info))
    (ds.root / "splits.json").unlink()
    misc = open_dataset(ds.root)
    assert misc.targets == {} and misc.default_target is None
    assert misc.labels_of("case_00")[1] == "liver"
    with pytest.raises(DatasetError, match="no default target") as err:
        misc.resolve_target()
    assert "1 (liver)" in str(err.value)
    assert misc.resolve_target("spleen", case="case_01") == (2,)
    with pytest.raises(DatasetError, match="unknown target 'liver'"):
        misc.resolve_target("liver", case="case_01")
    with pytest.raises(DatasetError, match=r"\[1\]"):
        misc.resolve_target(labels=[1], case="case_01")
    _, mask = misc.load_case("case_00", "liver")
    np.testing.assert_array_equal(mask, make_case(0)[2] == 1)


# ----------------------------------------------------------------------------- real data


@pytest.mark.shared_data
def test_real_hippocampus(shared_data):
    ds = open_dataset(shared_data / "hippocampus")
    assert len(ds.cases()) == 200
    assert len(ds.cases("test")) == 40
    assert ds.default_target == "hippocampus"
    assert ds.resolve_target() == (1, 2)
    image, mask = ds.load_case(ds.cases("test")[0])
    assert mask.shape == image.shape and mask.any() and not mask.all()


@pytest.mark.shared_data
def test_real_brats_whole_tumour(shared_data):
    ds = open_dataset(shared_data / "brats2015")
    assert ds.resolve_target("whole_tumour") == (1, 2, 3, 4)
    case = ds.cases("test")[0]
    image, mask = ds.load_case(case, "whole_tumour")
    _, core = ds.load_case(case, "tumour_core")
    assert image.shape == (240, 240, 155)
    assert core.sum() < mask.sum() and not np.any(core & ~mask)


@pytest.mark.shared_data
def test_real_misc(shared_data):
    ds = open_dataset(shared_data / "misc")
    assert {c.case_id for c in ds.cases()} >= {"itksnap_brain", "totalseg_ct", "sct_t2_cord"}
    assert ds.splits == {} and ds.default_target is None
    assert ds.resolve_target("liver", case="totalseg_ct") == (5,)
    image, mask = ds.load_case("totalseg_ct", "liver")
    assert image.shape == mask.shape and mask.any()
    image, mask = ds.load_case("itksnap_brain", [4, 5])
    assert image.meta["format"] == "gipl" and mask.any()
