"""napari reader: opens an image file with :func:`mecca.io.load` (NIfTI, NRRD, MetaImage,
GIPL) as the (I, J, K) array MECCA works on. napari is not offered DICOM series folders
(a folder may be anything, a zarr store say, and a second reader of every folder would
make napari ask which one to use); :func:`read` opens one from Python (docs/napari.md).

The layer gets the voxel size as its ``scale`` and no rotation: napari shows the voxel
axes (i, j, k) as they are, so a point placed on it is at its voxel index, as the widget
needs (:mod:`mecca.napari_plugin.geometry`). The layer's ``metadata`` keeps what the
widget's export needs: ``affine`` (the image's voxel -> RAS affine, as a list), ``source``
(the file or DICOM series folder, absolute), ``format`` (``mecca.io``'s ``meta["format"]``:
``nifti``, ``dicom``, ...) and, for a DICOM series, ``series_uid``. No napari import here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mecca.io import FORMATS, file_extension, load

LayerData = tuple[Any, dict[str, Any], str]


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


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """``read`` when ``path`` is one image file MECCA reads (by its ending), else None so
    that napari asks another reader."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if Path(path).is_file() and file_extension(path) in FORMATS:
        return read
    return None
