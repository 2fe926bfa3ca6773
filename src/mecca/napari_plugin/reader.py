"""napari reader: opens an image file with :func:`mecca.io.load` (NIfTI, NRRD, MetaImage,
GIPL) or a folder holding a DICOM series, as the (I, J, K) array MECCA works on.

Folders: npe2 matches no filename pattern against a folder; it offers every reader with
``accepts_directories`` for every folder, and napari then asks which one to use. So
:func:`get_reader` decides: it takes a folder only when one of its first files (by name,
not in subfolders, as ``mecca.io.load`` reads a series) is a DICOM Part 10 file, the
128-byte preamble then ``DICM`` (:func:`holds_dicom`, a few bytes of a few files, not the
series); for any other folder (a zarr store, PNGs, an empty one) it returns None and napari
uses another reader. A folder it takes may still fail to load (several series in it, say):
``mecca.io.load`` then says why. The test is :func:`mecca.io.is_dicom_file`, as in the
server's file list.

The layer gets the voxel size as its ``scale`` and no rotation: napari shows the voxel
axes (i, j, k) as they are, so a point placed on it is at its voxel index, as the widget
needs (:mod:`mecca.napari_plugin.geometry`). The layer's ``metadata`` keeps what the
widget's export needs: ``affine`` (the image's voxel -> RAS affine, as a list), ``source``
(the file or DICOM series folder, absolute), ``format`` (``mecca.io``'s ``meta["format"]``:
``nifti``, ``dicom``, ...) and, for a DICOM series, ``series_uid``. No napari import here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mecca.io import FORMATS, file_extension, is_dicom_file, load

LayerData = tuple[Any, dict[str, Any], str]
DICOM_PROBES = 8
"""How many files of a folder :func:`holds_dicom` looks at (the first, by name)."""


def read(path: str | list[str]) -> list[LayerData]:
    """The image at ``path`` (an image file, or a folder holding one DICOM series) as one
    napari image layer's data: ``viewer.add_image(data, **kwargs)`` opens it."""
    file = Path(path[0] if isinstance(path, list) else path).expanduser()
    volume = load(file)
    name = file.name if file.is_dir() else file.name.removesuffix(file_extension(file))
    metadata: dict[str, Any] = {
        "affine": volume.affine.tolist(),
        "source": str(file.absolute()),
        "format": volume.meta.get("format"),
    }
    if "series_uid" in volume.meta:
        metadata["series_uid"] = str(volume.meta["series_uid"])
    meta = {"name": name, "scale": volume.spacing, "metadata": metadata}
    return [(volume.array, meta, "image")]


def holds_dicom(folder: str | Path) -> bool:
    """Whether one of the first :data:`DICOM_PROBES` files of ``folder`` (by name; hidden
    files, ``DICOMDIR`` and subfolders left out) is a DICOM Part 10 file: a cheap sign of
    a series ``mecca.io.load`` reads, without reading it."""
    try:
        with os.scandir(folder) as entries:
            files = sorted(
                e.path
                for e in entries
                if e.is_file() and not e.name.startswith(".") and e.name != "DICOMDIR"
            )
    except OSError:
        return False
    return any(is_dicom_file(f) for f in files[:DICOM_PROBES])


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """``read`` when ``path`` is one image file MECCA reads (by its ending) or a folder
    holding DICOM files (:func:`holds_dicom`), else None so that napari asks another
    reader."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path).expanduser()
    if p.is_file() and file_extension(p) in FORMATS:
        return read
    if p.is_dir() and holds_dicom(p):
        return read
    return None
