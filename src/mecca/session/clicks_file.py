"""``mecca segment``: a scripted interactive session, image + clicks file -> mask file.

The clicks file (JSON; ``docs/segment.md`` documents it, ``examples/clicks_phantom.json``
is an example)::

    {
      "format": "mecca.clicks", "version": 1,
      "space": "voxel",
      "steps": [
        [{"kind": "edge", "position": [31, 24, 12]}, ...],
        [{"kind": "edge", "position": [20, 30, 14]}]
      ]
    }

* ``space``: ``"voxel"`` -- (i, j, k) indices of the image array as the file stores it
  (what ITK-SNAP / 3D Slicer call IJK, 0-based); ``"ras"`` -- world millimetres in RAS+
  (NIfTI's convention; a Slicer RAS coordinate as shown), rounded to the nearest voxel.
* ``steps``: the clicks of each interaction step, in order. ``kind`` is ``foreground``,
  ``background`` or ``edge`` (MECCA's boundary points; ``fg``/``bg`` are accepted too).
  With ``--steps N`` larger than the file's steps, the later steps get no new clicks (a
  learned iterative method keeps refining its own output).
* The ROI: ``--roi i0,j0,k0,i1,j1,k1`` (voxels, start inclusive, stop exclusive), or by
  default ``--roi-from-clicks``: the first step's clicks' box plus 40 mm.

Outputs are on the input image's own grid and header: the mask (uint8, p > 0.5; a
``.dcm`` output is a DICOM SEG of one segment referencing the input DICOM series, see
:mod:`mecca.dicom_seg`), and optionally the probability (float32) and the advice regions
of the last step as JSON (per region: voxel count, voxel box, centre in voxels and in RAS mm).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mecca import methods
from mecca.data.roi import Box
from mecca.errors import InputError, OverwriteError
from mecca.interaction.clicks import InteractionKind
from mecca.interface import InteractiveMethod
from mecca.io import Volume, atomic_write, file_extension, load, save_mask, save_volume
from mecca.session.session import Session, SessionResult

CLICKS_FORMAT = "mecca.clicks"
CLICKS_VERSION = 1
KIND_ALIASES = {
    "foreground": InteractionKind.FOREGROUND,
    "fg": InteractionKind.FOREGROUND,
    "background": InteractionKind.BACKGROUND,
    "bg": InteractionKind.BACKGROUND,
    "edge": InteractionKind.EDGE,
}


@dataclass(frozen=True)
class ClickSpec:
    """One click as the file gives it: kind and position in the file's ``space``."""

    kind: InteractionKind
    position: tuple[float, float, float]


@dataclass(frozen=True)
class ClicksFile:
    """A parsed clicks file."""

    space: str
    steps: tuple[tuple[ClickSpec, ...], ...]


def _click(record: Any, where: str) -> ClickSpec:
    if not isinstance(record, dict) or "kind" not in record or "position" not in record:
        raise InputError(f"{where}: a click is {{'kind': ..., 'position': [x, y, z]}}")
    kind = KIND_ALIASES.get(str(record["kind"]).lower())
    if kind is None:
        raise InputError(
            f"{where}: unknown click kind {record['kind']!r}",
            hint="use foreground, background or edge",
        )
    pos = record["position"]
    if (
        not isinstance(pos, list)
        or len(pos) != 3
        or not all(isinstance(v, int | float) and np.isfinite(v) for v in pos)
    ):
        raise InputError(f"{where}: position must be three finite numbers, got {pos!r}")
    return ClickSpec(kind, (float(pos[0]), float(pos[1]), float(pos[2])))


def parse_clicks(data: Any) -> ClicksFile:
    """Check and parse the JSON content of a clicks file (see the module docstring)."""
    if not isinstance(data, dict) or data.get("format") != CLICKS_FORMAT:
        raise InputError(f'not a MECCA clicks file (expected "format": "{CLICKS_FORMAT}")')
    if data.get("version") != CLICKS_VERSION:
        raise InputError(
            f"clicks file version {data.get('version')!r} is not supported",
            hint=f"this MECCA reads version {CLICKS_VERSION}",
        )
    space = data.get("space", "voxel")
    if space not in ("voxel", "ras"):
        raise InputError(f"space must be 'voxel' or 'ras', got {space!r}")
    steps = data.get("steps")
    if not isinstance(steps, list) or not all(isinstance(s, list) for s in steps):
        raise InputError("steps must be a list of lists of clicks, one list per step")
    parsed = tuple(
        tuple(_click(c, f"step {t} click {n}") for n, c in enumerate(step, start=1))
        for t, step in enumerate(steps, start=1)
    )
    return ClicksFile(space, parsed)


def read_clicks(path: str | Path) -> ClicksFile:
    """Read and check a clicks file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"clicks file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from None
    return parse_clicks(data)


def parse_roi(text: str) -> Box:
    """``"i0,j0,k0,i1,j1,k1"`` -> :class:`Box` (voxels, stop exclusive)."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"--roi must be six integers i0,j0,k0,i1,j1,k1, got {text!r}") from None
    if len(values) != 6:
        raise InputError(f"--roi must be six integers i0,j0,k0,i1,j1,k1, got {text!r}")
    return Box(tuple(values[:3]), tuple(values[3:]))  # type: ignore[arg-type]


def advice_summary(result: SessionResult, volume: Volume) -> list[dict[str, Any]]:
    """Per advice region (1 = least confident): voxels, box, centre (voxel and RAS mm)."""
    if result.advice_box is None:
        return []
    regions = []
    offset = np.asarray(result.box.start)
    for label in range(1, int(result.advice_box.max()) + 1):
        idx = np.argwhere(result.advice_box == label)
        if idx.size == 0:
            continue
        idx = idx + offset
        centre = idx.mean(axis=0)
        regions.append(
            {
                "rank": label,
                "voxels": int(idx.shape[0]),
                "box": [idx.min(0).tolist(), (idx.max(0) + 1).tolist()],
                "centre_voxel": [round(float(c), 2) for c in centre],
                "centre_ras_mm": [round(float(c), 3) for c in volume.voxel_to_world(centre)],
            }
        )
    return regions


def _check_free(paths: list[Path | None], force: bool) -> None:
    for path in paths:
        if path is not None and path.exists() and not force:
            raise OverwriteError("output exists", path=path, hint="pass --force to replace it")


def segment(
    image: str | Path | Volume,
    clicks: ClicksFile,
    out: str | Path,
    *,
    roi: Box | None = None,
    method: str | InteractiveMethod = methods.registry.DEFAULT_METHOD,
    steps: int | None = None,
    prob_out: str | Path | None = None,
    advice_out: str | Path | None = None,
    force: bool = False,
    grow_roi: int | None = None,
    label_name: str = "segmentation",
    roi_as_box: bool = False,
) -> SessionResult:
    """Run the clicks through a :class:`~mecca.session.Session`; write the outputs.
    ``image``: a path, or a Volume already read (e.g. one channel of a 4D file).
    ``grow_roi``: how many times a step may grow the ROI (:class:`Session`; None: automatic).
    ``roi_as_box``: ``roi`` is a box drawn around the object (:class:`Session`).
    ``out`` ending in ``.dcm``: a DICOM SEG (one segment named ``label_name``) referencing
    the image, which must then be a DICOM series.

    Every output path is checked before any work, and every click before the first step,
    so a bad input fails fast and writes nothing.
    """
    out_path = Path(out)
    prob_path = None if prob_out is None else Path(prob_out)
    advice_path = None if advice_out is None else Path(advice_out)
    _check_free([out_path, prob_path, advice_path], force)
    if roi is None and (not clicks.steps or not clicks.steps[0]):
        raise InputError("no ROI and no clicks in step 1", hint="pass --roi or add clicks")
    n_steps = len(clicks.steps) if steps is None else int(steps)
    if n_steps < 1:
        raise InputError(f"--steps must be >= 1, got {n_steps}")
    volume = image if isinstance(image, Volume) else load(image)
    as_seg = file_extension(out_path) == ".dcm"
    if as_seg:
        check_dicom_source(volume)
    session = Session(volume, roi, method=method, rng=0, grow_roi=grow_roi, roi_as_box=roi_as_box)
    per_step = [_grid_clicks(session, step, clicks.space) for step in clicks.steps]
    result: SessionResult | None = None
    for t in range(n_steps):
        if t < len(per_step):
            session.add_clicks(per_step[t])
        result = session.step()
    assert result is not None
    if as_seg:
        from mecca.dicom_seg import write_dicom_seg  # highdicom: only when asked for

        write_dicom_seg(result.mask, volume, out_path, labels={1: label_name}, force=force)
    else:
        save_mask(result.mask, volume, out_path, force=force)
    if prob_path is not None:
        save_volume(replace(volume, array=result.prob), prob_path, force=force)
    if advice_path is not None:
        text = json.dumps({"step": result.step, "regions": advice_summary(result, volume)})
        atomic_write(advice_path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
    return result


def check_dicom_source(volume: Volume) -> None:
    """Refuse a DICOM SEG output (``--out *.dcm``) for an image not read from a DICOM
    series: the SEG references the source series' slices, which only a series has."""
    fmt = volume.meta.get("format", "an array")
    if fmt != "dicom" or volume.path is None:
        raise InputError(
            f"--out ends in .dcm (a DICOM SEG), but the image ({fmt}) is not a DICOM series",
            hint="a DICOM SEG references the series the mask was made on: give that series' "
            "folder as the image, or write the mask as .nii.gz (mecca convert makes a SEG "
            "from it later with --reference SERIES)",
        )


def _grid_clicks(
    session: Session, step: tuple[ClickSpec, ...], space: str
) -> list[tuple[InteractionKind, tuple[int, int, int]]]:
    """The step's clicks as voxel indices, checked against the volume (not queued)."""
    shape = session.volume.shape
    out = []
    for spec in step:
        pos = np.asarray(spec.position, np.float64)
        if space == "ras":
            pos = session.volume.world_to_voxel(pos)
        ijk = np.floor(pos + 0.5).astype(np.int64)
        if np.any(ijk < 0) or np.any(ijk >= np.asarray(shape)):
            raise InputError(
                f"click at {list(spec.position)} ({space}) is outside the image of shape {shape}"
            )
        out.append((spec.kind, (int(ijk[0]), int(ijk[1]), int(ijk[2]))))
    return out
