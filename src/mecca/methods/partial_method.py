"""Probabilistic partial segmentation as an interactive method: propose, accept, correct.

The cVAE of :mod:`mecca.methods.partial` turns a partial segmentation (decided voxels
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
(:func:`mecca.methods.partial.pick_closest`), then the protocol's user corrects the result
with clicks; an accepted proposal counts as one interaction.

Training on a dataset (``mecca train --method partial``): crops of the training cases on
the network grid (ground-truth box + random 1-11 voxel margin, as every other method's
crops), ``crops_per_case`` per case, each z-scored, then :func:`train_partial`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mecca.data.roi import Crop, NormaliseConfig, make_crop, random_margin_box
from mecca.errors import ConfigError
from mecca.interaction.clicks import Click, InteractionKind
from mecca.methods.base import MethodState, StepResult
from mecca.methods.partial import PartialConfig, PartialProposer, Proposal, train_partial

FG_BG = frozenset({InteractionKind.FOREGROUND, InteractionKind.BACKGROUND})


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
        checkpoint, a bundle folder written by :func:`export_partial` or a shipped
        bundle's name."""
        from mecca.bundle import model_checkpoint

        checkpoint = model_checkpoint(run, "partial-segmentation model")
        proposer = PartialProposer.from_checkpoint(checkpoint, device=device)
        from mecca.checkpoint import load_checkpoint
        from mecca.methods.partial import config_from_checkpoint

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
        from mecca.bundle import shipped_bundles
        from mecca.methods import default_model

        model = default_model("partial")
        if model not in shipped_bundles():
            raise ConfigError(
                "method partial needs a trained model and none is shipped",
                hint="train one: mecca train --method partial --data DIR --out RUN, then "
                "pass model=RUN (benchmark: --weights partial=RUN)",
            )
    return PartialMethod.from_run(model, device=device, k=k, click_radius=click_radius)


def dataset_crops(
    data: Path,
    grid: Sequence[int],
    *,
    split: str = "train",
    target: str | None = None,
    crops_per_case: int = 4,
    seed: int = 0,
    max_cases: int | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """z-scored image crops and their labels on ``grid``, ``crops_per_case`` per case."""
    from mecca.training_data import load_cases

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for case in load_cases(Path(data), split, target, max_cases):
        for _ in range(crops_per_case):
            box = random_margin_box(case.mask, rng)
            crop = make_crop(
                case.image, box, tuple(grid), label=case.mask, normalise=NormaliseConfig()
            )
            images.append(crop.image.astype(np.float32))
            labels.append(np.asarray(crop.label, bool))
    return images, labels


def train_partial_on_dataset(
    config: PartialConfig,
    data: Path,
    out: Path,
    *,
    resume: bool = False,
    crops_per_case: int = 4,
    target: str | None = None,
) -> Path:
    """``mecca train --method partial``: crops of the train split, then :func:`train_partial`."""
    if config.dims != 3:
        raise ConfigError("training on a dataset's volumes needs dims=3")
    images, labels = dataset_crops(
        data, config.grid, target=target, crops_per_case=crops_per_case, seed=config.seed
    )
    return train_partial(config, images, labels, out, resume=resume)


def export_partial(
    run: Path,
    out: Path,
    *,
    checkpoint: str = "last.pt",
    name: str | None = None,
    description: str = "",
    force: bool = False,
) -> Path:
    """Write a MONAI-Bundle-layout folder (as :func:`mecca.bundle.export_bundle` does for
    the RL methods) from a partial-segmentation run; :meth:`PartialMethod.from_run` reads
    it. The run keeps only ``last.pt`` (training has no validation split to pick by)."""
    from mecca.bundle import card_text, write_bundle
    from mecca.checkpoint import load_checkpoint
    from mecca.methods.partial import config_from_checkpoint

    run, out = Path(run), Path(out)
    data = load_checkpoint(run / checkpoint)
    cfg = config_from_checkpoint(data)
    summary = _partial_summary(run, int(data["step"]))
    metadata = {
        "method": "partial",
        "train_config": data["config"],
        "network_data_format": {
            "inputs": {
                "image": {
                    "num_channels": 3,
                    "spatial_shape": list(cfg.grid),
                    "channel_def": {
                        "0": "image (z-scored)",
                        "1": "x_m decided",
                        "2": "x_s decided foreground",
                    },
                }
            },
            "outputs": {
                "proposal": {
                    "num_channels": 2,
                    "spatial_shape": list(cfg.grid),
                    "channel_def": {"0": "y_m partialness", "1": "y_s foreground"},
                }
            },
        },
        "training": summary,
    }

    def card(meta: dict[str, Any]) -> str:
        return card_text(
            meta,
            description,
            [
                f"Method: partial (probabilistic partial segmentation, cVAE, {cfg.dims}D), "
                f"grid {list(cfg.grid)}, decoder width {cfg.dec_width}, latent {cfg.latent_size}",
                f"Training: {summary['steps']} steps of {cfg.batch_size} pairs, "
                f"{summary['train_seconds'] / 3600:.2f} h of steps on {summary['threads']} "
                f"thread(s), torch {summary['torch']}; last logged loss {summary['last_loss']}",
            ],
        )

    payload = {k: data[k] for k in ("method", "config", "net", "step")}
    return write_bundle(
        out, payload, metadata, card,
        name=name, description=description, checkpoint=checkpoint, force=force,
    )  # fmt: skip


def _partial_summary(run: Path, step: int) -> dict[str, Any]:
    """Steps, summed step time and the machine from a partial run's log.jsonl."""
    from mecca.bundle import read_log

    records = read_log(run)
    start = next((r for r in records if r.get("type") == "start"), {})
    by_step = {int(r["step"]): r for r in records if r.get("type") == "train"}  # a resume
    train = [by_step[s] for s in sorted(by_step) if s <= step]  # may log a step again
    seconds, last = 0.0, 0
    for r in train:  # each record's seconds_per_step covers the steps since the one before
        seconds += float(r["seconds_per_step"]) * (int(r["step"]) - last)
        last = int(r["step"])
    return {
        "steps": step,
        "train_seconds": seconds,
        "threads": start.get("threads"),
        "torch": start.get("torch"),
        "machine": start.get("machine"),
        "last_loss": round(float(train[-1]["loss"]), 4) if train else None,
    }
