"""Taking images from the outside safely: size limits before reading, safe unpacking.

* The voxel count comes from the header (nibabel reads a NIfTI header without the data;
  SimpleITK's ``ReadImageInformation`` does the same for NRRD/MHA/GIPL; a DICOM series
  counts its files times one slice), so an oversized image is refused before its data is
  decompressed (a gzip bomb never inflates).
* ZIP archives (DICOM folders) are checked entry by entry: total unpacked size, entry
  count, and names (no absolute paths, no ``..``, no links) before anything is written.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path, PurePosixPath

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from mecca.errors import InputError
from mecca.io import file_extension

IMAGE_ENDINGS = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".gipl", ".gipl.gz")
MAX_ZIP_ENTRIES = 20000


def safe_filename(name: str) -> str:
    """A client's file name reduced to a plain basename with a known image ending."""
    base = PurePosixPath(name.replace("\\", "/")).name
    ending = file_extension(base)
    if ending not in (*IMAGE_ENDINGS, ".zip"):
        raise InputError(
            f"unsupported upload type {ending or '(none)'!r}",
            hint="upload a NIfTI, NRRD, MHA or GIPL file, or a DICOM folder as .zip",
        )
    return f"upload{ending}"


def image_voxels(path: Path) -> int:
    """Voxels of the image at ``path`` (file or DICOM folder), from headers only."""
    if path.is_dir():
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path))
        if not files:
            raise InputError("no DICOM series in the upload", hint="zip the series folder")
        reader = sitk.ImageFileReader()
        reader.SetFileName(files[0])
        reader.ReadImageInformation()
        size = reader.GetSize()
        return int(np.prod(size[:2])) * len(files) * reader.GetNumberOfComponents()
    if file_extension(path) in (".nii", ".nii.gz"):
        try:
            shape = nib.load(str(path)).header.get_data_shape()  # type: ignore[attr-defined]
        except Exception as exc:  # nibabel raises many kinds on a bad header
            raise InputError(f"not a readable NIfTI file ({type(exc).__name__})") from None
        return math.prod(int(n) for n in shape)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise InputError("not a readable image file", hint="check the file") from None
    return int(np.prod(reader.GetSize())) * reader.GetNumberOfComponents()


def check_voxels(path: Path, max_voxels: int) -> int:
    """Refuse an image larger than ``max_voxels``; returns its voxel count."""
    voxels = image_voxels(path)
    if voxels > max_voxels:
        raise InputError(
            f"the image has {voxels} voxels, more than this server accepts ({max_voxels})",
            hint="crop or downsample it, or start the server with a larger --max-voxels",
        )
    return voxels


def unpack_zip(archive: Path, dest: Path, *, max_bytes: int) -> Path:
    """Unpack a ZIP of DICOM files into ``dest`` after checking every entry; returns the
    folder holding the most files (the series)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            entries = [e for e in zf.infolist() if not e.is_dir()]
            if len(entries) > MAX_ZIP_ENTRIES:
                raise InputError(f"the archive holds more than {MAX_ZIP_ENTRIES} files")
            total = sum(e.file_size for e in entries)
            if total > max_bytes:
                raise InputError(
                    f"the archive unpacks to {total} bytes, more than allowed ({max_bytes})"
                )
            for entry in entries:
                name = PurePosixPath(entry.filename.replace("\\", "/"))
                mode = entry.external_attr >> 16
                if name.is_absolute() or ".." in name.parts or (mode & 0o170000) == 0o120000:
                    raise InputError("the archive holds an unsafe entry (absolute, .. or link)")
            dest.mkdir(parents=True, exist_ok=True)
            for n, entry in enumerate(entries):
                # flat, server-chosen names: the client's names are never used as paths
                sub = dest / f"{n:06d}.dcm"
                with zf.open(entry) as src, sub.open("wb") as out:
                    remaining = entry.file_size + 1
                    while chunk := src.read(1 << 20):
                        remaining -= len(chunk)
                        if remaining < 0:  # a lying header: stop at the declared size
                            raise InputError("the archive's sizes are inconsistent")
                        out.write(chunk)
    except zipfile.BadZipFile:
        raise InputError("not a valid ZIP archive") from None
    return dest
