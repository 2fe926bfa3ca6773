"""DICOM SEG export of server sessions whose image is a DICOM series under an image root.

A session opened from a root (``POST /api/sessions``) on a DICOM series folder records
where the series is (:func:`series_source`: root number, path relative to the root, Series
Instance UID) in its saved state. An export re-opens that folder through the same checks
as opening it (inside the root, no symbolic link, only regular files in the folder, the
voxel limit), reads the slices' headers only, and writes the SEG on the session's own grid:
:func:`mecca.dicom_seg.write_dicom_seg` refuses a series whose slices no longer lie on that
grid, and one whose UID is gone. Uploads (a DICOM folder as ``.zip``) record no source:
their folder is deleted once the session is made, so they cannot be exported as SEG.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mecca.errors import GeometryError, InputError
from mecca.io import Volume

NOT_FROM_SERIES = (
    "this session's image is not a DICOM series opened from an image root, so there is no "
    "series for a DICOM SEG to reference"
)
NOT_FROM_SERIES_HINT = (
    "download the mask as NIfTI (mask.nii.gz) instead; for a DICOM SEG, open the series' "
    "folder from an image root (uploaded DICOM .zip files are not kept)"
)


def series_source(root: int, base: Path, path: Path, volume: Volume) -> dict[str, Any] | None:
    """What a session keeps of its image's origin: ``{"root", "path", "series_uid"}`` for a
    DICOM series folder ``path`` under root ``root`` (folder ``base``); None otherwise."""
    if not path.is_dir() or volume.meta.get("format") != "dicom":
        return None
    uid = volume.meta.get("series_uid")
    return {"root": root, "path": path.relative_to(base).as_posix(), "series_uid": uid}


def checked_source(value: Any) -> dict[str, Any] | None:
    """A source read back from a saved state, or None when it is absent or malformed."""
    if not isinstance(value, dict):
        return None
    root, path, uid = value.get("root"), value.get("path"), value.get("series_uid")
    if not isinstance(root, int) or not isinstance(path, str) or not path:
        return None
    if uid is not None and not isinstance(uid, str):
        return None
    return {"root": root, "path": path, "series_uid": uid}


def require_source(source: dict[str, Any] | None) -> dict[str, Any]:
    """``source``, or the 400 answer for a session that has none."""
    if source is None:
        raise InputError(NOT_FROM_SERIES, hint=NOT_FROM_SERIES_HINT)
    return source


def label_name(name: str) -> str:
    """A segment label as given in a request: 1 to 64 printable characters, no backslash
    (the DICOM value separator)."""
    if not 0 < len(name) <= 64 or not name.isprintable() or "\\" in name:
        raise InputError("a segment label must be 1 to 64 printable characters without a backslash")
    return name


def write_session_seg(
    labels: np.ndarray,
    volume: Volume,
    series: Path,
    source: dict[str, Any],
    target: Path,
    names: Mapping[int, str],
) -> Path:
    """Write ``labels`` (on ``volume``'s grid, the session's image) as a DICOM SEG
    referencing the series folder ``series`` (already re-checked), replacing ``target``."""
    from mecca.dicom_seg import write_dicom_seg  # highdicom: only when asked for

    meta = {"format": "dicom", "series_uid": source.get("series_uid")}
    grid = Volume(volume.array, volume.affine, path=series, meta=meta)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        return write_dicom_seg(labels, grid, target, labels=names, volume=grid, force=True)
    except GeometryError:
        raise InputError(
            "the DICOM series under the image root no longer lies on this session's grid",
            hint="it was changed since the session was opened: open it again",
        ) from None
