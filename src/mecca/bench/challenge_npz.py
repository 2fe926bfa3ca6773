"""The CVPR 2025 challenge's container contract as commands (docs/cvpr25.md).

``mecca predict-npz INPUT_DIR OUTPUT_DIR`` (:func:`predict_dir`) does what a team's
``predict.sh`` does in the organisers' ``CVPR25_iter_eval.py``: for every ``*.npz`` case
in INPUT_DIR (keys ``imgs`` (z, y, x), ``spacing``, optional ``boxes``: one dict per class,
``clicks``: one ``{"fg": [...], "bg": [...]}`` per class with [z, y, x] positions,
``clicks_order``, ``prev_pred``) it writes ``OUTPUT_DIR/<same name>.npz`` with ``segs``:
a uint8 (z, y, x) label map, class ``i + 1`` for the i-th box / click list (their ``cls``
values, the sorted labels of a sequentially labelled ``gts``).

The call is stateless, as the container is rerun for every step: each class starts anew
on the ROI of :func:`mecca.bench.cvpr25.roi_for` (the box grown to hold every click so
far; the whole volume without a box) with the box (two BOX clicks for methods that take
them; a method is told the box is drawn on one slice where it can be,
:func:`mecca.bench.cvpr25.drawn_on_one_slice`), then gets all its clicks in one step, in
``clicks_order``. ``prev_pred`` is not
used. Where classes overlap, the later class wins.

``mecca export-npz DATA_DIR OUT_DIR --split test`` (:func:`export_split`) writes an
MSD-layout split as challenge cases: ``OUT_DIR/imgs/<case>.npz`` (``imgs`` uint8 (z, y, x)
scaled to 0-255, ``spacing`` (z, y, x), ``boxes``) and ``OUT_DIR/gts/<case>.npz``
(``gts``: the labels renumbered 1..n in order of value, or the target as label 1), the
folders their script takes as ``-i`` and ``-val_gts``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from mecca.bench import cvpr25
from mecca.data.datasets import open_dataset
from mecca.data.roi import paste_mask
from mecca.errors import InputError
from mecca.interaction.clicks import Click
from mecca.interface import InteractiveMethod
from mecca.io import atomic_write, load_label

PERCENTILES = (0.5, 99.5)
"""Intensity window of :func:`to_uint8`: these percentiles of the non-zero voxels."""


def _load(path: Path) -> dict[str, Any]:
    try:
        with np.load(path, allow_pickle=True) as f:  # boxes / clicks are object arrays
            return dict(f)
    except (OSError, ValueError) as err:
        raise InputError(f"not a readable .npz case: {err}", path=path) from err


def _class_count(case: dict[str, Any]) -> int:
    return max(len(case.get("boxes", ())), len(case.get("clicks", ())))


def _ordered_clicks(clicks: dict[str, Any], order: Sequence[Any]) -> list[Click]:
    """A class's clicks in the order given (``"fg"`` / ``"bg"`` / None per step), on
    MECCA's (x, y, z) grid."""
    pending = {k: list(clicks.get(k, [])) for k in ("fg", "bg")}
    kinds = [k for k in order if k in pending] or ["fg"] * len(pending["fg"]) + ["bg"] * len(
        pending["bg"]
    )
    out = []
    for k in kinds:
        if pending[k]:
            z, y, x = (int(v) for v in pending[k].pop(0))
            out.append(Click(cvpr25.FG if k == "fg" else cvpr25.BG, (x, y, z)))
    return out


def predict_case(method: InteractiveMethod, case: dict[str, Any]) -> np.ndarray:
    """``segs`` (uint8 (z, y, x)) for one challenge case (module docstring)."""
    method = cvpr25.drawn_on_one_slice(method)
    imgs = np.asarray(case["imgs"])
    if imgs.ndim != 3:
        raise InputError(f"imgs must be 3D (z, y, x), got shape {imgs.shape}")
    image = np.ascontiguousarray(cvpr25.to_zyx(imgs).astype(np.float32))
    shape = image.shape
    segs = np.zeros(imgs.shape, np.uint8)
    boxes = list(case.get("boxes", ()))
    clicks = list(case.get("clicks", ()))
    orders = list(case.get("clicks_order", ()))
    rng = np.random.default_rng(0)
    for index in range(_class_count(case)):
        box = dict(boxes[index]) if index < len(boxes) else None
        inner = None if box is None else cvpr25.box_to_roi({k: int(v) for k, v in box.items()})
        given = dict(clicks[index]) if index < len(clicks) else {}
        order = list(orders[index]) if index < len(orders) else []
        usable = _ordered_clicks(given, order)
        roi = cvpr25.roi_for(inner, [c.position for c in usable], shape)
        crop, state, prob, _ = cvpr25.begin(method, image, roi, inner, rng)
        if usable:
            state, result = method.step(state, cvpr25.to_roi_grid(crop, usable), rng=rng)
            prob = result.prob
        if box is None and not usable:
            continue  # nothing to go on: an empty prediction for this class
        mask = cvpr25.to_zyx(paste_mask(crop, prob)).astype(bool)
        segs[mask] = index + 1
    return segs


def predict_dir(method: InteractiveMethod, in_dir: Path, out_dir: Path) -> list[Path]:
    """:func:`predict_case` for every ``*.npz`` of ``in_dir``; the files written."""
    files = sorted(Path(in_dir).glob("*.npz"))
    if not files:
        raise InputError("no .npz cases here", path=in_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in files:
        segs = predict_case(method, _load(path))
        target = out_dir / path.name
        atomic_write(target, partial(_save, segs=segs))
        written.append(target)
    return written


def _save(path: Path, **arrays: Any) -> None:
    with path.open("wb") as fh:  # a file object: np.savez would append ".npz" to a name
        np.savez_compressed(fh, **arrays)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Intensities scaled to 0-255: clipped to the 0.5-99.5 percentiles of the non-zero
    voxels, min-max scaled, and voxels that were 0 kept at 0 (MedSAM's MR preprocessing,
    which the challenge's data follows for non-CT images)."""
    a = np.asarray(image, dtype=np.float64)
    nz = a[a != 0]
    if nz.size == 0:
        return np.zeros(a.shape, np.uint8)
    lo, hi = np.percentile(nz, PERCENTILES)
    c = np.clip(a, lo, hi)
    span = c.max() - c.min()
    scaled = (c - c.min()) / span * 255.0 if span > 0 else np.zeros_like(c)
    scaled[a == 0] = 0
    return np.rint(scaled).astype(np.uint8)


def export_split(
    data: Path, out: Path, split: str = "test", target: str | None = None
) -> list[str]:
    """Write the cases of ``split`` as challenge cases (module docstring); their ids."""
    ds = open_dataset(data)
    cases = ds.cases(None if split == "all" else split)
    values = ds.resolve_target(target) if target is not None else None
    (Path(out) / "imgs").mkdir(parents=True, exist_ok=True)
    (Path(out) / "gts").mkdir(parents=True, exist_ok=True)
    ids = []
    for case in cases:
        if case.label_path is None:
            continue
        image = ds.load_image(case)
        label = np.rint(load_label(case.label_path, like=image).array).astype(np.int64)
        if values is not None:
            label = np.isin(label, values).astype(np.int64)
        present = [int(v) for v in np.unique(label) if v != 0]
        gts = np.zeros(label.shape, np.uint8)
        for i, v in enumerate(present, start=1):
            gts[label == v] = i
        gts_zyx = np.ascontiguousarray(cvpr25.to_zyx(gts))
        boxes = [cvpr25.middle_slice_box(gts_zyx == i) for i in range(1, len(present) + 1)]
        imgs = np.ascontiguousarray(cvpr25.to_zyx(to_uint8(image.array)))
        spacing = np.array(list(reversed([float(s) for s in image.spacing])))
        name = f"{case.case_id}.npz"
        box_array = np.array(boxes, dtype=object)
        atomic_write(
            Path(out) / "imgs" / name, partial(_save, imgs=imgs, spacing=spacing, boxes=box_array)
        )
        atomic_write(Path(out) / "gts" / name, partial(_save, gts=gts_zyx))
        ids.append(case.case_id)
    return ids
