"""The CVPR 2025 interactive-3D protocol as the organisers run it (``--protocol cvpr25``).

What their evaluation script (``CVPR25_iter_eval.py``, ``get_boxes.py`` in the public
repository JunMa11/CVPR-MedSegFMCompetition) does, re-implemented here (docs/cvpr25.md):

* **Axes.** Their arrays are (z, y, x); MECCA's NIfTI arrays are (i, j, k) = (x, y, z).
  The click rule and the box are computed on the (z, y, x) view (``array.transpose(2, 1,
  0)``), so component numbering, ``argwhere`` order and ties are theirs.
* **The box** (:func:`middle_slice_box`): the z range of the mask (closed interval), the
  middle one of the slices that hold it (``z[len(z) // 2]`` of the sorted distinct z), and
  that slice's 2D box (closed). ``get_boxes.py`` grows the 2D box by a random shift in
  0-5 pixels scaled by ``size / 256``; ``box_shift`` gives that shift (0: none, the
  default, deterministic).
* **Step 1** is the box-only prediction. Without a box (``box=False``; the organisers
  omit it for structures such as vessels) it is skipped and scored DSC = NSD = 0, 0 s,
  and the first click is taken on an empty prediction, as they do.
* **Steps 2-6**: one click each (:func:`organisers_click`): the error mask's largest
  26-connected component (ties: the lowest label in C raster order, as ``cc3d`` and
  ``np.argmax`` give), its Euclidean distance transform computed in the component's
  bounding box padded by ``max(int(0.25 * size), 1)`` voxels per side (2x max-pooled
  above 6e7 voxels, as they do), zero outside the component (the component itself where
  that leaves nothing), and one voxel of maximal distance chosen by
  ``np.random.RandomState(42).choice`` over ``argwhere`` (seed 42 reset at every click);
  BACKGROUND where the ground truth is 0 there, else FOREGROUND. No error: no click.
  Clicks accumulate; each step gives the method the new click only (MECCA's methods keep
  their clicks in their state).
* **How methods take the box.** Every method gets an ROI of the box grown by 25 % of its
  size per side (ceil, at least 1 voxel): the context a tool adds around a drawn box (the
  box itself as the crop cut the object on the slices it does not bound, and put the
  random walker's border seeds inside it). Methods that accept BOX clicks also get, in
  the box step, two BOX clicks at the box's first and last voxels; for every other method
  the box-only prediction is its ``start`` state on that ROI. A click
  outside the ROI (the middle-slice box need not bound the other slices) grows the ROI to
  hold it (:func:`roi_for`; the step is ``recropped``) and the method starts again on the
  new crop (``recrop``, :data:`RECROPS`): by default (``carry``) a method that
  continues from a mask (:func:`mecca.interface.carries_mask`) starts from the mask so
  far, as the organisers hand every step the previous prediction (``prev_pred``), with
  the box and every click so far in one step; every other method restarts. No click is
  lost either way. Without a box, the ROI is the whole volume. A method that can be told
  that its boxes are drawn on one slice (``for_slice_boxes``: the generalist with its
  slice-box weights) is told so (:func:`drawn_on_one_slice`).
* **Methods that take only edge points** (``takes_only_edge_points``: mecca,
  edge_itermrl) cannot take fg/bg clicks; the protocol refuses them
  (:func:`check_method`) rather than score them for clicks they never received.
* **Scores**: DSC and NSD@2 mm (:func:`mecca.metrics.dsc_nsd_cvpr25`, NSD 0 where DSC
  <= 0.2) after the box and after each click, :func:`mecca.metrics.cvpr25_scores` (AUC over
  the 5 click steps, max 4; final DSC and NSD), and the seconds of each of the 6 steps.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from mecca import metrics
from mecca.data.roi import Box, Crop, make_crop, paste_mask, prob_to_box, resample_box
from mecca.errors import ConfigError
from mecca.interaction.clicks import Click, InteractionKind, box_prompt
from mecca.interaction.honour import honoured_clicks
from mecca.interface import (
    InteractiveMethod,
    MethodState,
    carries_mask,
    grid_of,
    takes_only_edge_points,
)

N_CLICKS = 5
"""Click steps after the box step (the organisers' ``n_clicks``)."""
PAD_SHARE = 0.25
"""Padding of the error component's box for its EDT, per side, as a share of its size."""
MAX_EDT_VOXELS = 60_000_000
"""Above this many voxels in the padded box, the EDT is computed 2x max-pooled."""
TIE_SEED = 42
"""Seed of the organisers' choice among voxels of equal maximal distance."""

FG, BG, BOX = InteractionKind.FOREGROUND, InteractionKind.BACKGROUND, InteractionKind.BOX

RECROPS = ("carry", "restart", "replay")
"""How a method starts again on a grown ROI: ``carry`` (the default): a method that
continues from a mask (:func:`~mecca.interface.carries_mask`, chosen per method on val)
from the mask so far (``init_prob``, resampled onto the new crop) with the box and every
click in one step, any other as ``restart``; ``restart``: from nothing, the box step
first, then every click in one step; ``replay``: as ``restart`` but the earlier clicks one
step each, as a session replays its history. On val the generalist ended 0.6 points
higher carrying its mask than restarting (box + 5 clicks, 11 targets; docs/cvpr25.md)."""


def to_zyx(array: np.ndarray) -> np.ndarray:
    """MECCA's (x, y, z) array as the organisers' (z, y, x) view (and back: it is its own
    inverse)."""
    return np.asarray(array).transpose(2, 1, 0)


def middle_slice_box(mask_zyx: np.ndarray, shift: int = 0) -> dict[str, int]:
    """The organisers' box of a (z, y, x) mask: ``z_min``, ``z_max``, ``z_mid`` and the
    middle slice's closed 2D box ``z_mid_x_min`` ... ``z_mid_y_max``, each grown by
    ``int(shift * size / 256)`` pixels (their perturbation, 0-5) and clipped."""
    m = np.asarray(mask_zyx, dtype=bool)
    if m.ndim != 3 or not m.any():
        raise ValueError("the box needs a non-empty 3D mask")
    z = np.unique(np.nonzero(m)[0])
    z_mid = int(z[len(z) // 2])
    ys, xs = np.nonzero(m[z_mid])
    h, w = m.shape[1:]
    sx, sy = int(shift * w / 256), int(shift * h / 256)
    return {
        "z_min": int(z[0]),
        "z_max": int(z[-1]),
        "z_mid": z_mid,
        "z_mid_x_min": max(0, int(xs.min()) - sx),
        "z_mid_y_min": max(0, int(ys.min()) - sy),
        "z_mid_x_max": min(w - 1, int(xs.max()) + sx),
        "z_mid_y_max": min(h - 1, int(ys.max()) + sy),
    }


def box_to_roi(box: dict[str, int]) -> Box:
    """The organisers' box as a half-open MECCA box on the (x, y, z) grid: the middle
    slice's 2D box over the closed z range."""
    return Box(
        (box["z_mid_x_min"], box["z_mid_y_min"], box["z_min"]),
        (box["z_mid_x_max"] + 1, box["z_mid_y_max"] + 1, box["z_max"] + 1),
    )


def largest_error_component(pred_zyx: np.ndarray, gt_zyx: np.ndarray) -> np.ndarray | None:
    """The largest 26-connected component of ``pred != gt`` (ties: the lowest label in C
    raster order), or None when there is no error."""
    error = np.asarray(pred_zyx, bool) != np.asarray(gt_zyx, bool)
    if not error.any():
        return None
    labels, _ = ndimage.label(error, structure=np.ones((3, 3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return np.asarray(labels == int(np.argmax(sizes)))


def padded_box_edt(component: np.ndarray) -> np.ndarray:
    """EDT (voxel units) of ``component`` computed in its bounding box padded per side by
    ``max(int(0.25 * size), 1)`` voxels, on the full grid, 0 outside the component."""
    comp = np.asarray(component, dtype=bool)
    idx = np.nonzero(comp)
    lo = np.array([int(i.min()) for i in idx])
    hi = np.array([int(i.max()) + 1 for i in idx])
    size = hi - lo
    pad = np.maximum((size * PAD_SHARE).astype(int), 1)
    inner = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    padded = np.zeros(tuple(size + 2 * pad), dtype=np.uint8)
    centre = tuple(slice(int(p), int(p + s)) for p, s in zip(pad, size, strict=True))
    padded[centre] = comp[inner]
    if padded.size > MAX_EDT_VOXELS:
        from skimage.measure import block_reduce

        small = block_reduce(padded, block_size=(2, 2, 2), func=np.max)
        edt = ndimage.distance_transform_edt(small)
        edt = edt.repeat(2, axis=0).repeat(2, axis=1).repeat(2, axis=2)
    else:
        edt = ndimage.distance_transform_edt(padded)
    full = np.zeros(comp.shape, dtype=np.float64)
    full[inner] = edt[centre]
    return np.asarray(full * comp)


def organisers_click(
    pred_zyx: np.ndarray, gt_zyx: np.ndarray
) -> tuple[tuple[int, int, int], bool] | None:
    """The organisers' click on (z, y, x) masks: (position, is_foreground), or None when
    the prediction has no error (module docstring)."""
    comp = largest_error_component(pred_zyx, gt_zyx)
    if comp is None:
        return None
    edt = padded_box_edt(comp)
    if edt.sum() == 0:
        edt = comp.astype(np.float64)
    best = np.argwhere(edt == edt.max())
    chosen = best[np.random.RandomState(TIE_SEED).choice(len(best))]
    pos = (int(chosen[0]), int(chosen[1]), int(chosen[2]))
    return pos, bool(np.asarray(gt_zyx, bool)[pos])


def check_method(name: str, method: InteractiveMethod, protocol: str = "cvpr25") -> None:
    """Refuse methods that take only edge points: the protocol's clicks are fg/bg."""
    if takes_only_edge_points(method.accepts):
        raise ConfigError(
            f"method {name!r} takes only edge points; the {protocol} protocol gives fg/bg "
            "clicks it cannot use (it would be scored for clicks it never received)",
            hint="benchmark it with --protocol mecca, or leave it out of --methods",
        )


def drawn_on_one_slice(method: InteractiveMethod) -> InteractiveMethod:
    """``method`` told that every box it gets is drawn on one slice (the challenge's box)
    when it can be (its ``for_slice_boxes``), else ``method`` itself."""
    told = getattr(method, "for_slice_boxes", None)
    return told() if callable(told) else method


def box_roi(box: Box, shape: Sequence[int]) -> Box:
    """A method's ROI for ``box``: the box prompt's ROI, the box grown by a quarter of its
    size per side (ceil, >= 1 voxel), clipped (:func:`mecca.interaction.clicks.box_prompt`)."""
    return box_prompt(box, shape)[0]


def in_roi(roi: Box, pos: Sequence[int]) -> bool:
    return all(a <= p < b for a, p, b in zip(roi.start, pos, roi.stop, strict=True))


def to_roi_grid(crop: Any, clicks: Sequence[Click]) -> list[Click]:
    if not clicks:
        return []
    pts = np.rint(crop.to_grid(np.array([c.position for c in clicks], float))).astype(int)
    pts = np.clip(pts, 0, np.asarray(crop.grid) - 1)
    return [
        Click(c.kind, (int(p[0]), int(p[1]), int(p[2]))) for c, p in zip(clicks, pts, strict=True)
    ]


def _scores(mask: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> dict[str, Any]:
    m = metrics.evaluate(mask, gt, spacing)
    dsc, nsd = metrics.dsc_nsd_cvpr25(mask, gt, spacing)
    return {
        "dice": 100.0 * float(m["dice"]),
        "nsd": float(nsd),
        "dsc_cvpr25": float(dsc),
        "assd_vox": _finite(float(m["assd_vox"])),
        "assd_mm": _finite(float(m["assd_mm"])),
        "hd95_vox": _finite(float(m["hd95_vox"])),
        "hd95_mm": _finite(float(m["hd95_mm"])),
    }


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def roi_for(inner: Box | None, points: Sequence[Sequence[int]], shape: Sequence[int]) -> Box:
    """A method's ROI: the smallest box holding the organisers' box (``inner``) and every
    click so far, grown as :func:`box_roi` does; the whole volume without a box."""
    if inner is None:
        return Box((0, 0, 0), (int(shape[0]), int(shape[1]), int(shape[2])))
    if len(points):
        inner = inner.union(Box.around_points(points, 0, shape))
    return box_roi(inner, shape)


def box_clicks(method: InteractiveMethod, inner: Box | None, shape: Sequence[int]) -> list[Click]:
    """The box's two BOX clicks (on the image grid) for a method that takes them, else none."""
    if inner is None or BOX not in method.accepts:
        return []
    return list(box_prompt(inner, shape)[1])


def begin(
    method: InteractiveMethod,
    image: np.ndarray,
    roi: Box,
    inner: Box | None,
    rng: np.random.Generator,
) -> tuple[Crop, MethodState, np.ndarray, float]:
    """Start ``method`` on ``roi`` and give it the box: (crop, state, prob, seconds)."""
    corners = box_clicks(method, inner, image.shape)
    crop = make_crop(image, roi, grid_of(method, roi.shape, boxed=bool(corners)))
    t0 = time.perf_counter()
    state = method.start(crop)
    seconds = time.perf_counter() - t0
    prob = state.prob if state.prob is not None else np.zeros(crop.grid, np.float32)
    if corners:
        state, result = method.step(state, to_roi_grid(crop, corners), rng=rng)
        prob, seconds = result.prob, seconds + result.seconds
    return crop, state, prob, seconds


def run_case(
    method: InteractiveMethod,
    image: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    *,
    rng: np.random.Generator,
    use_box: bool = True,
    box_shift: int = 0,
    clicks: int = N_CLICKS,
    keep_mask: bool = False,
    grow_roi: int = 0,
    recrop: str = "carry",
) -> tuple[dict[str, Any], np.ndarray | None]:
    """One method on one case through the protocol: the benchmark's case record (``steps``:
    the ``clicks`` click steps, 5 in the challenge; ``box_step`` and ``cvpr25``: the box
    step and the challenge scores over all steps) and, with ``keep_mask``, the final mask.

    A click outside the method's ROI (the middle-slice box need not bound the other
    slices) re-crops: the ROI grows to hold it (:func:`roi_for`) and the method starts
    again on the new crop as ``recrop`` says (:data:`RECROPS`; the step's ``recropped``);
    otherwise it gets the new click only. With ``grow_roi`` = N, a mask
    that reaches a side of the ROI (not the image's edge) after the box or a click grows
    the ROI as a session does (:meth:`mecca.data.roi.Box.grown_to_hold`) and the step
    reruns on the new crop, at most N times a step (the step's ``grown``; its seconds
    count). The seconds of a re-crop's start and replayed steps count too."""
    if recrop not in RECROPS:
        raise ConfigError(f"recrop must be one of {RECROPS}, got {recrop!r}")
    method = drawn_on_one_slice(method)
    gt_b = np.asarray(gt, dtype=bool)
    shape = gt_b.shape
    box_dict = middle_slice_box(to_zyx(gt_b), box_shift) if use_box else None
    inner = box_to_roi(box_dict) if box_dict is not None else None
    roi = roi_for(inner, [], shape)
    crop, state, prob, box_seconds = begin(method, image, roi, inner, rng)
    grown_box = 0
    if box_dict is not None:
        pred = paste_mask(crop, prob)
        follow = _follow(method, image, inner, [], rng, grow_roi, roi, crop, state, prob)
        roi, crop, state, prob, more, grown_box = follow
        pred = paste_mask(crop, prob)
        box_seconds += more
        box_step = {**_scores(pred, gt_b, spacing), "seconds": box_seconds, "grown": grown_box}
    else:  # the organisers' no-box case: step 1 scores 0 and clicks start from nothing
        pred = np.zeros(shape, np.uint8)
        box_step = {"dice": 0.0, "nsd": 0.0, "dsc_cvpr25": 0.0, "seconds": 0.0}
    gt_grid = resample_box(gt_b.astype(np.float32), roi, crop.grid) >= 0.5
    steps: list[dict[str, Any]] = []
    given: list[Click] = []
    for _ in range(clicks):
        t1 = time.perf_counter()
        found = organisers_click(to_zyx(pred), to_zyx(gt_b))
        send: list[Click] = []
        if found is not None:
            z, y, x = found[0]
            given.append(Click(FG if found[1] else BG, (x, y, z)))
            send = [given[-1]]
        wanted = roi_for(inner, [c.position for c in given], shape)
        grown = roi.union(wanted)
        restart, recropped = 0.0, grown != roi
        if recropped:
            roi = grown
            carry = recrop == "carry" and carries_mask(method)
            crop, state, prob, restart = _recrop(method, image, roi, inner, pred, carry, rng)
            gt_grid = resample_box(gt_b.astype(np.float32), roi, crop.grid) >= 0.5
            send = [*box_clicks(method, inner, shape), *given] if carry else list(given)
            if recrop == "replay":
                for earlier in given[:-1]:
                    state, done = method.step(state, to_roi_grid(crop, [earlier]), rng=rng)
                    restart += done.seconds
                send = given[-1:]
        state, result = method.step(state, to_roi_grid(crop, send), rng=rng)
        mis = metrics.misunderstanding_rate(prob, result.prob, gt_grid)
        roi, crop, state, prob, more, grew = _follow(
            method, image, inner, given, rng, grow_roi, roi, crop, state, result.prob
        )
        if grew:
            gt_grid = resample_box(gt_b.astype(np.float32), roi, crop.grid) >= 0.5
        restart += more
        pred = paste_mask(crop, prob)
        total = time.perf_counter() - t1
        honoured, labelled = honoured_clicks(pred, given)
        steps.append(
            {
                **_scores(pred, gt_b, spacing),
                "clicks": int(found is not None),
                "recropped": recropped,
                "grown": grew,
                "proposals": 0,
                "misunderstanding": float(mis),
                "method_seconds": float(result.seconds + restart),
                "step_seconds": float(total),
                "honoured_clicks": 100.0 * honoured / labelled if labelled else None,
            }
        )
    dsc = [float(box_step["dsc_cvpr25"])] + [float(s["dsc_cvpr25"]) for s in steps]
    nsd = [float(box_step["nsd"])] + [float(s["nsd"]) for s in steps]
    seconds = [float(box_step["seconds"])] + [float(s["method_seconds"]) for s in steps]
    record = {
        "box": [list(roi.start), list(roi.stop)],
        "cvpr25_box": box_dict,
        "initial_dice": float(box_step["dice"]),
        "box_step": box_step,
        "clicks_given": [c.to_dict() for c in given],
        "steps": steps,
        "cvpr25": {
            **metrics.cvpr25_scores(dsc, nsd, min(N_CLICKS, clicks)),
            "DSC": dsc,
            "NSD": nsd,
            "seconds": seconds,
        },
    }
    return record, pred if keep_mask else None


def _recrop(
    method: InteractiveMethod,
    image: np.ndarray,
    roi: Box,
    inner: Box | None,
    pred: np.ndarray,
    carry: bool,
    rng: np.random.Generator,
) -> tuple[Crop, MethodState, np.ndarray, float]:
    """Start ``method`` again on the grown ``roi``: (crop, state, the mask so far on the
    new crop, seconds). With ``carry`` from that mask (the box comes with the clicks);
    otherwise :func:`begin` (the box step first)."""
    if not carry:
        crop, state, _, seconds = begin(method, image, roi, inner, rng)
        return crop, state, resample_box(pred.astype(np.float32), roi, crop.grid), seconds
    boxed = bool(box_clicks(method, inner, image.shape))
    crop = make_crop(image, roi, grid_of(method, roi.shape, boxed=boxed))
    prob = resample_box(pred.astype(np.float32), roi, crop.grid)
    t0 = time.perf_counter()
    state = method.start(crop, init_prob=prob)
    return crop, state, prob, time.perf_counter() - t0


def _follow(
    method: InteractiveMethod,
    image: np.ndarray,
    inner: Box | None,
    given: Sequence[Click],
    rng: np.random.Generator,
    times: int,
    roi: Box,
    crop: Crop,
    state: MethodState,
    prob: np.ndarray,
) -> tuple[Box, Crop, MethodState, np.ndarray, float, int]:
    """Grow the ROI while the mask of ``prob`` (on ``crop``'s grid) reaches a side of it,
    at most ``times`` times: the method restarts on the grown crop with the box and gets
    every click so far (one step). Returns (roi, crop, state, prob, seconds, times grown)."""
    seconds, grew = 0.0, 0
    shape = image.shape
    for _ in range(times):
        bigger = roi.grown_to_hold(prob_to_box(crop, prob) > 0.5, shape)
        if bigger is None:
            break
        roi, grew = bigger, grew + 1
        crop, state, prob, took = begin(method, image, roi, inner, rng)
        if given:
            state, result = method.step(state, to_roi_grid(crop, given), rng=rng)
            prob, took = result.prob, took + result.seconds
        seconds += took
    return roi, crop, state, prob, seconds, grew


SUMMARY_KEYS = ("DSC_AUC", "NSD_AUC", "DSC_Final", "NSD_Final")


def summarise(cases: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means over cases of the challenge scores, per-step DSC/NSD and seconds."""
    scores = [c["cvpr25"] for c in cases]
    out: dict[str, Any] = {k: float(np.mean([s[k] for s in scores])) for k in SUMMARY_KEYS}
    for k in ("DSC", "NSD", "seconds"):
        out[f"{k}_per_step"] = np.mean([s[k] for s in scores], axis=0).tolist()
    return out


def format_section(report: dict[str, Any]) -> list[str]:
    """report.md lines: the challenge scores of every method (empty when not cvpr25)."""
    rows = {n: r["cvpr25"] for n, r in report["methods"].items() if "cvpr25" in r}
    if not rows:
        return []
    n = len(next(iter(rows.values()))["DSC_per_step"]) - 1
    steps = ["box"] + [f"click {i}" for i in range(1, n + 1)]
    lines = [
        "## CVPR 2025 scores (the organisers' protocol)",
        "",
        "| method | DSC_AUC | NSD_AUC | DSC_Final | NSD_Final |",
        "|---|---|---|---|---|",
    ]
    for name, s in rows.items():
        lines.append(
            f"| {name} | {s['DSC_AUC']:.4f} | {s['NSD_AUC']:.4f} | {s['DSC_Final']:.4f} | "
            f"{s['NSD_Final']:.4f} |"
        )
    for key, title in (("DSC", "DSC"), ("NSD", "NSD@2mm"), ("seconds", "seconds")):
        lines += [
            "",
            f"### {title} per step",
            "",
            "| method | " + " | ".join(steps) + " |",
            "|---" * (len(steps) + 1) + "|",
        ]
        for name, s in rows.items():
            cells = " | ".join(
                f"{v:.4f}" if key != "seconds" else f"{v:.3f}" for v in s[f"{key}_per_step"]
            )
            lines.append(f"| {name} | {cells} |")
    return [*lines, ""]
