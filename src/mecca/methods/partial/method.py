"""Probabilistic partial segmentation as an interactive method: propose, accept, correct.

The cVAE of :mod:`mecca.methods.partial.model` turns a partial segmentation (decided voxels
``x_m``, decided foreground ``x_s``) into K larger ones. :class:`PartialMethod` keeps that
partial segmentation as its state, on the crop's network grid:

* :meth:`PartialMethod.propose` samples K proposals from the current state;
* :meth:`PartialMethod.accept` makes one of them the state (one interaction);
* :meth:`PartialMethod.step` applies corrections: each fg/bg click decides a ball of
  ``click_radius`` voxels around it as foreground / background (what a user's brush
  stroke on the proposal does), later clicks over earlier ones.

The output probability is the decided foreground (1) and 0 elsewhere, so the mask is
exactly what the user has accepted or corrected so far; undecided voxels count as
background. A benchmark episode (:func:`mecca.episode.run_episode`) runs, per step:
K proposals, the simulated user accepts the one closest to the ground truth
(:func:`mecca.episode.pick_closest`), then the protocol's user corrects the result
with clicks; an accepted proposal counts as one interaction.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mecca import bundle
from mecca.checkpoint import load_checkpoint
from mecca.data.roi import Crop
from mecca.errors import ConfigError
from mecca.interaction.clicks import Click, InteractionKind
from mecca.interface import FG_BG, MethodState, Proposal, StepResult
from mecca.methods.partial.model import PartialProposer, config_from_checkpoint


@dataclass
class PartialMethod:
    """Proposals from a trained partial-segmentation cVAE, accepted and corrected.

    Attributes:
        proposer: the trained 3D model.
        grid: the network grid the model was trained on (callers crop to it).
        k: proposals per :meth:`propose` call by default.
        click_radius: a correction click decides this many voxels around it (ball).
    """

    proposer: PartialProposer
    grid: tuple[int, int, int]
    k: int = 5
    click_radius: int = 2
    name: str = "partial"

    def __post_init__(self) -> None:
        if self.proposer.dims != 3:
            raise ConfigError("the partial method needs a 3D model (trained with dims=3)")
        if self.k < 1 or self.click_radius < 0:
            raise ConfigError(
                f"k must be >= 1 and click_radius >= 0, got {self.k} and {self.click_radius}"
            )

    @classmethod
    def from_run(
        cls, run: str | Path, *, device: str = "cpu", k: int = 5, click_radius: int = 2
    ) -> PartialMethod:
        """The model of a ``mecca train --method partial`` run folder (its last.pt), a
        checkpoint, a bundle folder written by
        :func:`~mecca.methods.partial.bundle.export_partial` or a shipped
        bundle's name."""
        checkpoint = bundle.model_checkpoint(run, "partial-segmentation model")
        proposer = PartialProposer.from_checkpoint(checkpoint, device=device)
        grid = config_from_checkpoint(load_checkpoint(checkpoint)).grid
        grid3 = (int(grid[0]), int(grid[1]), int(grid[2]))
        return cls(proposer, grid3, k=k, click_radius=click_radius)

    @property
    def accepts(self) -> frozenset[InteractionKind]:
        return FG_BG

    def start(self, crop: Crop, *, init_prob: np.ndarray | None = None) -> MethodState:
        """Nothing decided yet (``init_prob`` is ignored: the user builds the mask)."""
        empty = np.zeros(crop.grid, bool)
        return MethodState(crop, prob=empty.astype(np.float32), extra=_extra(empty, empty))

    def propose(
        self, state: MethodState, rng: np.random.Generator, k: int | None = None
    ) -> list[Proposal]:
        """``k`` larger partial segmentations of the current one (largest first)."""
        decided, seg = state.extra["decided"], state.extra["seg"]
        return self.proposer.propose(state.crop.image, decided, seg, k or self.k, rng)

    def accept(self, state: MethodState, proposal: Proposal) -> tuple[MethodState, StepResult]:
        """Make ``proposal`` the current partial segmentation."""
        t0 = time.perf_counter()
        mask, seg = np.asarray(proposal.mask, bool), np.asarray(proposal.seg, bool) & proposal.mask
        new = replace(state, prob=seg.astype(np.float32), extra=_extra(mask, seg))
        return new, StepResult(seg.astype(np.float32), seconds=time.perf_counter() - t0)

    def step(
        self, state: MethodState, new: Sequence[Click], *, rng: np.random.Generator
    ) -> tuple[MethodState, StepResult]:
        """Corrections: each click decides a ball around it as its kind says."""
        t0 = time.perf_counter()
        decided, seg = state.extra["decided"].copy(), state.extra["seg"].copy()
        for click in new:
            ball = _ball(state.crop.grid, click.position, self.click_radius)
            decided |= ball
            seg[ball] = click.kind is InteractionKind.FOREGROUND
        prob = seg.astype(np.float32)
        out = MethodState(state.crop, state.clicks + tuple(new), prob, _extra(decided, seg))
        return out, StepResult(prob, seconds=time.perf_counter() - t0)


def _extra(decided: np.ndarray, seg: np.ndarray) -> dict[str, np.ndarray]:
    return {"decided": decided, "seg": seg & decided}


def _ball(shape: Sequence[int], centre: Sequence[int], radius: int) -> np.ndarray:
    """bool (shape) ball of ``radius`` voxels around ``centre`` (radius 0: the voxel)."""
    lo = [max(0, int(c) - radius) for c in centre]
    hi = [min(int(s), int(c) + radius + 1) for c, s in zip(centre, shape, strict=True)]
    out = np.zeros(tuple(shape), bool)
    grids = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
    dist2 = sum((g - int(c)) ** 2 for g, c in zip(grids, centre, strict=True))
    out[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = dist2 <= radius * radius
    return out


def partial_factory(
    model: str | None = None, device: str = "cpu", k: int = 5, click_radius: int = 2
) -> PartialMethod:
    """Registry factory: ``model`` is a run folder, checkpoint or bundle (default: the
    shipped ``partial_*`` bundle)."""
    if model is None:
        model = bundle.default_bundle("partial")
        if model not in bundle.shipped_bundles():
            raise ConfigError(
                "method partial needs a trained model and none is shipped",
                hint="train one: mecca train --method partial --data DIR --out RUN, then "
                "pass model=RUN (benchmark: --weights partial=RUN)",
            )
    return PartialMethod.from_run(model, device=device, k=k, click_radius=click_radius)
