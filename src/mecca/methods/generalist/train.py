"""Train the generalist: iterative simulated-click training, resumable, logged, validated.

``python -m mecca.methods.generalist.train --config configs/generalist.yaml --out RUN``

One iteration (SAM / nnInteractive / DeepEdit style): a batch of crops with their first
prompt (:class:`.data.Sampler`: a box, the crop as the box, or 1-3 clicks), then 0-4
correction rounds drawn per batch, in each of which the network's own prediction
(no gradient) becomes the previous-probability channel and every sample gets new clicks
from its current errors (:func:`.prompts.error_clicks`; in a share ``p_turns`` of a
points sample's rounds, the points user's click of a kind drawn 50/50,
:func:`.prompts.turn_click`); the loss (soft Dice + BCE against
the soft truth) is taken on the last round only.

The run folder holds ``log.jsonl`` (a ``start`` line per launch, ``train`` lines with the
loss, learning rate and iterations/s, ``val`` lines), ``last.pt`` (every
``checkpoint_every`` iterations, on SIGTERM / Ctrl-C and at the end: network, AdamW state,
iteration, random-generator states, best score) and ``best.pt`` (the best validation
score). Launching again with the same ``--out`` resumes from ``last.pt``; a finished run
says so and exits. Validation (:func:`validate`) plays the CVPR 2025 protocol on the
first ``val_cases`` cases of each dataset's val split per target: the box (given as
:func:`mecca.interaction.clicks.box_prompt` does), then 5 clicks at the interior-most voxel of the
largest error, Dice on the original grid after each; held-out data is reported under
``unseen:*`` and never enters the score. The score is the mean over the seen datasets
of the Dice after the fifth click. CUDA is used when present, else the CPU with
``threads`` torch threads.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mecca.bundle import resolve_bundle
from mecca.config import config_to_dict, load_config, parse_overrides
from mecca.data.datasets import open_dataset
from mecca.data.roi import Box, make_crop, prob_to_box
from mecca.errors import ConfigError, InputError, MeccaError
from mecca.interaction.clicks import Click, InteractionKind, box_prompt
from mecca.io import atomic_write
from mecca.methods.generalist.bundle import load_weights
from mecca.methods.generalist.data import (
    MIN_TARGET_VOXELS,
    HeldOut,
    Int3,
    Sample,
    Sampler,
    SamplerConfig,
    add_clicks,
    build_cache,
    case_targets,
)
from mecca.methods.generalist.method import GeneralistMethod
from mecca.methods.generalist.net import GeneralistNet, GeneralistNetConfig, count_parameters
from mecca.methods.generalist.prompts import (
    BG,
    FG,
    distance_click,
    error_clicks,
    turn_click,
)

log = logging.getLogger("mecca.generalist.train")


@dataclass(frozen=True)
class GeneralistConfig:
    """Everything a run needs (``configs/generalist.yaml`` documents each choice)."""

    datasets: tuple[str, ...] = ()
    """MSD-layout dataset folders (``~`` expanded, relative paths from the working folder)."""
    held_out: tuple[str, ...] = ()
    """Never trained on: dataset names, ``dataset:target`` or ``*:target``."""
    train_split: str = "train"
    val_split: str = "val"
    val_cases: int = 2
    val_steps: int = 5
    grid: tuple[int, ...] = (48, 48, 32)
    widths: tuple[int, ...] = (16, 32, 64, 128)
    blocks: tuple[int, ...] = (1, 2, 2, 2)
    fine: int = 8
    fine_kernel: int = 3
    norm: str = "instance"
    synthetic_volumes: int = 400
    large_synthetic_volumes: int = 0
    """Procedural volumes with an organ-sized object (dataset ``synthetic_large``)."""
    large_synthetic_organ_only: bool = False
    """Only the organ of a large procedural volume is a target (the fifth schedule trained
    every object of them, so the organ was a quarter of their samples)."""
    large_synthetic_vessels: bool = False
    """The organ of a large procedural volume holds tubes of its own label, as a liver holds
    its vessels (:func:`.synth.make_large_synthetic`)."""
    dataset_weights: dict[str, float] = field(default_factory=dict)
    p_box: float = 0.45
    p_roi_box: float = 0.15
    p_slice_box: float = 0.0
    slice_box_encoding: bool = False
    """See :class:`.data.SamplerConfig` (the twenty-third schedule)."""
    p_click_roi: float = 0.0
    p_loose_box: float = 0.0
    loose_box_slack: float = 0.3
    box_min_extent: tuple[int, int, int] | None = None
    """See :class:`.data.SamplerConfig` (tried by the sixteenth schedule; None: off)."""
    p_init: float = 0.1
    p_component: float = 0.15
    p_rotate: float = 0.3
    max_degrees: float = 15.0
    round_weights: tuple[float, ...] = (0.2, 0.2, 0.2, 0.2, 0.2)
    """Probability of 0, 1, ... correction rounds before the trained one."""
    p_turns: float = 0.0
    """Share of the correction rounds of a points sample (no box) whose click follows the
    points user (:func:`.prompts.turn_click`: foreground or background drawn 50/50, not
    from the largest error), as 3D Slicer's "3 inside, then 3 outside" user clicks."""
    p_first_click: float = 0.0
    """Share of each batch's samples drawn as a first click (one foreground click, the
    crop a session makes around it; :meth:`.data.Sampler.first_click_sample`) and trained
    on their first prediction whatever the batch's rounds, so that one click stays learnt
    while the other weights and rounds are free (the tenth and eleventh schedules
    unlearnt one click into a large organ when it was only a weight over all rounds)."""
    first_click_dataset: str = ""
    """The dataset of the first-click samples; empty: any, drawn by ``dataset_weights``
    (the thirteenth schedule's ``synthetic_large`` alone taught "one click, a large object"
    everywhere: the spinal cord's first point fell to 2 % on val)."""
    fine_grid_share: float = 0.0
    """Share of batches drawn on the finer grid the method gives a large ROI (one network
    factor finer per axis, :meth:`.method.GeneralistMethod.grid_for`)."""
    batch_size: int = 4
    iterations: int = 10000
    lr: float = 1e-3
    min_lr: float = 2e-5
    warmup: int = 200
    weight_decay: float = 1e-3
    grad_clip: float = 1.0
    checkpoint_every: int = 200
    snapshot_every: int = 0
    """Every this many iterations from ``snapshot_from`` on (0: never), the weights are also
    kept as ``snapshot_<iteration>.pt``, for a mean of the weights along the run (stochastic
    weight averaging, Izmailov et al., UAI 2018; ``benchmarks/weight_soup.py``)."""
    snapshot_from: int = 0
    val_every: int = 1000
    log_every: int = 25
    seed: int = 0
    threads: int = 1
    cache_dir: str = "~/.cache/mecca-generalist"
    init_from: str = ""
    """Weights that start a new run (no optimiser state, iteration 0): a shipped bundle's
    name (``generalist``), a bundle or run folder, or a checkpoint. How a later session
    continues training when the earlier run folder is gone (only the bundle is kept)."""

    def __post_init__(self) -> None:
        if len(self.grid) != 3:
            raise ConfigError(f"grid needs 3 sizes, got {self.grid}")
        if self.batch_size < 1 or self.iterations < 1:
            raise ConfigError("batch_size and iterations must be >= 1")
        if not math.isclose(sum(self.round_weights), 1.0, abs_tol=1e-6):
            raise ConfigError(f"round_weights must sum to 1, got {self.round_weights}")
        if not 0.0 <= self.p_turns <= 1.0:
            raise ConfigError(f"p_turns must be in [0, 1], got {self.p_turns}")
        if not 0.0 <= self.p_first_click <= 1.0:
            raise ConfigError(f"p_first_click must be in [0, 1], got {self.p_first_click}")
        if not 0.0 <= self.fine_grid_share <= 1.0:
            raise ConfigError(f"fine_grid_share must be in [0, 1], got {self.fine_grid_share}")
        if self.snapshot_every < 0 or self.snapshot_from < 0:
            raise ConfigError("snapshot_every and snapshot_from must be >= 0")
        if not 0.0 <= self.p_loose_box <= 1.0 or self.loose_box_slack < 0:
            raise ConfigError(
                "p_loose_box must be in [0, 1] and loose_box_slack >= 0, got "
                f"{self.p_loose_box}, {self.loose_box_slack}"
            )

    @property
    def grid3(self) -> tuple[int, int, int]:
        return (int(self.grid[0]), int(self.grid[1]), int(self.grid[2]))

    @property
    def fine_grid(self) -> tuple[int, int, int]:
        """The finer grid: one network factor more per axis (as the method's max_grid)."""
        f = self.net_config().factor
        return (self.grid3[0] + f, self.grid3[1] + f, self.grid3[2] + f)

    def net_config(self) -> GeneralistNetConfig:
        return GeneralistNetConfig(
            widths=self.widths,
            blocks=self.blocks,
            fine=self.fine,
            fine_kernel=self.fine_kernel,
            norm=self.norm,
        )

    def sampler_config(self) -> SamplerConfig:
        return SamplerConfig(
            grid=self.grid3,
            p_box=self.p_box,
            p_roi_box=self.p_roi_box,
            p_slice_box=self.p_slice_box,
            slice_box_encoding=self.slice_box_encoding,
            p_click_roi=self.p_click_roi,
            p_loose_box=self.p_loose_box,
            loose_box_slack=self.loose_box_slack,
            box_min_extent=self.box_min_extent,
            p_init=self.p_init,
            p_component=self.p_component,
            p_rotate=self.p_rotate,
            max_degrees=self.max_degrees,
            dataset_weights=dict(self.dataset_weights),
        )


# --------------------------------------------------------------------------- loss, schedule


def dice_bce(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Soft Dice loss (per sample, averaged) plus BCE, against a soft target in [0, 1]."""
    prob = torch.sigmoid(logits)
    dims = (1, 2, 3, 4)
    inter = (prob * target).sum(dims)
    dice = 1 - (2 * inter + 1) / (prob.sum(dims) + target.sum(dims) + 1)
    bce = F.binary_cross_entropy_with_logits(logits, target)
    loss = dice.mean() + bce
    return loss, {"dice_loss": float(dice.mean().detach()), "bce": float(bce.detach())}


def learning_rate(cfg: GeneralistConfig, iteration: int) -> float:
    """Linear warmup, then cosine from ``lr`` to ``min_lr`` at ``iterations``."""
    if iteration < cfg.warmup:
        return cfg.lr * (iteration + 1) / cfg.warmup
    t = min(1.0, (iteration - cfg.warmup) / max(1, cfg.iterations - cfg.warmup))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * t))


# --------------------------------------------------------------------------- one iteration


def _batch(samples: Sequence[Any], device: torch.device) -> tuple[np.ndarray, torch.Tensor]:
    """(B, 5, I, J, K) numpy channels and the (B, 1, I, J, K) soft target on ``device``."""
    x = np.stack([np.stack([s.image, s.prev, s.fg, s.bg, s.box]) for s in samples])
    t = np.stack([s.target for s in samples])[:, None]
    return x.astype(np.float32), torch.from_numpy(t).to(device)


def _to_device(x: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).to(device)


POINTS_MODES = frozenset({"points", "click_roi"})
"""The sampler's prompt modes without a box."""


def correction_round(
    net: GeneralistNet,
    x: np.ndarray,
    gts: np.ndarray,
    device: torch.device,
    rng: np.random.Generator,
    turns: Sequence[bool] | None = None,
) -> np.ndarray:
    """One simulated correction round: predict (no gradient), put the probability in the
    previous-probability channel and each sample's clicks from its errors in the maps
    (a :func:`.prompts.turn_click` of a kind drawn 50/50 where ``turns[b]``)."""
    with torch.no_grad():
        prob = torch.sigmoid(net(_to_device(x, device)))[:, 0].float().cpu().numpy()
    x = x.copy()
    x[:, 1] = prob
    for b in range(len(x)):
        pred = prob[b] > 0.5
        if turns is not None and turns[b]:
            click = turn_click(pred, gts[b], FG if rng.random() < 0.5 else BG)
            clicks = [] if click is None else [click]
        else:
            clicks = error_clicks(pred, gts[b], rng)
        add_clicks(x[b, 2], x[b, 3], clicks)
    return x


def train_step(
    net: GeneralistNet,
    opt: torch.optim.Optimizer,
    samples: Sequence[Any],
    rounds: int,
    cfg: GeneralistConfig,
    device: torch.device,
    rng: np.random.Generator,
) -> dict[str, float]:
    """One iteration on a batch: ``rounds`` correction rounds, then a gradient step
    (``first_click`` samples keep their first prompt: they are trained on no round)."""
    x, target = _batch(samples, device)
    first = x.copy()
    gts = np.stack([s.target > 0.5 for s in samples])
    for _ in range(rounds):
        turns = [s.mode in POINTS_MODES and rng.random() < cfg.p_turns for s in samples]
        x = correction_round(net, x, gts, device, rng, turns)
    keep = np.array([s.mode == "first_click" for s in samples])
    if rounds and keep.any():
        x[keep] = first[keep]
    logits = net(_to_device(x, device))
    loss, parts = dice_bce(logits.float(), target)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
    opt.step()
    return {"loss": float(loss.detach()), **parts}


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True, eq=False)
class ValItem:
    """One validation episode: the ROI's image and truth (the whole truth lies in it)."""

    group: str
    case_id: str
    target: str
    image: np.ndarray
    gt: np.ndarray
    box: Box
    """The truth's box in ROI coordinates."""


def _val_item(group: str, case_id: str, target: str, image: np.ndarray, gt: np.ndarray) -> ValItem:
    box = Box.from_mask(gt)
    roi, _ = box_prompt(box, gt.shape)
    sub = image[roi.slices].astype(np.float32)
    inner = Box(tuple(np.subtract(box.start, roi.start)), tuple(np.subtract(box.stop, roi.start)))
    return ValItem(group, case_id, target, sub, gt[roi.slices].copy(), inner)


def val_items(cfg: GeneralistConfig) -> list[ValItem]:
    """First ``val_cases`` val-split cases per dataset and target that have the target."""
    held = HeldOut(cfg.held_out)
    items: list[ValItem] = []
    for root in cfg.datasets:
        ds = open_dataset(Path(root).expanduser())
        if cfg.val_split not in ds.splits or not ds.targets:
            continue
        for target in case_targets(ds, ""):
            group = f"unseen:{ds.name}" if held.target(ds.name, target) else ds.name
            found = 0
            for case in ds.cases(cfg.val_split):
                if found >= cfg.val_cases:
                    break
                try:
                    image, gt = ds.load_case(case, target)
                except InputError:
                    continue
                if gt.sum() < MIN_TARGET_VOXELS:
                    continue
                items.append(_val_item(group, case.case_id, target, image.array, gt))
                found += 1
    return items


def _to_grid(crop: Any, positions: Sequence[Sequence[int]]) -> list[tuple[int, int, int]]:
    pts = np.rint(crop.to_grid(np.asarray(positions, np.float64))).astype(int)
    pts = np.clip(pts, 0, np.asarray(crop.grid) - 1)
    return [(int(p[0]), int(p[1]), int(p[2])) for p in pts]


def _dice(pred: np.ndarray, gt: np.ndarray) -> float:
    denom = int(pred.sum()) + int(gt.sum())
    return 1.0 if denom == 0 else 2.0 * int((pred & gt).sum()) / denom


def run_val_episode(method: GeneralistMethod, item: ValItem, steps: int) -> list[float]:
    """Dice after the box, then after each of ``steps`` CVPR 2025 clicks (original grid)."""
    crop = make_crop(item.image, Box((0, 0, 0), item.gt.shape), method.grid_for(item.gt.shape))
    last = (item.box.stop[0] - 1, item.box.stop[1] - 1, item.box.stop[2] - 1)
    corners = _to_grid(crop, [item.box.start, last])
    state = method.start(crop)
    rng = np.random.default_rng(0)
    clicks = [Click(InteractionKind.BOX, corners[0]), Click(InteractionKind.BOX, corners[1])]
    dices = []
    for _ in range(steps + 1):
        state, result = method.step(state, clicks, rng=rng)
        pred = prob_to_box(crop, result.prob) > 0.5
        dices.append(_dice(pred, item.gt))
        click = distance_click(pred, item.gt)
        clicks = [] if click is None else [Click(click.kind, _to_grid(crop, [click.position])[0])]
    return dices


def validate(method: GeneralistMethod, items: Sequence[ValItem], steps: int) -> dict[str, Any]:
    """Mean Dice per step per group, and the score (mean final Dice over seen groups)."""
    per: dict[str, list[list[float]]] = {}
    for item in items:
        per.setdefault(item.group, []).append(run_val_episode(method, item, steps))
    means = {g: [round(float(v), 4) for v in np.mean(rows, axis=0)] for g, rows in per.items()}
    groups = {g: {"dice_per_step": means[g], "n": len(per[g])} for g in sorted(per)}
    seen = [d[-1] for g, d in means.items() if not g.startswith("unseen:")]
    return {"groups": groups, "score": float(np.mean(seen)) if seen else 0.0}


# --------------------------------------------------------------------------- checkpoints


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    st = rng.bit_generator.state
    return {
        "bit_generator": st["bit_generator"],
        "state": dict(st["state"]),
        "has_uint32": st["has_uint32"],
        "uinteger": st["uinteger"],
    }


def _restore_rng(state: dict[str, Any]) -> np.random.Generator:
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    return rng


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write a checkpoint atomically (a kill leaves the old file or the new one)."""
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint of this trainer (plain data: ``weights_only=True``)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged files
        raise InputError(f"cannot read checkpoint ({err.__class__.__name__})", path=path) from err
    if not isinstance(data, dict) or data.get("kind") != "generalist":
        raise InputError("not a generalist checkpoint", path=path)
    return data


@dataclass
class RunState:
    """What a run carries between iterations (and checkpoints)."""

    iteration: int
    rng: np.random.Generator
    best: float = -1.0
    best_iteration: int = -1


def _payload(
    cfg: GeneralistConfig, net: GeneralistNet, opt: torch.optim.Optimizer, st: RunState
) -> dict[str, Any]:
    return {
        "kind": "generalist",
        "method": "generalist",
        "config": config_to_dict(cfg),
        "net_config": cfg.net_config().to_dict(),
        "grid": list(cfg.grid3),
        "net": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "optimizer": opt.state_dict(),
        "iteration": st.iteration,
        "rng": _rng_state(st.rng),
        "torch_rng": torch.get_rng_state(),
        "best": st.best,
        "best_iteration": st.best_iteration,
    }


# --------------------------------------------------------------------------- the run


class _Stop:
    """Set by SIGTERM / SIGINT; the loop checkpoints and leaves after the iteration."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: Any) -> None:
        self.requested = True
        log.warning("signal %d: checkpointing after this iteration", signum)


def _append(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _setup(
    cfg: GeneralistConfig, out: Path, resume: bool, device: torch.device
) -> tuple[GeneralistNet, torch.optim.Optimizer, RunState]:
    """Network, optimizer and run state: fresh, or from ``out/last.pt``."""
    net = GeneralistNet(cfg.net_config()).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    last = out / "last.pt"
    if not last.is_file():
        if resume:
            raise InputError("nothing to resume: no last.pt", path=out)
        torch.manual_seed(cfg.seed)
        if cfg.init_from:
            _start_from(net, cfg)
        return net, opt, RunState(0, np.random.default_rng(cfg.seed))
    data = load_checkpoint(last)
    if data["net_config"] != cfg.net_config().to_dict() or data["grid"] != list(cfg.grid3):
        raise ConfigError(
            "the network or grid of the config differs from the checkpoint's",
            path=last,
            hint="resume with the run's own config or train into a new --out folder",
        )
    net.load_state_dict(data["net"])
    opt.load_state_dict(data["optimizer"])
    torch.set_rng_state(data["torch_rng"])
    st = RunState(
        int(data["iteration"]),
        _restore_rng(data["rng"]),
        float(data["best"]),
        int(data["best_iteration"]),
    )
    log.info("resuming from %s at iteration %d", last, st.iteration)
    return net, opt, st


def _start_from(net: GeneralistNet, cfg: GeneralistConfig) -> None:
    """Load ``cfg.init_from``'s weights into ``net`` (same network and grid, else refused)."""
    source: str | Path = cfg.init_from
    if not Path(cfg.init_from).expanduser().exists():
        source = resolve_bundle(cfg.init_from)  # a shipped bundle's name
    start, grid = load_weights(source)
    if list(grid) != list(cfg.grid3) or not deepens(start.config, net.config):
        raise ConfigError(
            f"init_from {cfg.init_from!r} holds another network or grid than the config's",
            hint="use the config the weights were trained with (or one with more blocks)",
        )
    added = deepen_from(net, start)
    log.info("weights from %s (%d blocks added)", cfg.init_from, added)


def deepens(small: GeneralistNetConfig, large: GeneralistNetConfig) -> bool:
    """Whether ``large`` is ``small`` or ``small`` with more encoder blocks at some levels."""
    a, b = small.to_dict(), large.to_dict()
    same = all(a[k] == b[k] for k in a if k != "blocks")
    return same and all(m >= n for n, m in zip(a["blocks"], b["blocks"], strict=True))


def deepen_from(net: GeneralistNet, start: GeneralistNet) -> int:
    """Copy ``start``'s weights into ``net`` (the same network or a deeper one,
    :func:`deepens`); each added residual block starts with its last norm's scale and
    shift at 0, so that it passes its input on (up to its final leaky ReLU) and the deeper
    network starts as the trained one. Returns the number of blocks added."""
    own, given = net.state_dict(), start.state_dict()
    missing, unexpected = net.load_state_dict(given, strict=False)
    if unexpected:
        raise ConfigError(f"weights the network has no place for: {unexpected[:3]}")
    blocks = sorted({k.rsplit(".", 2)[0] for k in missing})
    with torch.no_grad():
        for block in blocks:
            own[f"{block}.norm2.weight"].zero_()
            own[f"{block}.norm2.bias"].zero_()
    return len(blocks)


def _validate_and_keep(
    cfg: GeneralistConfig,
    net: GeneralistNet,
    opt: torch.optim.Optimizer,
    st: RunState,
    items: Sequence[ValItem],
    out: Path,
    device: torch.device,
) -> None:
    t0 = time.perf_counter()
    net.eval()
    # as every schedule validated: the network once, every click's change kept
    method = GeneralistMethod(net, cfg.grid3, local=False, flips=(), device=device)
    result = validate(method, items, cfg.val_steps)
    net.train()
    record = {
        "type": "val",
        "iteration": st.iteration,
        **result,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    _append(out / "log.jsonl", record)
    log.info("val at %d: score %.4f (%.0f s)", st.iteration, result["score"], record["seconds"])
    if result["score"] > st.best:
        st.best, st.best_iteration = result["score"], st.iteration
        save_checkpoint(out / "best.pt", _payload(cfg, net, opt, st))


def _start_record(
    cfg: GeneralistConfig,
    sampler: Sampler,
    index: Path,
    device: torch.device,
    net: GeneralistNet,
    st: RunState,
) -> dict[str, Any]:
    return {
        "type": "start",
        "iteration": st.iteration,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.node(),
        "parameters": count_parameters(net),
        "cache": str(index),
        "data": sampler.summary(),
        "config": config_to_dict(cfg),
    }


def train(cfg: GeneralistConfig, out: str | Path, *, resume: bool = False) -> Path:
    """Run (or resume) training into ``out``; returns the run folder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = _device()
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    index = build_cache(
        cfg.datasets,
        cfg.cache_dir,
        held_out=HeldOut(cfg.held_out),
        split=cfg.train_split,
        synthetic=cfg.synthetic_volumes,
        seed=cfg.seed,
        large_synthetic=cfg.large_synthetic_volumes,
        organ_only=cfg.large_synthetic_organ_only,
        organ_vessels=cfg.large_synthetic_vessels,
    )
    sampler = Sampler(index, cfg.sampler_config())
    net, opt, st = _setup(cfg, out, resume, device)
    if st.iteration >= cfg.iterations:
        log.info("the run is complete (%d iterations)", st.iteration)
        return out
    items = val_items(cfg)
    _append(out / "log.jsonl", _start_record(cfg, sampler, index, device, net, st))
    stop = _Stop()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        _loop(cfg, net, opt, st, sampler, items, out, device, stop)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return out


def _loop(
    cfg: GeneralistConfig,
    net: GeneralistNet,
    opt: torch.optim.Optimizer,
    st: RunState,
    sampler: Sampler,
    items: Sequence[ValItem],
    out: Path,
    device: torch.device,
    stop: _Stop,
) -> None:
    net.train()
    window: list[dict[str, float]] = []
    t_window, t_data = time.perf_counter(), 0.0
    while st.iteration < cfg.iterations and not stop.requested:
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, st.iteration)
        t0 = time.perf_counter()
        fine = cfg.fine_grid_share > 0 and st.rng.random() < cfg.fine_grid_share
        grid = cfg.fine_grid if fine else cfg.grid3
        samples = [_draw(sampler, st.rng, grid, cfg) for _ in range(cfg.batch_size)]
        t_data += time.perf_counter() - t0
        rounds = int(st.rng.choice(len(cfg.round_weights), p=cfg.round_weights))
        window.append(
            {**train_step(net, opt, samples, rounds, cfg, device, st.rng), "rounds": rounds}
        )
        st.iteration += 1
        if st.iteration % cfg.log_every == 0:
            seconds = time.perf_counter() - t_window
            _append(
                out / "log.jsonl",
                _train_record(
                    st.iteration, window, seconds, t_data, learning_rate(cfg, st.iteration - 1)
                ),
            )
            window, t_window, t_data = [], time.perf_counter(), 0.0
        if st.iteration % cfg.checkpoint_every == 0:
            save_checkpoint(out / "last.pt", _payload(cfg, net, opt, st))
        if snapshot_due(cfg, st.iteration):
            save_checkpoint(out / f"snapshot_{st.iteration:06d}.pt", _payload(cfg, net, opt, st))
        if st.iteration % cfg.val_every == 0 or st.iteration == cfg.iterations:
            _validate_and_keep(cfg, net, opt, st, items, out, device)
            t_window = time.perf_counter()
    save_checkpoint(out / "last.pt", _payload(cfg, net, opt, st))
    log.info("stopped at iteration %d", st.iteration)


def snapshot_due(cfg: GeneralistConfig, iteration: int) -> bool:
    """Whether the weights after ``iteration`` are kept as a snapshot (``snapshot_every``)."""
    every = cfg.snapshot_every
    return every > 0 and iteration >= cfg.snapshot_from and iteration % every == 0


def _draw(sampler: Sampler, rng: np.random.Generator, grid: Int3, cfg: GeneralistConfig) -> Sample:
    """One sample of a batch: a first click (a share ``p_first_click``) or the sampler's."""
    if cfg.p_first_click > 0 and rng.random() < cfg.p_first_click:
        return sampler.first_click_sample(rng, cfg.first_click_dataset or None, grid)
    return sampler.sample(rng, grid)


def _train_record(
    iteration: int,
    window: list[dict[str, float]],
    seconds: float,
    data_seconds: float,
    lr: float,
) -> dict[str, Any]:
    n = len(window)
    mean = {k: round(float(np.mean([w[k] for w in window])), 5) for k in window[0]}
    return {
        "type": "train",
        "iteration": iteration,
        **mean,
        "lr": lr,
        "seconds": round(seconds, 2),
        "it_per_s": round(n / max(seconds, 1e-9), 3),
        "data_seconds": round(data_seconds, 2),
    }


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``--config``, ``--out``, ``--resume``, ``--set key=value``."""
    parser = argparse.ArgumentParser(
        prog="python -m mecca.methods.generalist.train", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="require a checkpoint to resume (resuming is automatic anyway)",
    )
    parser.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override config settings, e.g. iterations=20000 (repeat --set or list several)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        cfg = load_config(
            GeneralistConfig, args.config, parse_overrides(args.set), drop=("method",)
        )
        train(cfg, args.out, resume=args.resume)
    except MeccaError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
