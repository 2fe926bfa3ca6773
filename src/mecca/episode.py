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

import numpy as np

from mecca import metrics
from mecca.data.roi import (
    Box,
    Crop,
    NormaliseConfig,
    make_crop,
    paste_mask,
    random_margin_box,
    resample,
    resample_box,
)
from mecca.errors import InputError
from mecca.interaction.clicks import Click, InteractionKind, edge_click_to_fg_bg
from mecca.interaction.guide import advice_regions, advice_to_original
from mecca.interaction.honour import honoured_clicks
from mecca.interaction.users import SimulatedUser
from mecca.interface import (
    InteractiveMethod,
    MethodState,
    Proposal,
    ProposalMethod,
    Segmenter,
    StepResult,
    grid_of,
)


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
    """Proposals accepted in this step (a :class:`~mecca.interface.ProposalMethod`)."""
    honoured: tuple[int, int] = (0, 0)
    """(honoured, labelled): of the foreground/background clicks the method was given so far
    (original grid), how many have their label in the method's own mask after this step
    (:func:`mecca.interaction.honour.honoured_clicks`; edge points carry no label)."""


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
    user: SimulatedUser,
    *,
    rng: np.random.Generator,
    steps: int = 5,
    box: Box | None = None,
    grid: tuple[int, int, int] | None = None,
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
        user: a simulated user (:mod:`mecca.interaction.users`).
        rng: the episode's random generator (ROI margin, clicks, method).
        box: the ROI; default the ground-truth box grown by a random 1-11 voxel margin.
        grid: the network grid; default the method's for the ROI (:func:`grid_of`).
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
    if grid is None:
        grid = grid_of(method, box.shape)
    crop = make_crop(image, box, grid, normalise=normalise or NormaliseConfig())
    state = method.start(crop, init_prob=init_prob)
    pred = paste_mask(crop, state.prob) if state.prob is not None else np.zeros_like(gt)
    gt_grid = resample_box(gt.astype(np.float32), box, grid) >= 0.5
    prob = state.prob if state.prob is not None else np.zeros(crop.grid, np.float32)
    initial = metrics.dice(pred.astype(bool), gt)
    records = []
    advice: np.ndarray | None = None
    given: list[Click] = []
    for t in range(1, steps + 1):
        t0 = time.perf_counter()
        proposal_seconds, accepted = 0.0, False
        if isinstance(method, ProposalMethod):  # accept the closest proposal, then correct it
            state, proposal_seconds, accepted = accept_closest(method, state, gt_grid, rng)
            assert state.prob is not None
            pred = paste_mask(crop, state.prob)
        where = {} if advice is None else {"advice": advice}
        clicks = user(pred.astype(bool), gt, step=t, rng=rng, image=image, **where)
        usable = adapt_clicks(clicks, method.accepts, gt)
        state, result = method.step(state, clicks_to_grid(crop, usable), rng=rng)
        pred = paste_mask(crop, result.prob)
        total = time.perf_counter() - t0
        given.extend(usable)
        honoured = honoured_clicks(pred, given)
        d = metrics.dice(pred.astype(bool), gt)
        mis = metrics.misunderstanding_rate(prob, result.prob, gt_grid)
        prob = result.prob
        if guided and t < steps:
            advice = _advice_on_original(crop, result, t + 1)
        kept = pred.astype(np.uint8) if keep_masks else None
        seconds = result.seconds + proposal_seconds
        records.append(
            StepRecord(
                t,
                tuple(clicks),
                d,
                seconds,
                total,
                mis,
                kept,
                proposals=int(accepted),
                honoured=honoured,
            )
        )
    return EpisodeRecord(box, initial, tuple(records), pred.astype(np.uint8))


def _advice_on_original(crop: Crop, result: StepResult, step: int) -> np.ndarray | None:
    """The advice regions a user sees before ``step`` (int32 on the original grid), or None
    for a method without a confidence map."""
    advice = result.advice
    if advice is None and result.confidence is not None:
        advice = advice_regions(crop.image, result.confidence, step=step)
    return None if advice is None else advice_to_original(crop, advice)


def proposal_dice(proposal: Proposal, truth: np.ndarray) -> float:
    """Dice of the proposal's foreground against the ground truth restricted to its mask:
    ``2 |seg ∧ T ∧ mask| / (|seg| + |T ∧ mask|)``, 1.0 when both are empty.

    It asks "is what this proposal decides right?", so a correct small proposal and a
    correct large one both score 1 (see :func:`pick_closest` for the tie-break).
    """
    gt = np.asarray(truth)
    if gt.dtype != bool and not np.isin(gt, (0, 1)).all():
        raise InputError("truth must be binary (0/1 or bool)", hint="select one label first")
    gt = gt.astype(bool)
    if gt.shape != proposal.mask.shape:
        raise InputError(f"truth has shape {gt.shape}, the proposal {proposal.mask.shape}")
    inside = gt & proposal.mask
    denom = int(proposal.seg.sum()) + int(inside.sum())
    return 1.0 if denom == 0 else 2.0 * int((proposal.seg & inside).sum()) / denom


def pick_closest(proposals: Sequence[Proposal], truth: np.ndarray) -> int:
    """Index of the proposal a simulated user accepts: highest :func:`proposal_dice`; ties
    go to the proposal that decides more voxels (more progress), then to the earlier one."""
    if len(proposals) == 0:
        raise InputError("no proposals to choose from", hint="call propose with k >= 1")
    scores = [(proposal_dice(p, truth), int(p.mask.sum())) for p in proposals]
    return max(range(len(proposals)), key=lambda i: (scores[i], -i))


def accept_closest(
    method: ProposalMethod, state: MethodState, gt_grid: np.ndarray, rng: np.random.Generator
) -> tuple[MethodState, float, bool]:
    """The simulated user of proposal methods: K proposals, pick the one closest to the
    ground truth on the network grid (:func:`pick_closest`) and accept it unless it would
    lower the Dice of the current mask (a user rejects a proposal that undoes good work;
    then no proposal counts for the step). Returns the state, the seconds spent proposing
    and accepting, and whether one was accepted."""
    t0 = time.perf_counter()
    proposals = method.propose(state, rng)
    chosen = proposals[pick_closest(proposals, gt_grid)]
    current = np.asarray(state.prob) > 0.5 if state.prob is not None else np.zeros_like(gt_grid)
    accepted = metrics.dice(np.asarray(chosen.seg, bool), gt_grid) >= metrics.dice(current, gt_grid)
    if accepted:
        state, _ = method.accept(state, chosen)
    return state, time.perf_counter() - t0, accepted


def initial_prob_on_grid(
    segmenter: Segmenter,
    image: np.ndarray,
    box: Box,
    grid: Sequence[int],
    normalise: NormaliseConfig | None = None,
) -> np.ndarray:
    """The initial segmenter's probability for ``box`` of ``image``, on ``grid``.

    For the IteR-MRL protocol (``run_episode(init_prob=...)``): the segmenter sees the box
    on its own training grid; the map is resampled (trilinearly) to the grid of the method
    it initialises when the two differ. Float32, values in [0, 1].
    """
    crop = make_crop(image, box, segmenter.grid, normalise=normalise or NormaliseConfig())
    prob = segmenter.initial_prob(crop)
    target = (int(grid[0]), int(grid[1]), int(grid[2]))
    if prob.shape != target:
        prob = np.clip(resample(prob, target), 0.0, 1.0)
    return prob.astype(np.float32, copy=False)
