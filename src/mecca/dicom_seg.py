"""DICOM Segmentation objects (DICOM SEG) for masks and label maps on a DICOM series' grid.

A mask in MECCA is an (I, J, K) array on the grid of the :class:`~mecca.io.Volume` read
from a DICOM series (:mod:`mecca.io`: i runs along a slice's columns, j along its rows, k
across the slices, in the order SimpleITK sorts them; the affine is RAS+). A DICOM SEG
stores 2D frames, each tied to one frame of the source series. The two are joined by
geometry alone, never by file order or slice numbers: each source frame's pixel ``(r, c)``
lies at ``ImagePositionPatient + c * PixelSpacing[1] * row cosine + r * PixelSpacing[0] *
column cosine`` (LPS mm), which the volume's affine maps back to one voxel (i, j, k). A
frame that does not land exactly on voxel centres of the grid is refused
(:class:`~mecca.errors.GeometryError`), as is a grid that the frames do not cover.

Writing (:func:`write_dicom_seg`) makes one BINARY segment per label value with its name
and a colour (CIELab, as DICOM stores it), through ``highdicom``, frames in the source
series' geometry, empty frames left out. Reading (:func:`read_dicom_seg`) puts each frame
of any BINARY, FRACTIONAL (above half) or LABELMAP SEG back on the grid by the same rule.
Segment numbers are 1, 2, ... in DICOM: label values are renumbered in increasing order
(values 1..N are kept as they are), and :func:`read_dicom_seg` returns segment numbers.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.misc import is_dicom
from pydicom.sr.codedict import codes

from mecca._version import __version__
from mecca.errors import GeometryError, InputError, OverwriteError
from mecca.io import (
    Volume,
    affine_from_itk,
    atomic_write,
    file_extension,
    is_orthonormal,
    load_dicom_series,
    load_label,
    save_mask,
)

ON_VOXEL_TOL = 0.05
"""Largest distance (in voxels) of a frame's pixel centre from a voxel centre of the grid."""

PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (170, 110, 40),
)
"""Default segment colours (RGB), by segment number, cycling."""

NOT_DICOM_HINT = "DICOM SEG needs the DICOM series the mask was made on: pass that series' folder"
_LPS = np.array([-1.0, -1.0, 1.0])  # LPS <-> RAS, per axis

TYPE2_COPIED = (
    "PatientID", "PatientName", "PatientBirthDate", "PatientSex",
    "AccessionNumber", "StudyID", "StudyDate", "StudyTime",
)  # fmt: skip
"""Type 2 tags (present, maybe empty) that highdicom copies from the source image: added
empty to the in-memory headers where a source series lacks them. A missing or empty
SliceThickness is set to the slice spacing instead (the SEG's pixel measures need one,
and highdicom's reader refuses a SEG without it)."""

ReferenceLike = str | Path | Volume | Sequence[Dataset]
"""A DICOM series folder, a multi-frame DICOM file, a Volume read from one, or datasets."""


# ----------------------------------------------------------------------------- geometry


def frame_geometries(ds: Dataset) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Position (3,), orientation (6,) and pixel spacing (2,) of each frame of a dataset.

    Single-frame images carry them at the top level; enhanced multi-frame images (and
    SEG objects) in the per-frame or shared functional groups.
    """
    if "PerFrameFunctionalGroupsSequence" not in ds:
        return [(_floats(ds, "ImagePositionPatient"), *_orientation_spacing(ds, ds))]
    shared = (
        ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None
    )
    out = []
    for item in ds.PerFrameFunctionalGroupsSequence:
        position = _group(item, shared, "PlanePositionSequence", ds)
        orientation = _group(item, shared, "PlaneOrientationSequence", ds)
        measures = _group(item, shared, "PixelMeasuresSequence", ds)
        out.append(
            (
                _floats(position, "ImagePositionPatient"),
                *_orientation_spacing(orientation, measures),
            )
        )
    return out


def _group(item: Dataset, shared: Dataset | None, name: str, ds: Dataset) -> Dataset:
    """The first item of functional group ``name``, per frame first, else shared."""
    for where in (item, shared):
        if where is not None and name in where:
            found: Dataset = where[name].value[0]
            return found
    raise InputError(f"a frame has no {name}", path=ds.filename or None, hint="not a volume")


def _floats(ds: Dataset, keyword: str) -> np.ndarray:
    if keyword not in ds:
        raise InputError(f"has no {keyword}", path=getattr(ds, "filename", None) or None)
    return np.array([float(v) for v in ds[keyword].value], dtype=np.float64)


def _orientation_spacing(orient: Dataset, measures: Dataset) -> tuple[np.ndarray, np.ndarray]:
    return _floats(orient, "ImageOrientationPatient"), _floats(measures, "PixelSpacing")


def frame_voxels(
    geometry: tuple[np.ndarray, np.ndarray, np.ndarray], rows: int, cols: int, grid: Volume
) -> np.ndarray:
    """The grid voxel (i, j, k) of each pixel of a frame: int array (rows, cols, 3).

    Raises:
        GeometryError: a pixel centre is not on a voxel centre, or outside the grid.
    """
    position, orientation, spacing = geometry
    inv = np.linalg.inv(grid.affine)
    origin = inv[:3, :3] @ (position * _LPS) + inv[:3, 3]
    along_col = inv[:3, :3] @ (orientation[:3] * _LPS) * spacing[1]  # c + 1
    along_row = inv[:3, :3] @ (orientation[3:] * _LPS) * spacing[0]  # r + 1
    r = np.arange(rows, dtype=np.float64)[:, None, None]
    c = np.arange(cols, dtype=np.float64)[None, :, None]
    ijk = origin + r * along_row + c * along_col
    voxels = np.rint(ijk)
    off = float(np.max(np.abs(ijk - voxels)))
    inside = np.all((voxels >= 0) & (voxels < np.asarray(grid.shape)))
    if off > ON_VOXEL_TOL or not inside:
        where = f"{off:.3g} voxel off the grid" if inside else "outside the grid"
        raise GeometryError(
            f"a DICOM frame at {position.tolist()} mm (LPS) lies {where} of the volume",
            path=grid.path,
            hint="the mask and the DICOM frames must be on the same series' grid",
        )
    return voxels.astype(np.intp)


# ----------------------------------------------------------------------------- reference


def _not_dicom(path: Path | None, what: str) -> InputError:
    return InputError(f"{what}, not a DICOM series", path=path, hint=NOT_DICOM_HINT)


def _multiframe_volume(file: Path) -> Volume:
    """The grid of one multi-frame DICOM file, read with SimpleITK (GDCM), in
    :mod:`mecca.io`'s convention: array (I, J, K) = ITK's (x, y, z), RAS+ affine.
    (:func:`mecca.io.load` reads single-frame series only.)"""
    try:
        image = sitk.ReadImage(str(file))
    except RuntimeError as exc:
        raise InputError("cannot be read as a DICOM image", path=file) from exc
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("is not a 3D multi-frame image", path=file, hint=NOT_DICOM_HINT)
    affine = affine_from_itk(image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    if not is_orthonormal(affine):
        raise GeometryError("the frames' grid is sheared", path=file)
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    uid = str(pydicom.dcmread(file, stop_before_pixels=True).get("SeriesInstanceUID", ""))
    meta = {"format": "dicom", "multiframe": True, "series_uid": uid or None}
    return Volume(array, affine, path=file, meta=meta)


def _frame_count(file: Path) -> int:
    """NumberOfFrames of a DICOM file (1 when absent)."""
    return int(pydicom.dcmread(file, stop_before_pixels=True).get("NumberOfFrames") or 1)


def _dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_dicom(str(p)))


def reference_volume(reference: str | Path | Volume, *, series_uid: str | None = None) -> Volume:
    """The Volume (grid) a mask on a DICOM reference is on.

    Args:
        reference: a DICOM series folder (read with :func:`mecca.io.load_dicom_series`), a
            folder or file holding one multi-frame DICOM image, or a Volume (returned).
        series_uid: which series of a folder holding several.

    Raises:
        InputError: the reference is not DICOM (a NIfTI file, say), or missing.
    """
    if isinstance(reference, Volume):
        return reference
    path = Path(reference).expanduser()
    if not path.exists():
        raise InputError("not found", path=path, hint=NOT_DICOM_HINT)
    files = _dicom_files(path) if path.is_dir() else [path]
    if not files or not is_dicom(str(files[0])):
        what = "holds no DICOM file" if path.is_dir() else f"is a {file_extension(path)} file"
        raise _not_dicom(path, what)
    if len(files) == 1 and _frame_count(files[0]) > 1:
        return _multiframe_volume(files[0])
    if not path.is_dir():
        raise _not_dicom(path, "is one DICOM slice")
    return load_dicom_series(path, series_uid, dtype=None)


def _source_datasets(
    reference: ReferenceLike, volume: Volume | None, series_uid: str | None
) -> tuple[list[Dataset], Volume]:
    """The source image datasets (headers) and the grid of a reference."""
    if isinstance(reference, Volume):
        if reference.meta.get("format") != "dicom" or reference.path is None:
            raise _not_dicom(
                reference.path, f"the image is {reference.meta.get('format', 'an array')}"
            )
        volume = volume or reference
        series_uid = series_uid or reference.meta.get("series_uid")
        reference = reference.path
    if isinstance(reference, str | Path):
        grid = volume or reference_volume(reference, series_uid=series_uid)
        path = Path(reference).expanduser()
        files = _dicom_files(path) if path.is_dir() else [path]
        uid = series_uid or grid.meta.get("series_uid")
        datasets: list[Dataset] = []
        for file in files:
            ds = pydicom.dcmread(file, stop_before_pixels=True)
            if ds.get("Modality") != "SEG" and uid in (None, ds.get("SeriesInstanceUID")):
                datasets.append(ds)
        if not datasets:
            raise _not_dicom(path, "holds no image of the series")
        return [_completed(ds, grid) for ds in datasets], grid
    if volume is None:
        raise InputError(
            "datasets were given without the Volume the mask is on",
            hint="pass volume=, or the series folder instead of datasets",
        )
    return [_completed(ds, volume) for ds in reference], volume


def _completed(ds: Dataset, grid: Volume) -> Dataset:
    """``ds``, or a copy of it with the tags highdicom needs added (:data:`TYPE2_COPIED`
    empty, SliceThickness as the grid's spacing along the slice normal)."""
    missing = [keyword for keyword in TYPE2_COPIED if keyword not in ds]
    thin = "PerFrameFunctionalGroupsSequence" not in ds and ds.get("SliceThickness") is None
    if not missing and not thin:
        return ds
    ds = copy.deepcopy(ds)
    for keyword in missing:
        setattr(ds, keyword, None)
    if thin:
        orientation = _floats(ds, "ImageOrientationPatient")
        normal = np.cross(orientation[:3], orientation[3:]) * _LPS  # in RAS
        steps = np.abs(normal @ grid.affine[:3, :3])  # mm along the normal per voxel step
        ds.SliceThickness = f"{float(steps.max()):.6g}"
    return ds


def _frames_on_grid(labels: np.ndarray, sources: Sequence[Dataset], grid: Volume) -> np.ndarray:
    """The label map's values on every source frame, in source (file, frame) order:
    array (frames, rows, cols). GeometryError unless the frames cover the grid once."""
    frames, covered = [], np.zeros(grid.shape, dtype=np.int32)
    for ds in sources:
        for geometry in frame_geometries(ds):
            idx = frame_voxels(geometry, int(ds.Rows), int(ds.Columns), grid)
            i, j, k = idx[..., 0], idx[..., 1], idx[..., 2]
            frames.append(labels[i, j, k])
            covered[i, j, k] += 1  # a voxel twice in one frame counts once: caught below
    if not np.all(covered == 1) or sum(f.size for f in frames) != covered.size:
        raise GeometryError(
            f"the DICOM frames cover {int((covered > 0).sum())} of the grid's"
            f" {covered.size} voxels ({int((covered > 1).sum())} more than once)",
            path=grid.path,
            hint="pass the series the mask was made on (one series, every slice)",
        )
    return np.stack(frames)


# ----------------------------------------------------------------------------- writing


def _segments(
    arr: np.ndarray, labels: Mapping[int, str] | None
) -> tuple[list[int], dict[int, str]]:
    """Label values (ascending) to write as segments 1..N, and each one's name."""
    present = [int(v) for v in np.unique(arr) if v != 0]
    if labels is None:
        if not present:
            raise InputError("the mask is empty: there is no segment to write")
        return present, {v: f"label {v}" for v in present}
    unnamed = sorted(set(present) - set(labels))
    if unnamed:
        raise InputError(
            f"the mask holds values {unnamed} that labels= does not name",
            hint="name every label value, or leave labels= out",
        )
    values = sorted(int(v) for v in labels if int(v) != 0)
    if not values:
        raise InputError("labels= names no non-zero value")
    return values, {v: str(labels[v]) for v in values}


def _colour(value: int, number: int, colours: Mapping[int, Any] | None) -> hd.color.CIELabColor:
    """CIELab colour of a label: colours[value] (RGB 0-255 or a CSS name), else the palette."""
    given = None if colours is None else colours.get(value)
    if isinstance(given, str):
        return hd.color.CIELabColor.from_string(given)
    rgb = PALETTE[(number - 1) % len(PALETTE)] if given is None else given
    return hd.color.CIELabColor.from_rgb(*(int(c) for c in rgb))


def _description(number: int, name: str, colour: hd.color.CIELabColor) -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=name[:64],
        segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Tissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="MECCA", version=__version__, family=codes.cid7162.ArtificialIntelligence
        ),
        display_color=colour,
    )


def write_dicom_seg(
    mask_or_labelmap: np.ndarray | Volume,
    reference: ReferenceLike,
    out_path: str | Path,
    *,
    labels: Mapping[int, str] | None = None,
    colours: Mapping[int, Any] | None = None,
    volume: Volume | None = None,
    series_uid: str | None = None,
    description: str = "MECCA segmentation",
    force: bool = False,
) -> Path:
    """Write a mask or label map as a DICOM SEG referencing its source series.

    Args:
        mask_or_labelmap: (I, J, K) bool or non-negative integer labels on the grid of the
            volume read from ``reference`` (:func:`reference_volume`).
        reference: the source series' folder, a multi-frame DICOM file (or its folder), the
            Volume read from one, or the source datasets (then ``volume=`` is needed).
        out_path: the ``.dcm`` file to write (atomically).
        labels: name of each label value; None names the values present ``label <v>``.
            Every non-zero value of the mask must be named; named values absent from the
            mask become empty segments.
        colours: RGB (0-255) triple or CSS colour name per label value; default
            :data:`PALETTE`.
        volume: the Volume the mask is on, when already read (skips reading it again).
        series_uid: the series to use when the folder holds several.
        description: the SEG's SeriesDescription.
        force: replace an existing file.

    Returns:
        The path written. Segment numbers are 1..N in increasing label value.

    Raises:
        InputError: a non-DICOM reference, an empty mask, unnamed values.
        GeometryError: the mask's shape or the frames do not match the grid.
        OverwriteError: out_path exists and force is False.
    """
    out = Path(out_path).expanduser()
    if out.exists() and not force:
        raise OverwriteError("already exists", path=out, hint="pass force=True to replace it")
    arr = np.asarray(getattr(mask_or_labelmap, "array", mask_or_labelmap))
    sources, grid = _source_datasets(reference, volume, series_uid)
    if arr.shape != grid.shape:
        raise GeometryError(
            f"mask shape {arr.shape} differs from the series' grid {grid.shape}",
            hint="the mask must be on the grid of the volume read from the series",
        )
    if not np.issubdtype(arr.dtype, np.integer) and arr.dtype != bool:
        raise InputError("the mask must hold whole numbers (bool or integer labels)")
    if int(arr.min()) < 0:
        raise InputError("label values must be >= 0")
    values, names = _segments(arr, labels)
    lut = np.zeros(max(int(arr.max()), *values) + 1, dtype=np.uint16)
    lut[values] = np.arange(1, len(values) + 1)  # label value -> segment number
    frames = _frames_on_grid(lut[arr.astype(np.int64)], sources, grid)
    frames = frames.astype(np.uint8 if len(values) < 256 else np.uint16)
    descriptions = [
        _description(n, names[v], _colour(v, n, colours)) for n, v in enumerate(values, start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="MECCA",
        manufacturer_model_name="MECCA",
        software_versions=__version__,
        device_serial_number="0",
        series_description=description[:64],
    )
    return atomic_write(out, lambda tmp: seg.save_as(tmp))


# ----------------------------------------------------------------------------- reading


def read_dicom_seg(
    seg_path: str | Path, reference: str | Path | Volume, *, series_uid: str | None = None
) -> tuple[np.ndarray, dict[int, str]]:
    """Read a DICOM SEG back onto the grid of the volume read from its reference series.

    Args:
        seg_path: the SEG file.
        reference: the source series' folder (or multi-frame file), or the Volume whose
            grid the SEG's frames lie on.
        series_uid: the series to use when the folder holds several.

    Returns:
        (label map (I, J, K) of segment numbers, uint8 or uint16; {segment number: label}).
        Where BINARY segments overlap, the higher segment number is kept.

    Raises:
        InputError: not a DICOM SEG. GeometryError: a frame off the reference's grid.
    """
    path = Path(seg_path).expanduser()
    if not path.is_file() or not is_dicom(str(path)):
        raise InputError("is not a DICOM file", path=path, hint="pass a DICOM SEG (.dcm)")
    ds = pydicom.dcmread(path)
    if ds.get("Modality") != "SEG" or "SegmentSequence" not in ds:
        raise InputError("is not a DICOM Segmentation (SEG)", path=path)
    grid = reference_volume(reference, series_uid=series_uid)
    names = {  # a LABELMAP SEG may describe 0 (background) too
        int(s.SegmentNumber): str(s.get("SegmentLabel", ""))
        for s in ds.SegmentSequence
        if int(s.SegmentNumber) > 0
    }
    dtype = np.uint8 if max(names, default=0) < 256 else np.uint16
    out = np.zeros(grid.shape, dtype=dtype)
    kind = str(ds.SegmentationType)
    pixels = ds.pixel_array.reshape(-1, int(ds.Rows), int(ds.Columns))
    threshold = float(ds.get("MaximumFractionalValue", 1)) / 2 if kind == "FRACTIONAL" else 0
    shared = (
        ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None
    )
    for n, geometry in enumerate(frame_geometries(ds)):
        idx = frame_voxels(geometry, int(ds.Rows), int(ds.Columns), grid)
        frame = pixels[n]
        if kind == "LABELMAP":
            on = frame > 0
            out[idx[on, 0], idx[on, 1], idx[on, 2]] = frame[on]
            continue
        item = ds.PerFrameFunctionalGroupsSequence[n]
        number = int(
            _group(item, shared, "SegmentIdentificationSequence", ds).ReferencedSegmentNumber
        )
        on = frame > threshold
        sel = idx[on]
        keep = out[sel[:, 0], sel[:, 1], sel[:, 2]] < number
        sel = sel[keep]
        out[sel[:, 0], sel[:, 1], sel[:, 2]] = number
    return out, names


# ----------------------------------------------------------------------------- convert


def convert(
    source: str | Path,
    target: str | Path,
    reference: str | Path | Volume,
    *,
    labels: Mapping[int, str] | None = None,
    colours: Mapping[int, Any] | None = None,
    series_uid: str | None = None,
    force: bool = False,
) -> dict[int, str]:
    """Convert between a label map file (NIfTI, NRRD, ...) and a DICOM SEG.

    The direction follows ``target``'s ending: ``.dcm`` writes a SEG from the label map
    ``source`` (which must lie on the reference series' grid); any mask format
    :func:`mecca.io.save_mask` writes reads the SEG ``source`` into a label map of
    segment numbers on that grid.

    Returns:
        {value: name} of the segments written (SEG) or read (label map).
    """
    target = Path(target).expanduser()
    grid = reference_volume(reference, series_uid=series_uid)
    if file_extension(target) == ".dcm":
        label_map = load_label(source, like=grid)
        values, names = _segments(label_map.array, labels)
        write_dicom_seg(
            label_map.array,
            grid if isinstance(reference, Volume) else reference,
            target,
            labels=names,
            colours=colours,
            volume=grid,
            series_uid=series_uid,
            force=force,
        )
        return {n: names[v] for n, v in enumerate(values, start=1)}
    label_map_array, names = read_dicom_seg(source, grid)
    save_mask(label_map_array, grid, target, force=force)
    return names
