"""napari reader: opens an image file with :func:`mecca.io.load` (NIfTI, NRRD, MetaImage,
GIPL) as the (I, J, K) array MECCA works on. (A DICOM series folder is not offered: a
folder may be anything, a zarr store say; load it in Python, docs/napari.md.)

The layer gets the voxel size as its ``scale`` and no rotation: napari shows the voxel
axes (i, j, k) as they are, so a point placed on it is at its voxel index, as the widget
needs (:mod:`mecca.napari_plugin.geometry`). The image's affine is kept in the layer's
``metadata["affine"]``. No napari import here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mecca.io import FORMATS, file_extension, load

LayerData = tuple[Any, dict[str, Any], str]


def read(path: str | list[str]) -> list[LayerData]:
    """The image at ``path`` as one napari image layer's data."""
    file = Path(path[0] if isinstance(path, list) else path)
    volume = load(file)
    name = file.name.removesuffix(file_extension(file))
    meta = {"name": name, "scale": volume.spacing, "metadata": {"affine": volume.affine.tolist()}}
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
