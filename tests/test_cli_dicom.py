"""DICOM SEG from the command line: ``mecca segment SERIES --out seg.dcm`` and ``mecca
convert``, checked against the source slices with pydicom alone (each source voxel has
its own value, so a SEG pixel's voxel is found by the value of its source pixel)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

from mecca.cli import main
from mecca.io import load, load_label, save_mask, save_volume
from test_dicom_seg import SHAPE, source_slices, write_series

hd = pytest.importorskip("highdicom")

BLOCK = (slice(1, 4), slice(2, 5), slice(2, 6))  # slices, rows, columns of the object
CLICKS = """{"format": "mecca.clicks", "version": 1, "space": "voxel", "steps": [[
  {"kind": "foreground", "position": [3, 3, 2]},
  {"kind": "background", "position": [0, 0, 0]},
  {"kind": "background", "position": [6, 5, 4]}]]}"""


def block_series(folder: Path) -> Path:
    """A CT series (SHAPE) with a bright block; every voxel keeps its own value."""
    datasets = source_slices()
    inside = np.zeros(SHAPE, dtype=bool)
    inside[BLOCK] = True
    for s, ds in enumerate(datasets):
        values = ds.pixel_array.astype(np.int64) + 2000 * inside[s]
        ds.PixelData = values.astype(np.uint16).tobytes()
    return write_series(folder, datasets)


def run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def check_seg_frames(seg_path: Path, folder: Path, mask: np.ndarray) -> None:
    """Every SEG frame lands on its source slice: pixel (r, c) of the frame referencing
    source slice S is ``mask`` at the voxel holding S's pixel value at (r, c)."""
    volume = load(folder, dtype=None)
    where = {int(v): ijk for ijk, v in np.ndenumerate(volume.array)}
    sources = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, sorted(folder.iterdir()))}
    seg = pydicom.dcmread(seg_path)
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    referenced = {
        i.ReferencedSOPInstanceUID
        for s in seg.ReferencedSeriesSequence
        for i in s.ReferencedInstanceSequence
    }
    assert referenced == set(sources)
    expected = {
        uid: np.vectorize(lambda v: mask[where[int(v)]])(ds.pixel_array)
        for uid, ds in sources.items()
    }
    pixels = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    seen = set()
    for n, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        np.testing.assert_array_equal(pixels[n].astype(bool), expected[uid] > 0)
        np.testing.assert_allclose(
            np.array(item.PlanePositionSequence[0].ImagePositionPatient, float),
            np.array(sources[uid].ImagePositionPatient, float),
            atol=1e-4,
        )
        seen.add(uid)
    assert all(not expected[uid].any() for uid in set(sources) - seen)  # left out: empty
    stacks = hd.seg.segread(seg_path).get_pixels_by_source_instance(
        sorted(sources), segment_numbers=[1], assert_missing_frames_are_empty=True
    )
    for uid, stack in zip(sorted(sources), stacks, strict=True):
        np.testing.assert_array_equal(stack[..., 0] > 0, expected[uid] > 0)


def test_segment_a_dicom_series_into_a_seg(tmp_path):
    folder = block_series(tmp_path / "series")
    (tmp_path / "clicks.json").write_text(CLICKS)
    # GrowCut: on this tiny block series its mask is the block exactly (the geometry check)
    common = ("segment", folder, "--clicks", tmp_path / "clicks.json", "--method", "growcut")
    code, out = run(*common, "--out", tmp_path / "seg.dcm", "--label-name", "liver")
    assert code == 0, out
    assert "seg.dcm" in out
    code, out = run(*common, "--out", tmp_path / "mask.nii.gz")
    assert code == 0, out
    mask = load_label(tmp_path / "mask.nii.gz", like=load(folder)).array
    expected = np.zeros(SHAPE, dtype=bool)
    expected[BLOCK] = True
    assert (mask > 0).sum() > 0 and mask[3, 3, 2]  # (i, j, k) = (column, row, slice)
    assert np.array_equal(mask > 0, expected.transpose(2, 1, 0))  # the block, exactly
    check_seg_frames(tmp_path / "seg.dcm", folder, mask)
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver"]
    code, out = run(*common, "--out", tmp_path / "seg.dcm")
    assert code == 2 and "--force" in out
    code, out = run(*common, "--out", tmp_path / "seg.dcm", "--force")
    assert code == 0, out
    default = pydicom.dcmread(tmp_path / "seg.dcm").SegmentSequence[0].SegmentLabel
    assert default == "segmentation"


def test_segment_to_dcm_refuses_an_image_that_is_not_dicom(tmp_path):
    folder = block_series(tmp_path / "series")
    nifti = save_volume(load(folder), tmp_path / "image.nii.gz")
    (tmp_path / "clicks.json").write_text(CLICKS)
    code, out = run(
        "segment", nifti, "--clicks", tmp_path / "clicks.json", "--out", tmp_path / "seg.dcm"
    )
    assert code == 2
    assert "not a DICOM series" in out and "series' folder as the image" in out
    assert "Traceback" not in out
    assert not (tmp_path / "seg.dcm").exists()


def test_convert_both_ways(tmp_path):
    folder = block_series(tmp_path / "series")
    volume = load(folder)
    labels = np.zeros(volume.shape, dtype=np.uint8)
    labels[2:5, 2:4, 1:3] = 1
    labels[0:2, 0:2, 3:5] = 2
    save_mask(labels, volume, tmp_path / "labels.nii.gz")
    code, out = run(
        "convert", tmp_path / "labels.nii.gz", tmp_path / "seg.dcm",
        "--reference", folder, "--labels", "1=liver,2=spleen",
    )  # fmt: skip
    assert code == 0, out
    assert "1=liver, 2=spleen" in out
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "spleen"]
    for number in (1, 2):
        check_seg_frames_of_segment(tmp_path / "seg.dcm", folder, labels == number, number)
    code, out = run("convert", tmp_path / "seg.dcm", tmp_path / "back.nrrd", "--reference", folder)
    assert code == 0, out
    back = load_label(tmp_path / "back.nrrd", like=volume)
    np.testing.assert_array_equal(back.array, labels)


def check_seg_frames_of_segment(
    seg_path: Path, folder: Path, mask: np.ndarray, number: int
) -> None:
    """Segment ``number``'s frames, checked as :func:`check_seg_frames` does."""
    volume = load(folder, dtype=None)
    where = {int(v): ijk for ijk, v in np.ndenumerate(volume.array)}
    sources = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, sorted(folder.iterdir()))}
    stacks = hd.seg.segread(seg_path).get_pixels_by_source_instance(
        sorted(sources), segment_numbers=[number], assert_missing_frames_are_empty=True
    )
    for uid, stack in zip(sorted(sources), stacks, strict=True):
        expected = np.vectorize(lambda v: mask[where[int(v)]])(sources[uid].pixel_array)
        np.testing.assert_array_equal(stack[..., 0] > 0, expected)


def test_convert_refusals(tmp_path):
    folder = block_series(tmp_path / "series")
    volume = load(folder)
    nifti = save_volume(volume, tmp_path / "image.nii.gz")
    labels = np.zeros(volume.shape, dtype=np.uint8)
    labels[1:3, 1:3, 1:3] = 3
    save_mask(labels, volume, tmp_path / "labels.nii.gz")
    target = tmp_path / "seg.dcm"
    code, out = run("convert", tmp_path / "labels.nii.gz", target, "--reference", nifti)
    assert code == 2 and "not a DICOM series" in out and "--reference" in out
    code, out = run(
        "convert", tmp_path / "labels.nii.gz", target, "--reference", folder, "--labels", "1=a"
    )
    assert code == 2 and "--labels does not name" in out and "[3]" in out
    code, out = run(
        "convert", tmp_path / "labels.nii.gz", target, "--reference", folder, "--labels", "x"
    )
    assert code == 2 and "VALUE=NAME" in out
    code, out = run("convert", tmp_path / "a.dcm", target, "--reference", folder)
    assert code == 2 and "both end in .dcm" in out
    code, out = run("convert", tmp_path / "missing.nii.gz", target, "--reference", folder)
    assert code == 2 and "not found" in out
    code, out = run("convert", tmp_path / "labels.nii.gz", tmp_path / "x.nii.gz",
                    "--reference", folder)  # fmt: skip
    assert code == 2 and "not a DICOM file" in out  # a label map is no SEG to read
    assert not target.exists()
