"""DICOM SEG export and import (mecca.dicom_seg) on small synthetic DICOM series.

Every source voxel gets its own pixel value, so a voxel's identity travels through
mecca.io.load: the mask is a function of the loaded values, and the SEG written from it
is checked frame by frame with pydicom alone (ReferencedSOPInstanceUID, frame number and
plane position -> the source frame, whose pixels say what the segment must hold there),
independently of the geometry code under test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

hd = pytest.importorskip("highdicom")

from mecca.dicom_seg import (  # noqa: E402
    PALETTE,
    convert,
    read_dicom_seg,
    reference_volume,
    write_dicom_seg,
)
from mecca.errors import GeometryError, InputError, OverwriteError  # noqa: E402
from mecca.io import Volume, load, load_label, save_mask, save_volume  # noqa: E402

SHAPE = (5, 6, 7)  # slices, rows, columns
AXIAL = np.eye(3)  # columns: row cosine, column cosine, slice normal (LPS)


def rotation(axis: tuple[float, float, float], angle: float) -> np.ndarray:
    """Rotation matrix (Rodrigues) about ``axis`` by ``angle`` radians."""
    a = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


OBLIQUE = rotation((0.3, -0.5, 0.8), 0.6)


def _ds(values) -> list[str]:
    return [f"{float(v):.8f}" for v in values]


def source_slices(
    *, axes: np.ndarray = AXIAL, minimal: bool = False, origin=(-12.0, 30.0, 55.0)
) -> list[Dataset]:
    """A CT series as single-frame datasets, each voxel with its own value (1, 2, ...).

    ``minimal`` leaves out every optional tag (patient and study names, dates, slice
    location, thickness, instance number, rescale): only UIDs, geometry and pixels.
    """
    n, rows, cols = SHAPE
    spacing, step = (0.7, 0.9), 2.5
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    out = []
    for s in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SOPClassUID = CTImageStorage
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.FrameOfReferenceUID = frame_of_reference
        ds.Modality = "CT"
        ds.ImageOrientationPatient = _ds([*axes[:, 0], *axes[:, 1]])
        position = np.asarray(origin) + s * step * axes[:, 2]
        ds.ImagePositionPatient = _ds(position)
        ds.PixelSpacing = _ds(spacing)
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        pixels = np.arange(rows * cols).reshape(rows, cols) + s * rows * cols + 1
        ds.PixelData = pixels.astype(np.uint16).tobytes()
        if not minimal:
            ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = (
                "Doe^Jane",
                "7",
                "",
                "F",
            )
            ds.StudyDate, ds.StudyTime, ds.StudyID = "20260101", "101010", "1"
            ds.AccessionNumber, ds.ReferringPhysicianName = "A1", ""
            ds.StudyDescription, ds.SeriesDescription = "phantom", "axial"
            ds.SeriesNumber, ds.InstanceNumber = 3, s + 1
            ds.SliceLocation, ds.SliceThickness = f"{position @ axes[:, 2]:.4f}", f"{step}"
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        out.append(ds)
    return out


def write_series(folder: Path, datasets: list[Dataset]) -> Path:
    """Write the datasets under names that do not follow the slice order."""
    folder.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(0).permutation(len(datasets))
    for name, n in enumerate(order):
        datasets[n].save_as(folder / f"im{name:03d}.dcm", enforce_file_format=True)
    return folder


def write_multiframe(folder: Path) -> Path:
    """One enhanced multi-frame CT (highdicom's legacy conversion) of an oblique series."""
    folder.mkdir(parents=True)
    image = hd.legacy.LegacyConvertedEnhancedCTImage(
        source_slices(axes=OBLIQUE), generate_uid(), 4, generate_uid(), 1
    )
    image.save_as(folder / "multiframe.dcm")
    return folder


LUT = np.random.default_rng(3).integers(0, 4, size=int(np.prod(SHAPE)) + 1)
"""Label value of each source voxel value (0 = background; 3 labels)."""
NAMES = {1: "liver", 2: "spleen", 3: "left kidney"}
COLOURS = {1: (200, 30, 30), 2: (20, 160, 40), 3: (240, 220, 0)}


def source_frames(folder: Path) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
    """(SOP instance UID, frame number) -> (pixels, ImagePositionPatient), read with pydicom."""
    out = {}
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array.reshape(-1, ds.Rows, ds.Columns)
        if "PerFrameFunctionalGroupsSequence" in ds:
            positions = [
                f.PlanePositionSequence[0].ImagePositionPatient
                for f in ds.PerFrameFunctionalGroupsSequence
            ]
        else:
            positions = [ds.ImagePositionPatient]
        for n, (frame, position) in enumerate(zip(pixels, positions, strict=True), start=1):
            out[(ds.SOPInstanceUID, n)] = (frame, np.array(position, dtype=float))
    return out


def check_seg(seg_path: Path, folder: Path, value_of: dict[int, int]) -> None:
    """Read the SEG with pydicom and check every frame against its source frame."""
    seg = pydicom.dcmread(seg_path)
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    sources = source_frames(folder)
    referenced = {
        i.ReferencedSOPInstanceUID
        for s in seg.ReferencedSeriesSequence
        for i in s.ReferencedInstanceSequence
    }
    assert referenced == {uid for uid, _ in sources}
    pixels = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    seen = set()
    shared = seg.SharedFunctionalGroupsSequence[0]
    for n, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        group = item if "SegmentIdentificationSequence" in item else shared
        number = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        source = item.DerivationImageSequence[0].SourceImageSequence[0]
        key = (source.ReferencedSOPInstanceUID, int(source.get("ReferencedFrameNumber", 1)))
        frame, position = sources[key]
        np.testing.assert_allclose(
            np.array(item.PlanePositionSequence[0].ImagePositionPatient, float), position, atol=1e-4
        )
        expected = LUT[frame] == value_of[number]
        np.testing.assert_array_equal(pixels[n].astype(bool), expected, err_msg=f"frame {n}")
        seen.add((key, number))
    for key, (frame, _) in sources.items():  # frames left out must be empty
        for number, value in value_of.items():
            if (key, number) not in seen:
                assert not np.any(LUT[frame] == value), (key, number)
    assert len(seen) == len(pixels)
    check_with_highdicom(seg_path, sources, value_of)


def check_with_highdicom(seg_path: Path, sources: dict, value_of: dict[int, int]) -> None:
    """highdicom's own look-up by source instance (frame), segments stacked last."""
    seg = hd.seg.segread(seg_path)
    numbers = sorted(value_of)
    options = {"segment_numbers": numbers, "assert_missing_frames_are_empty": True}
    uids = sorted({uid for uid, _ in sources})
    if len(uids) == len(sources):  # single-frame sources
        stacks = seg.get_pixels_by_source_instance(uids, **options)
        keys = [(uid, 1) for uid in uids]
    else:
        (uid,) = uids
        keys = sorted(k for k in sources if k[0] == uid)
        stacks = seg.get_pixels_by_source_frame(uid, [n for _, n in keys], **options)
    for key, stack in zip(keys, stacks, strict=True):
        frame = sources[key][0]
        for s, number in enumerate(numbers):
            np.testing.assert_array_equal(stack[..., s] > 0, LUT[frame] == value_of[number])


def mask_of(volume: Volume) -> np.ndarray:
    return LUT[volume.array.astype(np.int64)].astype(np.uint8)


@pytest.mark.parametrize(
    "name, axes, minimal",
    [("lps_axial", AXIAL, False), ("oblique", OBLIQUE, False), ("missing_tags", AXIAL, True)],
)
def test_segments_land_on_the_source_frames(tmp_path, name, axes, minimal):
    folder = write_series(tmp_path / name, source_slices(axes=axes, minimal=minimal))
    volume = load(folder)
    mask = mask_of(volume)
    assert set(np.unique(mask)) == {0, 1, 2, 3}
    out = write_dicom_seg(mask, folder, tmp_path / "seg.dcm", labels=NAMES, colours=COLOURS)
    check_seg(out, folder, {1: 1, 2: 2, 3: 3})
    seg = pydicom.dcmread(out)
    for item in seg.SegmentSequence:
        n = int(item.SegmentNumber)
        assert item.SegmentLabel == NAMES[n]
        lab = hd.color.CIELabColor.from_rgb(*COLOURS[n]).value
        assert list(item.RecommendedDisplayCIELabValue) == list(lab)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == volume.meta["series_uid"]
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SliceThickness) == 2.5  # the series' own, or its slice spacing
    labels, names = read_dicom_seg(out, folder)
    np.testing.assert_array_equal(labels, mask)
    assert names == NAMES


def test_a_multiframe_reference(tmp_path):
    folder = write_multiframe(tmp_path / "mf")
    volume = reference_volume(folder)
    mask = mask_of(volume)
    assert set(np.unique(mask)) == {0, 1, 2, 3}
    out = write_dicom_seg(mask, folder, tmp_path / "seg.dcm", labels=NAMES)
    check_seg(out, folder, {1: 1, 2: 2, 3: 3})
    labels, names = read_dicom_seg(out, folder / "multiframe.dcm")
    np.testing.assert_array_equal(labels, mask)
    assert names == NAMES


def test_values_are_renumbered_and_default_names_and_colours(tmp_path):
    folder = write_series(tmp_path / "s", source_slices())
    volume = load(folder)
    mask = (mask_of(volume) * 2).astype(np.uint16)  # values 2, 4, 6
    out = write_dicom_seg(mask, volume, tmp_path / "seg.dcm")
    check_seg(out, folder, {1: 1, 2: 2, 3: 3})
    seg = pydicom.dcmread(out)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["label 2", "label 4", "label 6"]
    lab = hd.color.CIELabColor.from_rgb(*PALETTE[0]).value
    assert list(seg.SegmentSequence[0].RecommendedDisplayCIELabValue) == list(lab)
    labels, _ = read_dicom_seg(out, volume)
    np.testing.assert_array_equal(labels * 2, mask)


def test_a_single_binary_mask(tmp_path):
    folder = write_series(tmp_path / "s", source_slices(axes=OBLIQUE))
    volume = load(folder)
    mask = mask_of(volume) == 2
    out = write_dicom_seg(mask, folder, tmp_path / "seg.dcm", labels={1: "tumour"})
    check_seg(out, folder, {1: 2})
    seg = pydicom.dcmread(out)
    assert len(seg.SegmentSequence) == 1
    labels, names = read_dicom_seg(out, folder)
    np.testing.assert_array_equal(labels, mask)
    assert names == {1: "tumour"}


def test_convert_both_ways(tmp_path):
    folder = write_series(tmp_path / "s", source_slices(axes=OBLIQUE))
    volume = load(folder)
    mask = mask_of(volume)
    nifti = save_mask(mask, volume, tmp_path / "labels.nii.gz")
    written = convert(nifti, tmp_path / "seg.dcm", folder, labels=NAMES)
    assert written == NAMES
    check_seg(tmp_path / "seg.dcm", folder, {1: 1, 2: 2, 3: 3})
    read = convert(tmp_path / "seg.dcm", tmp_path / "back.nii.gz", folder)
    assert read == NAMES
    back = load_label(tmp_path / "back.nii.gz", like=volume)
    np.testing.assert_array_equal(back.array, mask)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-5)


def test_non_dicom_reference_is_refused(tmp_path):
    folder = write_series(tmp_path / "s", source_slices())
    volume = load(folder)
    mask = mask_of(volume)
    nifti = save_volume(volume, tmp_path / "image.nii.gz")
    with pytest.raises(InputError, match="DICOM SEG needs the DICOM series"):
        write_dicom_seg(mask, nifti, tmp_path / "seg.dcm")
    with pytest.raises(InputError, match="DICOM SEG needs the DICOM series"):
        write_dicom_seg(mask, load(nifti), tmp_path / "seg.dcm")
    labels = save_mask(mask, volume, tmp_path / "labels.nii.gz")
    with pytest.raises(InputError, match="DICOM SEG needs the DICOM series"):
        convert(labels, tmp_path / "seg.dcm", nifti)
    assert not (tmp_path / "seg.dcm").exists()


def test_wrong_grid_empty_mask_and_overwrite_are_refused(tmp_path):
    folder = write_series(tmp_path / "s", source_slices())
    volume = load(folder)
    mask = mask_of(volume)
    with pytest.raises(GeometryError, match="differs"):
        write_dicom_seg(mask[:-1], folder, tmp_path / "seg.dcm")
    affine = volume.affine.copy()
    affine[:3, 3] += 0.4 * affine[:3, 0]  # 0.4 voxel along i
    shifted = Volume(volume.array, affine, path=volume.path, meta=volume.meta)
    with pytest.raises(GeometryError, match="off the grid"):
        write_dicom_seg(mask, folder, tmp_path / "seg.dcm", volume=shifted)
    with pytest.raises(InputError, match="empty"):
        write_dicom_seg(np.zeros_like(mask), folder, tmp_path / "seg.dcm")
    with pytest.raises(InputError, match="does not name"):
        write_dicom_seg(mask, folder, tmp_path / "seg.dcm", labels={1: "liver"})
    write_dicom_seg(mask, folder, tmp_path / "seg.dcm")
    with pytest.raises(OverwriteError):
        write_dicom_seg(mask, folder, tmp_path / "seg.dcm")
    write_dicom_seg(mask, folder, tmp_path / "seg.dcm", force=True)
    other = write_series(tmp_path / "other", source_slices(origin=(0.0, 0.0, 0.0)))
    with pytest.raises(GeometryError):
        read_dicom_seg(tmp_path / "seg.dcm", other)


@pytest.mark.parametrize("kind", ["BINARY", "FRACTIONAL", "LABELMAP"])
def test_reads_segs_that_highdicom_writes_from_the_source_frames(tmp_path, kind):
    """A SEG made without mecca.dicom_seg (frames = the label of each source pixel, in
    the source files' order) reads back onto mecca.io's grid."""
    folder = write_series(tmp_path / "s", source_slices(axes=OBLIQUE))
    sources = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    frames = np.stack([LUT[ds.pixel_array] for ds in sources]).astype(np.uint8)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=NAMES[n],
            segmented_property_category=hd.sr.CodedConcept("85756007", "SCT", "Tissue"),
            segmented_property_type=hd.sr.CodedConcept("85756007", "SCT", "Tissue"),
            algorithm_type="MANUAL",
        )
        for n in sorted(NAMES)
    ]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=kind,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=5,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="0",
        device_serial_number="0",
    )
    seg.save_as(tmp_path / "seg.dcm")
    labels, names = read_dicom_seg(tmp_path / "seg.dcm", folder)
    np.testing.assert_array_equal(labels, mask_of(load(folder)))
    assert names == NAMES
