"""One simulated interactive episode: the loop shared by the demo and the benchmark.

The simulated user looks at the current mask on the ORIGINAL grid (what a person sees)
and clicks there; the clicks are mapped to the crop's network grid for the method, and
the method's probability goes back to the original grid, where Dice is measured. So every
number reported is measured on the image's own voxels, never on the resampled crop.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mecca import metrics
from mecca.data.roi import (
    Box,
    Crop,
    NormaliseConfig,
    make_crop,
    paste_mask,
    random_margin_box,
    resample_box,
)
from mecca.interaction.clicks import Click, InteractionKind, edge_click_to_fg_bg
from mecca.interaction.guide import advice_regions, advice_to_original
from mecca.methods.base import InteractiveMethod, MethodState, StepResult


@dataclass(frozen=True)
class StepRecord:
    """One step: the clicks given (original grid), Dice after it, and its timings."""

    step: int
    clicks: tuple[Click, ...]
    dice: float
    method_seconds: float
    total_seconds: float
    misunderstanding: float = 0.0
    """Share of crop voxels whose probability moved against their label in this step
    (MECCA Definition 1), on the network grid."""
    mask: np.ndarray | None = None
    """uint8 mask on the original grid after this step (``run_episode(keep_masks=True)``)."""
    proposals: int = 0
    """Proposals accepted in this step (methods with ``propose``/``accept``, e.g. partial)."""


@dataclass(frozen=True)
class EpisodeRecord:
    """A whole episode: the ROI, the Dice before any click, the steps, the final mask."""

    box: Box
    initial_dice: float
    steps: tuple[StepRecord, ...]
    final_mask: np.ndarray

    @property
    def dice_per_step(self) -> list[float]:
        return [s.dice for s in self.steps]


def clicks_to_grid(crop: Crop, clicks: Sequence[Click]) -> list[Click]:
    """Map clicks from the original grid to the nearest voxel of the crop's network grid."""
    if not clicks:
        return []
    pts = np.array([c.position for c in clicks], dtype=np.float64)
    grid_pts = np.rint(crop.to_grid(pts)).astype(int)
    grid_pts = np.clip(grid_pts, 0, np.asarray(crop.grid) - 1)
    return [
        Click(c.kind, (int(p[0]), int(p[1]), int(p[2])))
        for c, p in zip(clicks, grid_pts, strict=True)
    ]


def adapt_clicks(
    clicks: Sequence[Click], accepts: frozenset[InteractionKind], gt: np.ndarray
) -> list[Click]:
    """Convert edge clicks into a fg/bg pair for methods that cannot take edge points.

    Only in simulation: the conversion uses the ground truth, as a person knows which
    side of the boundary is the object (see ``edge_click_to_fg_bg``).
    """
    out: list[Click] = []
    for click in clicks:
        if click.kind in accepts:
            out.append(click)
        elif click.kind is InteractionKind.EDGE:
            out.extend(edge_click_to_fg_bg(click, gt))
    return out


def run_episode(
    method: InteractiveMethod,
    image: np.ndarray,
    gt: np.ndarray,
    user: object,
    *,
    rng: np.random.Generator,
    steps: int = 5,
    box: Box | None = None,
    grid: tuple[int, int, int] = (55, 55, 30),
    normalise: NormaliseConfig | None = None,
    init_prob: np.ndarray | None = None,
    keep_masks: bool = False,
    guided: bool = False,
) -> EpisodeRecord:
    """Run ``steps`` rounds of (simulated user clicks -> method step) on one volume.

    Args:
        method: any ``InteractiveMethod``.
        image: float (I, J, K) intensities on the original grid.
        gt: bool (I, J, K) ground-truth mask on the same grid.
        user: a simulated user from ``mecca.interaction.clicks``.
        rng: the episode's random generator (ROI margin, clicks, method).
        box: the ROI; default the ground-truth box grown by a random 1-11 voxel margin.
        init_prob: initial probability on the network grid (IteR-MRL "update" mode).
        keep_masks: keep every step's mask in its record (the demo's overlays).
        guided: MECCA's interaction guide (Sec. 3.5, the ablation of its Table 5): from
            step 2 on, the user clicks only inside the advice regions of the previous step
            (the method's own, else the least confident supervoxels of its confidence
            map). Methods without a confidence map give no advice; their user is free.
    """
    gt = np.asarray(gt, dtype=bool)
    if box is None:
        box = random_margin_box(gt, rng)
    crop = make_crop(image, box, grid, normalise=normalise or NormaliseConfig())
    state = method.start(crop, init_prob=init_prob)
    pred = paste_mask(crop, state.prob) if state.prob is not None else np.zeros_like(gt)
    gt_grid = resample_box(gt.astype(np.float32), box, grid) >= 0.5
    prob = state.prob if state.prob is not None else np.zeros(crop.grid, np.float32)
    initial = metrics.dice(pred.astype(bool), gt)
    records = []
    proposes = hasattr(method, "propose") and hasattr(method, "accept")
    advice: np.ndarray | None = None
    for t in range(1, steps + 1):
        t0 = time.perf_counter()
        proposal_seconds, accepted = 0.0, False
        if proposes:  # the user accepts the proposal closest to the truth, then corrects it
            state, proposal_seconds, accepted = accept_closest(method, state, gt_grid, rng)
            assert state.prob is not None
            pred = paste_mask(crop, state.prob)
        where = {} if advice is None else {"advice": advice}
        clicks = user(pred.astype(bool), gt, step=t, rng=rng, image=image, **where)  # type: ignore[operator]
        usable = adapt_clicks(clicks, method.accepts, gt)
        state, result = method.step(state, clicks_to_grid(crop, usable), rng=rng)
        pred = paste_mask(crop, result.prob)
        total = time.perf_counter() - t0
        d = metrics.dice(pred.astype(bool), gt)
        mis = metrics.misunderstanding_rate(prob, result.prob, gt_grid)
        prob = result.prob
        if guided and t < steps:
            advice = _advice_on_original(crop, result, t + 1)
        kept = pred.astype(np.uint8) if keep_masks else None
        seconds = result.seconds + proposal_seconds
        records.append(
            StepRecord(t, tuple(clicks), d, seconds, total, mis, kept, proposals=int(accepted))
        )
    return EpisodeRecord(box, initial, tuple(records), pred.astype(np.uint8))


def _advice_on_original(crop: Crop, result: StepResult, step: int) -> np.ndarray | None:
    """The advice regions a user sees before ``step`` (int32 on the original grid), or None
    for a method without a confidence map."""
    advice = result.advice
    if advice is None and result.confidence is not None:
        advice = advice_regions(crop.image, result.confidence, step=step)
    return None if advice is None else advice_to_original(crop, advice)


def accept_closest(
    method: Any, state: MethodState, gt_grid: np.ndarray, rng: np.random.Generator
) -> tuple[MethodState, float, bool]:
    """The simulated user of proposal methods: K proposals, pick the one closest to the
    ground truth on the network grid (:func:`mecca.methods.partial.pick_closest`) and
    accept it unless it would lower the Dice of the current mask (a user rejects a
    proposal that undoes good work; then no proposal counts for the step).
    Returns the state, the seconds spent proposing and accepting, and whether one was
    accepted."""
    from mecca.methods.partial import pick_closest

    t0 = time.perf_counter()
    proposals = method.propose(state, rng)
    chosen = proposals[pick_closest(proposals, gt_grid)]
    current = np.asarray(state.prob) > 0.5 if state.prob is not None else np.zeros_like(gt_grid)
    accepted = metrics.dice(np.asarray(chosen.seg, bool), gt_grid) >= metrics.dice(
        current, gt_grid
    )
    if accepted:
        state, _ = method.accept(state, chosen)
    return state, time.perf_counter() - t0, accepted
