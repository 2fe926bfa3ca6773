"""Medical image volumes with their geometry, and reading/writing them.

Axis convention (the one place it is written down)
-------------------------------------------------
``Volume.array`` is indexed ``array[i, j, k]`` in the file's own voxel order, the order
NIfTI calls i, j, k (nibabel's ``get_fdata()`` order). Files read with SimpleITK (NRRD,
MHA/MHD, GIPL, DICOM) come as z, y, x arrays from ``sitk.GetArrayFromImage``; they are
transposed to x, y, z = i, j, k here, so every array in the package has the same order.

``Volume.affine`` maps a voxel index ``(i, j, k, 1)`` to world millimetres in RAS+
(x increases towards the subject's Right, y towards Anterior, z towards Superior), the
nibabel / NIfTI convention. ITK's LPS world is converted by negating x and y.

Clicks, boxes and every voxel coordinate in the package are ``(i, j, k)`` triples in this
order; boxes are half-open ``[start, stop)``.

Reading and writing policy
--------------------------
- NIfTI is read with nibabel (the header is kept in ``meta["header"]``); NRRD, MetaImage,
  GIPL and DICOM series are read with SimpleITK. ``meta["format"]`` names the source.
- A NIfTI whose sform is sheared (not a rotation times a scaling) is read through its qform
  when the qform is set (``qform_code > 0``, a qform cannot be sheared), with a warning and
  ``meta["affine_source"] == "qform"``; with no usable qform it is refused
  (:class:`~mecca.errors.GeometryError`). Other formats with a sheared grid are refused.
- RGB NIfTI (RGB24/RGBA32) is read as a channel axis (pick one with ``channel=``);
  complex images are refused rather than losing their imaginary part.
- Masks are written on exactly the grid of the image they belong to. Writes are atomic:
  a temporary file in the target folder is renamed over the target only when complete.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from numpy.lib.recfunctions import structured_to_unstructured
from numpy.typing import ArrayLike, DTypeLike

from mecca.errors import GeometryError, InputError, MeccaError, OverwriteError

logger = logging.getLogger(__name__)

#: File name endings read by :func:`load`, and the format each one names.
FORMATS: dict[str, str] = {
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "metaimage",
    ".mhd": "metaimage",
    ".gipl": "gipl",
    ".gipl.gz": "gipl",
}
#: SimpleITK ImageIO that reads each format other than NIfTI.
ITK_IMAGE_IO = {"nrrd": "NrrdImageIO", "metaimage": "MetaImageIO", "gipl": "GiplImageIO"}
#: Endings :func:`save_mask` and :func:`save_volume` write: single-file formats only, since
#: a header/data pair (.mhd/.raw, .nhdr/.raw) cannot be replaced atomically.
WRITABLE = (".nii", ".nii.gz", ".nrrd", ".mha", ".gipl", ".gipl.gz")

#: Largest allowed |cos| between two grid axes, and largest mismatch of grid corners (mm)
#: for two grids to count as the same.
ORTHO_TOL = 1e-3
GRID_TOL_MM = 1e-3

_LPS = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS (its own inverse)
_LAYOUT_HINT = "pass a .nii/.nii.gz, .nrrd/.nhdr, .mha/.mhd or .gipl file, or a DICOM folder"


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image (or mask) together with the geometry of its voxel grid.

    Attributes:
        array: voxel values, shape (I, J, K), in the file's i, j, k order.
        affine: float64 (4, 4), voxel index (i, j, k, 1) -> RAS+ world millimetres.
        path: the file it was read from, if any.
        meta: format-specific header data needed to write a mask back with exactly the
            same geometry (for NIfTI: the nibabel header with its qform/sform codes).
    """

    array: np.ndarray
    affine: np.ndarray
    path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape (I, J, K)."""
        return tuple(int(s) for s in self.array.shape[:3])  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k (column norms of the affine)."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return tuple(float(n) for n in norms)  # type: ignore[return-value]

    @property
    def direction(self) -> np.ndarray:
        """(3, 3) unit column vectors of the i, j, k axes in RAS+ world space."""
        return self.affine[:3, :3] / np.asarray(self.spacing)[None, :]

    @property
    def origin(self) -> np.ndarray:
        """World position (RAS+ mm) of the centre of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    def voxel_to_world(self, ijk: np.ndarray) -> np.ndarray:
        """Map voxel coordinates (N, 3) or (3,) to RAS+ millimetres."""
        pts = np.asarray(ijk, dtype=np.float64)
        return pts @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_voxel(self, xyz: np.ndarray) -> np.ndarray:
        """Map RAS+ millimetres (N, 3) or (3,) to (fractional) voxel coordinates."""
        pts = np.asarray(xyz, dtype=np.float64)
        inv = np.linalg.inv(self.affine)
        return pts @ inv[:3, :3].T + inv[:3, 3]


# ----------------------------------------------------------------------------- formats


def file_extension(path: str | Path) -> str:
    """Lower-case ending of ``path`` including compound endings (``.nii.gz``), or ''."""
    name = Path(path).name.lower()
    for ext in sorted(FORMATS, key=len, reverse=True):
        if name.endswith(ext):
            return ext
    return Path(name).suffix


def _format_of(path: Path) -> str:
    """Format name of a file path from its ending; InputError when unknown."""
    ext = file_extension(path)
    if ext in FORMATS:
        return FORMATS[ext]
    hint = _LAYOUT_HINT
    if ext == ".dcm":
        hint = "pass the folder that holds the DICOM series, not one slice"
    raise InputError(f"unknown image file ending {ext or '(none)'!r}", path=path, hint=hint)


# ----------------------------------------------------------------------------- geometry


def is_orthonormal(affine: np.ndarray, tol: float = ORTHO_TOL) -> bool:
    """Whether the affine's columns are mutually orthogonal with non-zero lengths.

    Args:
        affine: (4, 4) voxel -> world matrix.
        tol: largest allowed |cos| between two axes.
    """
    m = np.asarray(affine, dtype=np.float64)[:3, :3]
    norms = np.linalg.norm(m, axis=0)
    if not np.all(np.isfinite(m)) or np.any(norms < 1e-9):
        return False
    d = m / norms
    return bool(np.allclose(d.T @ d, np.eye(3), atol=tol, rtol=0.0))


def _check_affine(affine: np.ndarray, path: Path | None) -> np.ndarray:
    """Return the affine as float64 (4, 4), GeometryError when degenerate or sheared."""
    a = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(a)) or np.any(np.linalg.norm(a[:3, :3], axis=0) < 1e-9):
        raise GeometryError(
            "the voxel grid is degenerate (zero, NaN or infinite spacing)",
            path=path,
            hint="fix the header's spacing",
        )
    if not is_orthonormal(a):
        raise GeometryError(
            "the voxel grid is sheared (its axes are not perpendicular)",
            path=path,
            hint="resample it onto an orthogonal grid first, e.g. with SimpleITK",
        )
    return a


def _grid_corners(shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """World positions (8, 3) of the centres of the grid's corner voxels."""
    ijk = np.array(np.meshgrid(*[[0, max(int(n) - 1, 0)] for n in shape[:3]], indexing="ij"))
    pts = ijk.reshape(3, -1).T.astype(np.float64)
    return pts @ affine[:3, :3].T + affine[:3, 3]


def grid_mismatch_mm(
    shape_a: Sequence[int], affine_a: np.ndarray, shape_b: Sequence[int], affine_b: np.ndarray
) -> float:
    """Largest distance (mm) between corresponding corner voxels of two grids; inf if the
    shapes differ."""
    if tuple(shape_a[:3]) != tuple(shape_b[:3]):
        return float("inf")
    diff = _grid_corners(shape_a, affine_a) - _grid_corners(shape_b, affine_b)
    return float(np.max(np.linalg.norm(diff, axis=1)))


def same_grid(a: Volume, b: Volume, *, tol_mm: float = GRID_TOL_MM) -> bool:
    """Whether two volumes lie on the same voxel grid (shape, and corners within tol_mm)."""
    return grid_mismatch_mm(a.shape, a.affine, b.shape, b.affine) <= tol_mm


def affine_from_itk(spacing: ArrayLike, origin: ArrayLike, direction: ArrayLike) -> np.ndarray:
    """RAS+ affine (4, 4) from ITK's LPS spacing (3,), origin (3,) and row-major direction (9,)."""
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = _LPS @ d @ np.diag(np.asarray(spacing, dtype=np.float64))
    affine[:3, 3] = _LPS @ np.asarray(origin, dtype=np.float64)
    return affine


def itk_geometry(
    affine: np.ndarray,
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """ITK (spacing, origin, row-major direction) in LPS from a RAS+ affine (4, 4)."""
    m = _LPS @ np.asarray(affine, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    direction = m / spacing
    origin = _LPS @ np.asarray(affine, dtype=np.float64)[:3, 3]
    return (
        tuple(float(v) for v in spacing),
        tuple(float(v) for v in origin),
        tuple(float(v) for v in direction.ravel()),
    )


# ----------------------------------------------------------------------------- arrays


def _spatial_check(arr: np.ndarray, path: Path | None) -> None:
    """InputError for a 2D image (fewer than 3 axes, or a single slice)."""
    if arr.ndim < 3 or min(arr.shape[:3]) < 2:
        raise InputError(
            f"is a 2D image (shape {tuple(arr.shape)}); MECCA segments 3D volumes",
            path=path,
            hint="pass a 3D volume (at least 2 voxels along each axis)",
        )


def _check_real(arr: np.ndarray, path: Path | None) -> None:
    """InputError for complex voxel values: keeping only the real part would silently
    change the image."""
    if np.iscomplexobj(arr):
        raise InputError(
            f"holds complex values ({arr.dtype}); MECCA reads real-valued images",
            path=path,
            hint="save the magnitude (or the real part) as a real-valued image",
        )


def _select_channel(arr: np.ndarray, channel: int | None, path: Path | None) -> np.ndarray:
    """Reduce an (I, J, K[, ..., C]) array to (I, J, K), picking ``channel`` when needed."""
    _check_real(arr, path)
    _spatial_check(arr, path)
    extra = tuple(int(s) for s in arr.shape[3:] if s != 1)
    arr = arr.reshape(tuple(arr.shape[:3]) + extra)
    if len(extra) > 1:
        raise InputError(
            f"has {len(extra)} non-spatial axes (shape {tuple(arr.shape)})",
            path=path,
            hint="MECCA reads 3D images, or 4D images with one channel/time axis",
        )
    count = extra[0] if extra else 1
    if channel is None and count > 1:
        raise InputError(
            f"is 4D with {count} channels (shape {tuple(arr.shape)})",
            path=path,
            hint=f"pass channel= a number from 0 to {count - 1} to choose one",
        )
    index = 0 if channel is None else int(channel)
    if not 0 <= index < count:
        raise InputError(
            f"channel {channel} is out of range: the image has {count} channel(s)",
            path=path,
            hint=f"pass channel= a number from 0 to {count - 1}",
        )
    return arr[..., index] if extra else arr


def _check_finite(arr: np.ndarray, path: Path | None) -> None:
    """InputError when a floating-point image holds NaN or infinite values."""
    if not np.issubdtype(arr.dtype, np.floating):
        return
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise InputError(
            f"{bad} voxel(s) hold NaN or infinite intensities",
            path=path,
            hint="replace them (e.g. with the image minimum) and save the image again",
        )


def _as_labels(arr: np.ndarray, path: Path | None) -> np.ndarray:
    """Integer copy of a label array; InputError when values are not whole numbers."""
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
        values = arr
    else:
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise InputError(
                "label values must be whole numbers, but this file holds fractional, NaN or"
                " infinite values",
                path=path,
                hint="pass a label map (integer label per voxel), not an image",
            )
        values = arr
    lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
    for dtype in (np.uint8, np.uint16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return values.astype(dtype)
    raise InputError(f"label values {lo}..{hi} do not fit in 32 bits", path=path)


# ----------------------------------------------------------------------------- NIfTI


def _nifti_affine(header: Any, path: Path) -> tuple[np.ndarray, str]:
    """Affine from a NIfTI header and its source ('sform', 'qform' or 'none').

    A sheared sform falls back to the qform when that is set (see the module docstring).
    """
    sform_code = int(header["sform_code"])
    qform_code = int(header["qform_code"])
    if sform_code > 0:
        sform = header.get_sform()
        if is_orthonormal(sform):
            return sform, "sform"
        if qform_code > 0:
            logger.warning("%s: sheared sform ignored, using the qform instead", path)
            return header.get_qform(), "qform"
        raise GeometryError(
            "the sform is sheared or degenerate (its axes are not perpendicular, or of zero"
            " length) and there is no qform",
            path=path,
            hint="resample the image onto an orthogonal grid, or set a valid qform",
        )
    if qform_code > 0:
        return header.get_qform(), "qform"
    logger.warning("%s: no sform or qform set; world coordinates are not meaningful", path)
    return header.get_base_affine(), "none"


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Array (file order, scaling applied), affine and meta of a NIfTI file."""
    try:
        img = nib.load(str(path))
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise InputError("is not a single-file NIfTI image", path=path, hint=_LAYOUT_HINT)
        affine, source = _nifti_affine(img.header, path)
        data = np.asanyarray(img.dataobj)
        if data.dtype.names:  # RGB24 / RGBA32: one structured value per voxel
            data = structured_to_unstructured(data)  # -> a channel axis (R, G, B[, A])
    except MeccaError:
        raise
    except Exception as exc:  # nibabel, gzip and zlib raise many kinds
        raise InputError(
            f"cannot be read as NIfTI ({type(exc).__name__}: {exc})",
            path=path,
            hint="the file may be truncated or corrupt; export it again",
        ) from exc
    meta = {
        "format": "nifti",
        "header": img.header.copy(),
        "affine_source": source,
        "stored_dtype": str(img.get_data_dtype()),
    }
    return np.asarray(data), affine, meta


# ----------------------------------------------------------------------------- ITK


def _itk_to_arrays(image: sitk.Image, path: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """(I, J, K[, C]) array and RAS+ affine of a SimpleITK image."""
    dim = image.GetDimension()
    if dim < 3:
        raise InputError(
            f"is a {dim}D image; MECCA segments 3D volumes", path=path, hint="pass a 3D volume"
        )
    if dim > 4:
        raise InputError(f"is a {dim}D image; MECCA reads 3D and 4D images", path=path)
    arr = sitk.GetArrayFromImage(image)  # (z, y, x) or (t, z, y, x), then components
    arr = arr.transpose(tuple(range(dim - 1, -1, -1)) + tuple(range(dim, arr.ndim)))
    direction = np.asarray(image.GetDirection()).reshape(dim, dim)[:3, :3]
    affine = affine_from_itk(image.GetSpacing()[:3], image.GetOrigin()[:3], direction.ravel())
    return arr, affine


def itk_reader(path: Path) -> sitk.ImageFileReader:
    """A SimpleITK reader of ``path`` bound to the ImageIO its ending names, so the file's
    content can never pick another reader (a MetaImage header in a ``.gipl``, say)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO(ITK_IMAGE_IO[_format_of(path)])
    return reader


def _read_itk(path: Path, fmt: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Array (I, J, K[, C]), affine and meta of a file SimpleITK reads."""
    try:
        image = itk_reader(path).Execute()
    except Exception as exc:  # SimpleITK raises RuntimeError with ITK's message
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"cannot be read as {fmt.upper()} ({first})",
            path=path,
            hint="the file may be truncated or corrupt (or its data file missing); export it again",
        ) from exc
    arr, affine = _itk_to_arrays(image, path)
    meta = {"format": fmt, "stored_dtype": str(arr.dtype)}
    return arr, affine, meta


# ----------------------------------------------------------------------------- DICOM


def _dicom_floats(reader: sitk.ImageFileReader, tag: str, name: str, file: str) -> np.ndarray:
    """Backslash-separated decimal values of a DICOM tag of one slice."""
    if not reader.HasMetaDataKey(tag):
        raise InputError(f"a slice has no {name} ({tag})", path=file, hint="not a volume series")
    return np.array([float(v) for v in reader.GetMetaData(tag).split("\\")], dtype=np.float64)


def _slice_layout(reader: sitk.ImageFileReader) -> tuple[tuple[int, ...], int, str]:
    """(size, components, pixel type) of the slice file a reader has read the header of."""
    size = tuple(int(n) for n in reader.GetSize())
    size = size + (1,) * (3 - len(size))
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    return size, int(reader.GetNumberOfComponents()), pixel


def _check_layout(
    layout: tuple[tuple[int, ...], int, str],
    first: tuple[tuple[int, ...], int, str],
    file: str,
    first_file: str,
) -> None:
    """Refuse a slice file unlike the series' first one, or holding several frames (in a
    series of several files).

    Why: the series reader sizes the whole volume from the first file's header alone, and
    the upload's voxel limit counts that header times the file count, so one damaged or
    foreign file would decide how much is allocated. Checked before any pixel data is read.
    """
    size = layout[0]
    if len(size) > 3 or size[2] != 1:
        raise InputError(
            f"a file of the series holds {math.prod(size[2:])} frames, not one slice",
            path=file,
            hint="a series must be single-frame slices; pass a multi-frame file on its own",
        )
    if layout != first:

        def shown(lay: tuple[tuple[int, ...], int, str]) -> str:
            return f"{lay[0][0]} x {lay[0][1]} voxels of {lay[2]} ({lay[1]} component(s))"

        raise InputError(
            f"slices of the series differ: {shown(layout)} here, {shown(first)} in the"
            f" first one ({Path(first_file).name})",
            path=file,
            hint="the file may be damaged or from another series; remove it or re-export",
        )


def _slice_geometry(files: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Positions (N, 3) and orientations (N, 6) of the slices of a DICOM series, after
    checking that every slice file has the first one's size and pixel type."""
    reader = sitk.ImageFileReader()
    positions, orientations = [], []
    first = None
    for file in files:
        reader.SetFileName(file)
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            raise InputError("cannot be read as DICOM", path=file, hint="re-export it") from exc
        layout = _slice_layout(reader)
        first = layout if first is None else first
        if len(files) > 1:  # one multi-frame file is a volume of its own
            _check_layout(layout, first, file, files[0])
        positions.append(_dicom_floats(reader, "0020|0032", "Image Position (Patient)", file))
        orientations.append(_dicom_floats(reader, "0020|0037", "Image Orientation (Patient)", file))
    return np.array(positions), np.array(orientations)


def _check_slice_steps(steps: np.ndarray, along: np.ndarray, folder: Path) -> None:
    """Refuse duplicated, missing or unevenly spaced slices (steps along the normal, mm)."""
    step = float(np.median(steps))
    if step < 1e-3:
        raise InputError(
            "several slices of the series lie at the same position",
            path=folder,
            hint="the series may hold several acquisitions or time points; split it",
        )
    off = np.abs(steps - step) > max(0.01 * step, 1e-3)
    if not np.any(off):
        return
    n = int(np.argmax(off))
    missing = int(round(steps[n] / step)) - 1
    what = f"about {missing} slice(s) missing" if missing >= 1 else "slices unevenly spaced"
    raise InputError(
        f"{what}: slice spacing is {step:.4g} mm but the slices at {along[n]:.4g} mm and"
        f" {along[n + 1]:.4g} mm along the slice normal are {steps[n]:.4g} mm apart",
        path=folder,
        hint="export the complete series with evenly spaced slices",
    )


def _check_slices(files: Sequence[str], folder: Path) -> None:
    """Refuse a series whose slices are not one evenly spaced stack along its normal."""
    positions, orientations = _slice_geometry(files)
    if np.max(np.abs(orientations - orientations[0])) > 1e-4:
        raise InputError(
            "slices of the series have different orientations",
            path=folder,
            hint="the series may hold localiser slices; remove them",
        )
    normal = np.cross(orientations[0, :3], orientations[0, 3:])
    along = np.sort(positions @ normal)
    if len(files) < 2:
        return
    lateral = positions - np.outer(positions @ normal, normal)
    if np.max(np.linalg.norm(lateral - lateral[0], axis=1)) > 1e-2:
        raise GeometryError(
            "slices are shifted sideways (gantry tilt): the grid is sheared",
            path=folder,
            hint="resample the series onto an orthogonal grid first",
        )
    _check_slice_steps(np.diff(along), along, folder)


def is_dicom_file(path: str | Path) -> bool:
    """Whether ``path`` starts as a DICOM Part 10 file (``DICM`` after the 128-byte
    preamble): 132 bytes read, whatever the file is (the server's file list and the napari
    reader use it to tell a series folder without reading the series)."""
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def dicom_series_ids(folder: str | Path) -> list[str]:
    """Series instance UIDs of the DICOM series found in a folder (not recursive)."""
    return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def _series_files(folder: Path, series_uid: str | None) -> tuple[str, list[str]]:
    """Chosen series UID and its slice files, sorted by GDCM along the slice normal."""
    uids = dicom_series_ids(folder)
    if not uids:
        raise InputError("holds no DICOM series", path=folder, hint=_LAYOUT_HINT)
    listing = ", ".join(uids)
    if series_uid is None and len(uids) > 1:
        raise InputError(
            f"holds {len(uids)} DICOM series: {listing}",
            path=folder,
            hint="pass series_uid= one of them",
        )
    uid = uids[0] if series_uid is None else series_uid
    if uid not in uids:
        raise InputError(
            f"holds no DICOM series {uid!r}; it holds: {listing}",
            path=folder,
            hint="pass series_uid= one of them",
        )
    return uid, list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))


def load_dicom_series(
    folder: str | Path,
    series_uid: str | None = None,
    *,
    channel: int | None = None,
    dtype: DTypeLike | None = np.float32,
) -> Volume:
    """Read one DICOM series from a folder into a Volume.

    Slices are checked first, from their headers: one size and pixel type, one frame
    each, one orientation, no sideways shift, evenly spaced along the slice normal (a
    missing slice shows as a double gap and is refused).

    Args:
        folder: folder holding the slice files (subfolders are not searched).
        series_uid: Series Instance UID to read; needed when the folder holds several.
        channel: which component to read of a multi-component (e.g. RGB) series.
        dtype: array dtype (None keeps SimpleITK's, with rescale slope/intercept applied).

    Returns:
        Volume with array (I, J, K), RAS+ affine; meta has format 'dicom', series_uid and,
        when present, modality.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError("folder not found", path=folder, hint="check the path")
    uid, files = _series_files(folder, series_uid)
    _check_slices(files, folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"series {uid} cannot be read", path=folder, hint="re-export it") from exc
    arr, affine = _itk_to_arrays(image, folder)
    arr = _select_channel(arr, channel, folder)
    meta: dict[str, Any] = {"format": "dicom", "series_uid": uid, "stored_dtype": str(arr.dtype)}
    first = sitk.ImageFileReader()
    first.SetFileName(files[0])
    first.ReadImageInformation()
    if first.HasMetaDataKey("0008|0060"):
        meta["modality"] = first.GetMetaData("0008|0060").strip()
    return _finish(arr, affine, folder, meta, dtype)


# ----------------------------------------------------------------------------- loading


def _finish(
    arr: np.ndarray, affine: np.ndarray, path: Path, meta: dict[str, Any], dtype: DTypeLike | None
) -> Volume:
    """Checks shared by every reader, then the Volume with the requested dtype."""
    affine = _check_affine(affine, path)
    _check_finite(arr, path)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    logger.debug("read %s: shape %s, spacing %s mm", path, arr.shape, spacing)
    return Volume(np.asarray(arr), affine, path=path, meta=meta)


def _read_any(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Array (file order, maybe with channels), affine and meta of an image file."""
    if not path.exists():
        raise InputError("file not found", path=path, hint="check the path")
    fmt = _format_of(path)
    if fmt == "nifti":
        return _read_nifti(path)
    return _read_itk(path, fmt)


def load(
    path: str | Path, *, channel: int | None = None, dtype: DTypeLike | None = np.float32
) -> Volume:
    """Read a 3D image (NIfTI, NRRD, MetaImage, GIPL file, or a DICOM series folder).

    Args:
        path: image file, or a folder holding one DICOM series.
        channel: which channel of a 4D image to read (required for 4D images).
        dtype: array dtype; None keeps the stored one (NIfTI scaling applied).

    Returns:
        Volume with array (I, J, K) and RAS+ affine; ``meta["format"]`` names the format.

    Raises:
        InputError: missing, unreadable or unknown file, 2D image, 4D image without a valid
            channel, NaN/Inf intensities. GeometryError: sheared or degenerate grid.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        return load_dicom_series(path, channel=channel, dtype=dtype)
    arr, affine, meta = _read_any(path)
    arr = _select_channel(arr, channel, path)
    if channel is not None:
        meta["channel"] = int(channel)
    return _finish(arr, affine, path, meta, dtype)


def load_label(path: str | Path, like: Volume) -> Volume:
    """Read an integer label map that must lie on ``like``'s voxel grid.

    Args:
        path: label file (any format :func:`load` reads, or a DICOM series folder).
        like: the image the labels belong to.

    Returns:
        Volume with an integer array (I, J, K) (uint8, uint16 or int32, the smallest that
        holds the values) on like's grid.

    Raises:
        GeometryError: shape differs, or grid corners differ by more than GRID_TOL_MM.
        InputError: unreadable file, or values that are not whole numbers.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        vol = load_dicom_series(path, dtype=None)
        arr, affine, meta = vol.array, vol.affine, dict(vol.meta)
    else:
        arr, affine, meta = _read_any(path)
        arr = _select_channel(arr, None, path)
        affine = _check_affine(affine, path)
    labels = _as_labels(arr, path)
    _check_same_grid(labels.shape, affine, like, path)
    return Volume(labels, affine, path=path, meta=meta)


LABEL_MAP_MAX_VALUES = 64
"""An image with at most this many distinct whole-number values looks like a label map to
:func:`label_map_values` (a CT or MR scan has hundreds or thousands)."""


def label_map_values(volume: Volume, *, max_values: int = LABEL_MAP_MAX_VALUES) -> list[int] | None:
    """The distinct values of ``volume`` when it looks like a label map (whole numbers, at
    most ``max_values`` of them), else None: for a warning when a segmentation is opened
    where an image is expected. Judged on an evenly strided sample of about 1 M voxels."""
    arr = volume.array
    step = max(1, math.ceil((arr.size / 1_000_000) ** (1 / 3)))
    sample = np.asarray(arr[::step, ::step, ::step])
    if np.issubdtype(sample.dtype, np.floating) and not np.array_equal(sample, np.round(sample)):
        return None
    values = np.unique(sample)
    if values.size > max_values:
        return None
    return [int(v) for v in values]


def _check_same_grid(shape: Sequence[int], affine: np.ndarray, like: Volume, path: Path) -> None:
    """GeometryError when (shape, affine) is not like's grid."""
    if tuple(shape) != like.shape:
        raise GeometryError(
            f"label shape {tuple(shape)} differs from the image shape {like.shape}",
            path=path,
            hint="labels must be on the image's voxel grid; resample them onto it",
        )
    mismatch = grid_mismatch_mm(shape, affine, like.shape, like.affine)
    if mismatch > GRID_TOL_MM:
        raise GeometryError(
            f"label grid is {mismatch:.3g} mm away from the image grid (same shape, different"
            " affine)",
            path=path,
            hint="labels must be on the image's voxel grid; resample them onto it",
        )


# ----------------------------------------------------------------------------- writing


def _mask_array(mask: np.ndarray, like: Volume, path: Path) -> np.ndarray:
    """uint8 (uint16 when labels exceed 255) copy of a label mask on like's grid."""
    arr = np.asarray(mask)
    if arr.shape != like.shape:
        raise GeometryError(
            f"mask shape {arr.shape} differs from the image shape {like.shape}",
            path=path,
            hint="a mask is written on its image's grid; paste it back onto that grid first",
        )
    labels = _as_labels(arr, path)
    lo, hi = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
    if lo < 0 or hi > np.iinfo(np.uint16).max:
        raise InputError(
            f"mask values {lo}..{hi} are outside 0..65535", path=path, hint="relabel the mask"
        )
    return labels.astype(np.uint8 if hi <= 255 else np.uint16)


def _volume_array(volume: Volume, path: Path) -> np.ndarray:
    """Array to store for an image: floats as float32, bool as uint8, small ints kept."""
    arr = np.asarray(volume.array)
    if arr.ndim != 3:
        raise InputError(f"only 3D arrays can be saved, got shape {arr.shape}", path=path)
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer) and arr.dtype.itemsize <= 2:
        return arr
    return arr.astype(np.float32)


def _usable_header(like: Volume) -> Any | None:
    """like's NIfTI header when it still describes like's grid, else None."""
    header = like.meta.get("header") if like.meta.get("format") == "nifti" else None
    if header is None or not isinstance(header, nib.Nifti1Header):
        return None
    try:
        affine, _ = _nifti_affine(header, like.path or Path("<header>"))
    except MeccaError:
        return None
    shape = tuple(int(s) for s in header.get_data_shape()[:3])
    if grid_mismatch_mm(shape, affine, like.shape, like.affine) > 1e-6:
        return None
    return header


def _nifti_image(array: np.ndarray, like: Volume) -> nib.Nifti1Image:
    """NIfTI image of ``array`` on like's grid, copying like's qform/sform when it has them."""
    header = _usable_header(like)
    if header is not None:
        hdr = header.copy()
        hdr.set_data_shape(array.shape)
        img = nib.Nifti1Image(array, None, header=hdr)  # affine None keeps qform/sform as is
    else:
        img = nib.Nifti1Image(array, like.affine)
        img.set_sform(like.affine, code=1)
        img.set_qform(like.affine, code=1)
    img.set_data_dtype(array.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    img.header["cal_min"] = 0.0
    img.header["cal_max"] = 0.0
    return img


def _write_nifti(array: np.ndarray, like: Volume, tmp: Path) -> None:
    """Write ``array`` as NIfTI to ``tmp`` on like's grid."""
    nib.save(_nifti_image(array, like), str(tmp))


def _write_itk(array: np.ndarray, affine: np.ndarray, tmp: Path, final: Path) -> None:
    """Write ``array`` (I, J, K) with SimpleITK, then check the file kept the geometry."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    spacing, origin, direction = itk_geometry(affine)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    sitk.WriteImage(image, str(tmp), True)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(tmp))
    reader.ReadImageInformation()
    stored = affine_from_itk(reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())
    if grid_mismatch_mm(array.shape, stored, array.shape, affine) > GRID_TOL_MM:
        raise GeometryError(
            f"the {file_extension(final)} format cannot store this grid's orientation",
            path=final,
            hint="save as .nii.gz, .nrrd or .mha instead",
        )


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _prepare_target(path: str | Path, force: bool) -> Path:
    """Checked output path: writable ending, not a folder, no overwrite without force."""
    path = Path(path).expanduser()
    ext = file_extension(path)
    if ext not in WRITABLE:
        raise InputError(
            f"cannot write files ending in {ext or '(none)'!r}",
            path=path,
            hint=f"use one of {', '.join(WRITABLE)}",
        )
    if path.is_dir():
        raise OverwriteError("is a folder", path=path, hint="give a file name")
    if path.exists() and not force:
        raise OverwriteError("already exists", path=path, hint="pass force=True to replace it")
    return path


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Run ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``.

    The temporary name keeps path's ending so libraries pick the right format. On any
    failure (or interruption) the temporary file is removed and ``path`` is untouched.
    The file is flushed to disk before the rename and the folder after it, so after a
    power cut or kill ``path`` holds either the old or the new content, whole.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=file_extension(path)
    )
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)
    return path


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save(array: np.ndarray, like: Volume, path: Path) -> Path:
    """Write ``array`` on like's grid to the format path's ending names."""
    _check_affine(like.affine, like.path)
    if FORMATS[file_extension(path)] == "nifti":
        atomic_write(path, lambda tmp: _write_nifti(array, like, tmp))
    else:
        atomic_write(path, lambda tmp: _write_itk(array, like.affine, tmp, path))
    logger.info("wrote %s (shape %s, %s)", path, array.shape, array.dtype)
    return path


def save_mask(mask: np.ndarray, like: Volume, path: str | Path, *, force: bool = False) -> Path:
    """Write a label mask on exactly ``like``'s voxel grid.

    NIfTI output copies like's NIfTI qform and sform with their codes when like was read
    from NIfTI, else stores like's affine with codes 1 (scanner); data is uint8 (uint16
    when labels exceed 255) with neutral scaling (slope 1, intercept 0). NRRD, MetaImage
    (.mha) and GIPL output store like's geometry in LPS through SimpleITK.

    Args:
        mask: (I, J, K) bool or non-negative integer labels, shape equal to like.shape.
        like: the image the mask belongs to.
        path: output file; its ending (see WRITABLE) picks the format.
        force: replace an existing file.

    Returns:
        The path written.

    Raises:
        GeometryError: shape mismatch, or a format that cannot store like's orientation.
        OverwriteError: path exists and force is False. InputError: bad ending or values.
    """
    target = _prepare_target(path, force)
    return _save(_mask_array(mask, like, target), like, target)


def save_volume(volume: Volume, path: str | Path, *, force: bool = False) -> Path:
    """Write an image (floats stored as float32) on its own grid; see :func:`save_mask`.

    Returns:
        The path written.
    """
    target = _prepare_target(path, force)
    return _save(_volume_array(volume, target), volume, target)
