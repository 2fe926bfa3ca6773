"""Training the supervised baselines of the MECCA paper's tables: P-Net, U-Net, InterCNN,
DeepIGeoS (SPEC Sec. 6), on the same crops and splits as the RL methods.

Every training step draws ``batch_size`` augmented ROI crops on the network grid
(:func:`mecca.training_data.sample_crops`, the RL runs' sampler) and takes one Adam step
on soft Dice + binary cross-entropy (with logits) of the foreground logit:

* ``pnet``, ``unet``: image -> segmentation, one loss.
* ``intercnn`` (Bredell et al. 2018): ``rounds + 1`` unrolled passes of one network on
  ``[image, previous prediction (binary), fg Gaussian map, bg Gaussian map]``. Pass 0 sees
  an empty prediction and no clicks, so InterCNN is its own initial segmenter (our choice:
  no separate segmenter to train or ship, and its first-round errors are the ones it
  later corrects); before each later pass the simulated user (``error_centre``: fg/bg
  clicks at the centres of the largest errors) clicks on the previous pass's prediction,
  clicks accumulate, and the prediction is fed back detached (no gradient through the
  loop, as with ``torch.no_grad``). The loss is averaged over all passes.
* ``uamt`` (Yu et al. 2019, :mod:`mecca.uamt`): a P-Net or U-Net student on the labeled
  crops' loss plus an uncertainty-masked consistency with its mean teacher on as many
  unlabeled crops per step; the semi-supervised baseline of MECCA's Table 3.
* ``deepigeos`` (Wang et al. 2019): the P-Net gives the initial segmentation, then
  ``rounds`` passes of the R-Net (a P-Net with 4 input channels) on ``[image, previous
  prediction (binary), fg geodesic map, bg geodesic map]`` with clicks on the previous
  prediction's errors, as for InterCNN. With ``initial`` (a trained ``pnet`` run or
  bundle) that P-Net is copied in and frozen (eval mode, the errors R-Net sees are the
  ones it will see); without, the P-Net trains jointly on its own loss and the R-Net on
  its current predictions. The optional CRF of DeepIGeoS is not built.

``labeled_fraction`` below 1 trains on that share of the training cases only (the same
cases as a MECCA or IteR-MRL run with the same seed and fraction,
:func:`mecca.rl.semisup.run_split`); UA-MT also draws its unlabeled crops from the rest.

A run folder holds ``config.yaml``, ``log.jsonl`` (a ``start`` line, one ``train`` line per
step with the loss and the training Dice of each pass, one ``val`` line per validation),
``last.pt`` (every ``checkpoint_every`` steps, at the end and on Ctrl-C / SIGTERM) and
``best.pt`` (best validation Dice). Checkpoints hold the config and network configs as
plain data (``torch.load(weights_only=True)`` reads them), every network's weights, the
Adam state, the numpy generator's state and the step, so ``resume=True`` continues
exactly. Validation: mean Dice on the original grid over the first ``val_cases`` cases
of the val split, each with a fixed seeded ROI and user, after 1 step for the
segmenters and after ``val_rounds`` simulated rounds (:func:`mecca.episode.run_episode`)
for InterCNN and DeepIGeoS. Single process only (no DDP).
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from torch import nn

from mecca import __version__, uamt
from mecca.checkpoint import load_checkpoint, restore_rng, rng_state, save_checkpoint
from mecca.config import config_to_dict
from mecca.data.roi import NormaliseConfig, random_margin_box
from mecca.episode import run_episode
from mecca.errors import ConfigError, InputError, OverwriteError
from mecca.interaction.clicks import USERS, SimulatedUser, make_user
from mecca.interaction.hints import HintEncoder
from mecca.io import atomic_write
from mecca.methods.supervised import (
    REFINERS,
    SEGMENTERS,
    SegmenterMethod,
    SupervisedMethod,
    hint_encoder,
    load_supervised,
    method_from_nets,
    nets_from_payload,
)
from mecca.nets.segnet import SegNetConfig, build_segnet
from mecca.rl.semisup import run_split
from mecca.runtime import resolve_device, stop_on_signals
from mecca.training_data import HeldCase, load_cases, sample_crops

__all__ = [
    "SupervisedConfig",
    "export_supervised",
    "load_supervised",
    "seg_loss",
    "train_supervised",
]

log = logging.getLogger(__name__)

SupervisedKind = Literal["pnet", "unet", "uamt", "intercnn", "deepigeos"]
METHODS: tuple[str, ...] = SEGMENTERS + REFINERS
SEGMENTER_NETS = ("pnet", "unet")
"""The networks a segmenter can be (UA-MT's ``backbone``)."""


@dataclass(frozen=True)
class SupervisedConfig:
    """Every setting of a supervised-baseline run (YAML / ``key=value`` via
    :func:`mecca.config.load_config`)."""

    method: SupervisedKind = "pnet"
    """``pnet``, ``unet``, ``uamt`` (no hints), ``intercnn`` or ``deepigeos`` (fg/bg
    clicks)."""
    target: str | None = None
    """Named target of the dataset (None = its default target)."""
    train_split: str = "train"
    """Split of ``splits.json`` to train on (all cases when the dataset has no splits)."""
    val_split: str = "val"
    """Split used for validation Dice."""
    grid: tuple[int, int, int] = (55, 55, 30)
    """Network grid (i, j, k); the U-Net pads it to multiples of 8 internally."""
    width: int = 8
    """Feature channels of every P-Net / R-Net block; the U-Net's first level."""
    batch_size: int = 2
    """Crops per training step."""
    steps: int = 2000
    """Training steps (Adam updates) in all; the one setting a resume may change."""
    lr: float = 1e-3
    """Adam learning rate."""
    rounds: int = 2
    """InterCNN / DeepIGeoS: simulated click rounds per training batch (after the
    initial prediction), each a refinement pass with a loss."""
    user: str = "error_centre"
    """Simulated user of the click rounds (training and validation)."""
    labeled_fraction: float = 1.0
    """Share of the training cases used with their labels (MECCA Table 3); UA-MT uses the
    others without."""
    backbone: Literal["pnet", "unet"] = "pnet"
    """UA-MT only: the student's and teacher's network."""
    ema_decay: float = 0.99
    """UA-MT only: the teacher's moving-average decay."""
    consistency: float = 0.1
    """UA-MT only: weight of the consistency loss at the end of its ramp-up."""
    uncertainty_passes: int = 8
    """UA-MT only: noisy teacher passes that estimate the uncertainty."""
    noise: float = 0.1
    """UA-MT only: std of the Gaussian input noise of the teacher (clipped at 2 std)."""
    initial: str | None = None
    """DeepIGeoS only: a trained ``pnet`` run folder or bundle to use (frozen) as the
    initial segmenter; None = train the P-Net jointly."""
    augment: bool = True
    """Random flips and small in-plane rotations of the training crops."""
    checkpoint_every: int = 25
    """Steps between ``last.pt`` checkpoints (0 = only at the end)."""
    val_every: int = 100
    """Steps between validations (0 = never)."""
    val_cases: int = 8
    """Validation cases used (the first of the split)."""
    val_rounds: int = 3
    """Simulated rounds of a validation episode (InterCNN, DeepIGeoS)."""
    max_cases: int | None = None
    """Use only the first N training cases (smoke tests)."""
    seed: int = 0
    """Seed of the initial weights and of every random choice in the run."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(
                f"unknown supervised method {self.method!r}", hint=f"choose one of {METHODS}"
            )
        grid = tuple(self.grid)
        if len(grid) != 3 or not all(isinstance(g, int) and g >= 1 for g in grid):
            raise ConfigError(
                f"grid must be three positive integers (i, j, k), got {self.grid!r}",
                hint="e.g. grid: [55, 55, 30]",
            )
        object.__setattr__(self, "grid", grid)
        for name, low in (
            ("width", 1),
            ("batch_size", 1),
            ("rounds", 1),
            ("val_cases", 1),
            ("val_rounds", 1),
            ("uncertainty_passes", 1),
            ("steps", 0),
            ("checkpoint_every", 0),
            ("val_every", 0),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        self._check_semi_supervised()
        if self.user not in USERS:
            raise ConfigError(f"unknown simulated user {self.user!r}", hint=f"one of {list(USERS)}")
        if self.initial is not None and self.method != "deepigeos":
            raise ConfigError("'initial' (a trained P-Net) is a DeepIGeoS setting only")

    def _check_semi_supervised(self) -> None:
        """The labeled fraction and UA-MT's settings."""
        if not 0.0 < self.labeled_fraction <= 1.0:
            raise ConfigError(
                f"labeled_fraction must lie in (0, 1], got {self.labeled_fraction}",
                hint="give 0.125 for 12.5 %",
            )
        if self.method == "uamt" and self.labeled_fraction == 1.0:
            raise ConfigError(
                "uamt learns from unlabeled cases: labeled_fraction must be below 1",
                hint="e.g. --labeled-fraction 0.25",
            )
        if self.backbone not in SEGMENTER_NETS:
            raise ConfigError(f"backbone must be one of {SEGMENTER_NETS}, got {self.backbone!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.consistency < 0 or self.noise < 0:
            raise ConfigError("consistency and noise must be >= 0")


def seg_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss (per volume, averaged) + mean binary cross-entropy with logits.

    ``logits`` and ``target`` are (B, 1, I, J, K); ``target`` float in {0, 1}. ``eps``
    smooths the Dice ratio (an empty target with an empty prediction costs 0).
    """
    prob = torch.sigmoid(logits)
    dims = tuple(range(1, logits.ndim))
    inter = (prob * target).sum(dims)
    total = prob.sum(dims) + target.sum(dims)
    dice = 1.0 - (2.0 * inter + eps) / (total + eps)
    bce = nn.functional.binary_cross_entropy_with_logits(logits, target)
    return dice.mean() + bce


def _dice(prob: torch.Tensor, target: torch.Tensor) -> float:
    pred = prob > 0.5
    lab = target > 0.5
    total = int(pred.sum().item() + lab.sum().item())
    return 1.0 if total == 0 else 2.0 * float((pred & lab).sum().item()) / total


@dataclass
class Models:
    """The networks of a run (by role), which of them train, and their Adam optimiser."""

    nets: dict[str, nn.Module]
    trainable: tuple[str, ...]
    optimiser: torch.optim.Optimizer
    frozen: tuple[str, ...] = field(default=())

    def train(self) -> None:
        for key in self.trainable:
            self.nets[key].train()
        for key in self.frozen:
            self.nets[key].eval()


def net_configs(cfg: SupervisedConfig) -> dict[str, SegNetConfig]:
    """The networks each method trains, by role."""
    w = cfg.width
    if cfg.method == "pnet":
        return {"pnet": SegNetConfig("pnet", 1, w)}
    if cfg.method == "unet":
        return {"unet": SegNetConfig("unet", 1, w)}
    if cfg.method == "uamt":
        return {role: SegNetConfig(cfg.backbone, 1, w) for role in ("student", "teacher")}
    if cfg.method == "intercnn":
        return {"intercnn": SegNetConfig("pnet", 4, w)}
    return {"pnet": SegNetConfig("pnet", 1, w), "rnet": SegNetConfig("pnet", 4, w)}


def build_models(
    cfg: SupervisedConfig, device: torch.device, payload: dict[str, Any] | None = None
) -> Models:
    """Fresh networks (Xavier init from the seed), or those of a checkpoint ``payload``."""
    frozen: tuple[str, ...] = ()
    if payload is not None:
        nets = nets_from_payload(payload)
        frozen = tuple(payload.get("frozen", ()))
    else:
        torch.manual_seed(cfg.seed)
        nets = {key: build_segnet(c) for key, c in net_configs(cfg).items()}
        if cfg.initial is not None:
            given = load_supervised(cfg.initial, method="pnet")
            assert isinstance(given, SegmenterMethod)
            nets["pnet"] = given.net
            frozen = ("pnet",)
        if cfg.method == "uamt":  # the mean teacher: no gradient, eval mode, EMA weights
            nets["teacher"].load_state_dict(nets["student"].state_dict())
            frozen = ("teacher",)
    for net in nets.values():
        net.to(device)
    for key in frozen:
        nets[key].requires_grad_(False)
    trainable = tuple(k for k in nets if k not in frozen)
    params = [p for k in trainable for p in nets[k].parameters()]
    optimiser = torch.optim.Adam(params, lr=cfg.lr)
    if payload is not None:
        optimiser.load_state_dict(payload["optimiser"])
    models = Models(nets, trainable, optimiser, frozen)
    models.train()
    return models


@dataclass
class _Passes:
    """Accumulates the loss of each forward pass of a training step (mean over passes)."""

    target: torch.Tensor
    n: int
    losses: list[float] = field(default_factory=list)
    dice: list[float] = field(default_factory=list)

    def add(self, logits: torch.Tensor) -> torch.Tensor:
        """Backpropagate this pass's share of the loss; the detached probability."""
        loss = seg_loss(logits, self.target)
        (loss / self.n).backward()
        prob = torch.sigmoid(logits.detach())
        self.losses.append(float(loss.item()))
        self.dice.append(_dice(prob, self.target))
        return prob


def _refiner_batch(images: np.ndarray, prob: torch.Tensor, hints: list[np.ndarray]) -> torch.Tensor:
    """(B, 4, I, J, K): image, binary prediction, fg and bg maps of every crop."""
    binary = (prob[:, 0] > 0.5).float().cpu().numpy()
    stacked = np.concatenate([images[:, None], binary[:, None], np.stack(hints)], axis=1)
    return torch.from_numpy(stacked.astype(np.float32, copy=False))


def _click_round(
    user: SimulatedUser,
    encoder: HintEncoder,
    images: np.ndarray,
    labels: np.ndarray,
    prob: torch.Tensor,
    hints: list[np.ndarray],
    round_: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """The user clicks on each crop's current mask; the hint maps with those clicks added."""
    pred = (prob[:, 0] > 0.5).cpu().numpy()
    out = []
    for b in range(len(images)):
        clicks = user(pred[b], labels[b], step=round_, rng=rng)
        out.append(encoder.update(hints[b], images[b], clicks))
    return out


def train_step(
    models: Models,
    images: np.ndarray,
    labels: np.ndarray,
    cfg: SupervisedConfig,
    rng: np.random.Generator,
    user: SimulatedUser,
    device: torch.device,
) -> tuple[float, list[float]]:
    """One Adam step on a batch of crops; (mean loss over passes, training Dice per pass)."""
    nets = models.nets
    x = torch.from_numpy(images)[:, None].to(device)
    y = torch.from_numpy(labels)[:, None].to(device).float()
    models.optimiser.zero_grad(set_to_none=True)
    if cfg.method in SEGMENTERS:
        passes = _Passes(y, 1)
        passes.add(nets[cfg.method](x))
    else:
        encoder = hint_encoder(cfg.method)
        hints = [encoder.empty(img) for img in images]
        if cfg.method == "intercnn":
            refiner = nets["intercnn"]
            passes = _Passes(y, cfg.rounds + 1)
            empty = torch.zeros_like(y)
            prob = passes.add(refiner(_refiner_batch(images, empty, hints).to(device)))
        else:
            refiner = nets["rnet"]
            if "pnet" in models.frozen:
                passes = _Passes(y, cfg.rounds)
                with torch.no_grad():
                    prob = torch.sigmoid(nets["pnet"](x))
            else:
                passes = _Passes(y, cfg.rounds + 1)
                prob = passes.add(nets["pnet"](x))
        for r in range(1, cfg.rounds + 1):
            hints = _click_round(user, encoder, images, labels, prob, hints, r, rng)
            prob = passes.add(refiner(_refiner_batch(images, prob, hints).to(device)))
    models.optimiser.step()
    return float(np.mean(passes.losses)), passes.dice


def uamt_step(
    models: Models,
    images: np.ndarray,
    labels: np.ndarray,
    unlabeled: np.ndarray,
    cfg: SupervisedConfig,
    rng: np.random.Generator,
    device: torch.device,
    step: int,
) -> tuple[float, list[float], dict[str, float]]:
    """One UA-MT step (:mod:`mecca.uamt`) on labeled crops and as many unlabeled ones;
    (total loss, training Dice of the labeled crops, the consistency terms for the log)."""
    student, teacher = models.nets["student"], models.nets["teacher"]
    progress = step / max(1, cfg.steps)
    x = torch.from_numpy(np.concatenate([images, unlabeled]))[:, None].to(device)
    y = torch.from_numpy(labels)[:, None].to(device).float()
    target, entropy = uamt.teacher_targets(
        teacher, unlabeled, passes=cfg.uncertainty_passes, noise=cfg.noise, rng=rng, device=device
    )
    models.optimiser.zero_grad(set_to_none=True)
    logits = student(x)
    n = len(images)
    supervised = seg_loss(logits[:n], y)
    threshold = uamt.uncertainty_threshold(progress)
    mse, kept = uamt.uncertain_mse(torch.sigmoid(logits[n:]), target, entropy, threshold)
    weight = cfg.consistency * uamt.sigmoid_rampup(progress)
    loss = supervised + weight * mse
    loss.backward()
    models.optimiser.step()
    uamt.ema_update(teacher, student, cfg.ema_decay, step)
    dice = _dice(torch.sigmoid(logits[:n].detach()), y)
    stats = {
        "supervised": float(supervised.item()),
        "consistency": float(mse.item()),
        "consistency_weight": weight,
        "certain_share": kept,
    }
    return float(loss.item()), [dice], stats


def current_method(models: Models, cfg: SupervisedConfig, device: torch.device) -> SupervisedMethod:
    """The networks as an ``InteractiveMethod`` (eval mode; call ``models.train()`` after)."""
    return method_from_nets(cfg.method, models.nets, cfg.grid, device)


def validate(
    method: SupervisedMethod, cfg: SupervisedConfig, cases: list[HeldCase]
) -> tuple[float, list[float]]:
    """(mean initial Dice, mean Dice per step) on the original grids of ``cases``.

    Each case's ROI and clicks come from a generator seeded by its position, so every
    validation of a run is comparable.
    """
    user = make_user(cfg.user)
    steps = 1 if cfg.method in SEGMENTERS else cfg.val_rounds
    per_step = np.zeros(steps)
    initial = 0.0
    for i, case in enumerate(cases):
        rng = np.random.default_rng([cfg.seed, 10_000 + i])
        box = random_margin_box(case.mask, rng)
        record = run_episode(
            method, case.image, case.mask, user, rng=rng, steps=steps, box=box, grid=cfg.grid
        )
        per_step += np.asarray(record.dice_per_step)
        initial += record.initial_dice
    n = max(1, len(cases))
    return initial / n, (per_step / n).tolist()


def _net_config(net: nn.Module) -> dict[str, Any]:
    """The plain-dict config of a segmentation network (:mod:`mecca.nets.segnet`)."""
    config = getattr(net, "config", None)
    if not isinstance(config, SegNetConfig):
        raise ConfigError(f"{type(net).__name__} is not a mecca segmentation network")
    return config.to_dict()


class SupervisedTrainer:
    """Runs (or resumes) one supervised-baseline run into ``out``; see the module docstring."""

    def __init__(
        self,
        cfg: SupervisedConfig,
        data: Path,
        out: Path,
        *,
        device: str = "auto",
        resume: bool = False,
        progress: bool = True,
    ):
        self.cfg = cfg
        self.data = Path(data)
        self.out = Path(out)
        self.device = resolve_device(device)
        self.progress = progress
        self._prepare_folder(resume)
        payload = None
        if resume and (self.out / "last.pt").exists():
            payload = load_checkpoint(self.out / "last.pt")
        self.models = build_models(cfg, self.device, payload)
        self.rng = np.random.default_rng([cfg.seed, 1])
        self.step = 0
        self.best = -1.0
        if payload is not None:
            self.rng = restore_rng(payload["rng"])
            self.step = int(payload["step"])
            self.best = float(payload["best"])
            log.info("resumed %s at step %d", self.out, self.step)

    def _prepare_folder(self, resume: bool) -> None:
        cfg_path = self.out / "config.yaml"
        mine = config_to_dict(self.cfg)
        if cfg_path.exists():
            if not resume:
                raise OverwriteError(
                    "run folder already holds a run",
                    path=self.out,
                    hint="pass --resume to continue it, or choose another --out",
                )
            saved = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
            diff = sorted(k for k in mine if k != "steps" and saved.get(k) != mine[k])
            if diff:
                raise ConfigError(
                    f"--resume with a different config (differs in {diff})",
                    path=cfg_path,
                    hint="resume with the saved config; only 'steps' may change",
                )
        self.out.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(mine, sort_keys=False)
        atomic_write(cfg_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def payload(self) -> dict[str, Any]:
        m = self.models
        return {
            "config": config_to_dict(self.cfg),
            "nets": {k: net.state_dict() for k, net in m.nets.items()},
            "net_configs": {k: _net_config(net) for k, net in m.nets.items()},
            "frozen": list(m.frozen),
            "optimiser": m.optimiser.state_dict(),
            "rng": rng_state(self.rng),
            "step": self.step,
            "best": self.best,
        }

    def save(self, name: str) -> None:
        save_checkpoint(self.out / name, self.payload())

    def _log(self, record: dict[str, Any]) -> None:
        with (self.out / "log.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def run(self) -> Path:
        """Train until ``steps``; returns the run folder."""
        from tqdm import tqdm

        cfg = self.cfg
        cases = load_cases(self.data, cfg.train_split, cfg.target, cfg.max_cases)
        train, unlabeled = run_split(cases, cfg.labeled_fraction, cfg.seed)
        if cfg.method == "uamt" and not unlabeled:
            raise InputError(
                f"uamt: no unlabeled cases left at labeled_fraction {cfg.labeled_fraction} of "
                f"{len(cases)} training cases",
                hint="lower labeled_fraction, or train pnet / unet on all the labels",
            )
        val = load_cases(self.data, cfg.val_split, cfg.target, cfg.val_cases)
        val = val if cfg.val_every else []
        if cfg.val_every and not val:
            log.warning("split %r has no cases: no validation, no best.pt", cfg.val_split)
        user = make_user(cfg.user)
        normalise = NormaliseConfig()
        self._log(
            {
                "type": "start",
                "step": self.step,
                "method": cfg.method,
                "labeled_cases": len(train),
                "unlabeled_cases": len(unlabeled) if cfg.method == "uamt" else 0,
                "device": str(self.device),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "machine": platform.machine(),
                "mecca": __version__,
            }
        )
        draw = partial(
            sample_crops,
            batch_size=cfg.batch_size,
            rng=self.rng,
            grid=cfg.grid,
            normalise=normalise,
            augment=cfg.augment,
        )
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not self.progress, unit="step")
        try:
            with stop_on_signals():
                while self.step < cfg.steps:
                    t0 = time.perf_counter()
                    batch = draw(train)
                    stats: dict[str, float] = {}
                    dev = self.device
                    if cfg.method == "uamt":
                        plain = draw(unlabeled)
                        loss, dice, stats = uamt_step(
                            self.models,
                            batch.images,
                            batch.labels,
                            plain.images,
                            cfg,
                            self.rng,
                            dev,
                            self.step,
                        )
                    else:
                        loss, dice = train_step(
                            self.models, batch.images, batch.labels, cfg, self.rng, user, dev
                        )
                    self.step += 1
                    self._after_step(loss, dice, time.perf_counter() - t0, val, stats)
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", dice=f"{dice[-1]:.3f}")
        except KeyboardInterrupt:
            log.warning("interrupted at step %d: saving last.pt", self.step)
            self.save("last.pt")
            raise
        finally:
            bar.close()
        self.save("last.pt")
        return self.out

    def _after_step(
        self,
        loss: float,
        dice: list[float],
        seconds: float,
        val: list[HeldCase],
        stats: dict[str, float],
    ) -> None:
        cfg = self.cfg
        self._log(
            {
                "type": "train",
                "step": self.step,
                "loss": loss,
                "dice_per_pass": [round(d, 4) for d in dice],
                "seconds": round(seconds, 3),
                **stats,
            }
        )
        if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
            self.save("last.pt")
        if val and self.step % cfg.val_every == 0:
            initial, per_step = validate(current_method(self.models, cfg, self.device), cfg, val)
            self.models.train()
            self._log(
                {
                    "type": "val",
                    "step": self.step,
                    "dice": per_step[-1],
                    "initial_dice": initial,
                    "dice_per_step": per_step,
                }
            )
            log.info("step %d: validation Dice %.4f", self.step, per_step[-1])
            if per_step[-1] > self.best:
                self.best = per_step[-1]
                self.save("best.pt")


def train_supervised(
    cfg: SupervisedConfig,
    data: Path,
    out: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    device: str = "auto",
) -> Path:
    """Train (or resume) a supervised baseline; returns the run folder."""
    trainer = SupervisedTrainer(cfg, data, out, device=device, resume=resume, progress=progress)
    return trainer.run()


def _summary(run: Path, step: int) -> dict[str, Any]:
    """The exported checkpoint's training record, read from the run's ``log.jsonl``."""
    path = run / "log.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    records = [json.loads(line) for line in lines if line]
    train = {r["step"]: r for r in records if r["type"] == "train" and r["step"] <= step}
    val = [r for r in records if r["type"] == "val" and r["step"] == step]
    starts = [r for r in records if r["type"] == "start"]
    seconds = [r["seconds"] for r in train.values()]
    return {
        "steps": step,
        "train_seconds": round(sum(seconds), 1),
        "seconds_per_step_median": round(float(np.median(seconds)), 3) if seconds else None,
        "validation_dice": val[-1]["dice"] if val else None,
        "validation_dice_per_step": val[-1]["dice_per_step"] if val else None,
        "validation_by_step": [
            [int(r["step"]), round(100 * r["dice"], 1)] for r in records if r["type"] == "val"
        ],
        "hardware": {k: starts[0].get(k) for k in ("device", "machine", "threads", "torch")}
        if starts
        else None,
        "sessions": len(starts),
    }


def _record_facts(summary: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """Model-card lines of the training record (hardware, wall time, validation curve)."""
    facts = []
    hw = summary.get("hardware")
    if hw:
        facts.append(
            f"Hardware: {hw['device']} on {hw['machine']}, {hw['threads']} torch thread(s), "
            f"torch {hw['torch']}; {summary['sessions']} session(s) (resumed "
            f"{summary['sessions'] - 1} time(s))"
        )
    if summary.get("seconds_per_step_median") is not None:
        facts.append(
            f"Wall time of the training steps: {summary['train_seconds'] / 3600:.2f} h for "
            f"the exported {summary['steps']} steps "
            f"({summary['seconds_per_step_median']} s per step median)"
        )
    curve = summary.get("validation_by_step") or []
    if curve:
        rounds = config["val_rounds"] if config["method"] in REFINERS else 0
        after = f", after {rounds} click rounds" if rounds else ""
        points = ", ".join(f"{s}: {d}" for s, d in curve)
        facts.append(
            f"Validation Dice (%) by training step (first {config['val_cases']} val cases"
            f"{after}; the whole run): {points}"
        )
    return facts


def export_supervised(
    run: Path,
    out: Path,
    *,
    checkpoint: str = "best.pt",
    name: str | None = None,
    description: str = "",
    force: bool = False,
) -> Path:
    """Write a MONAI-Bundle-layout folder (as :func:`mecca.bundle.export_bundle` does for
    the RL methods) from a supervised run's checkpoint; :func:`load_supervised` reads it."""
    from mecca.bundle import card_text, write_bundle

    run, out = Path(run), Path(out)
    data = load_checkpoint(run / checkpoint)
    config = data["config"]
    keep = ("config", "nets", "net_configs", "frozen", "step")
    summary = _summary(run, int(data["step"]))
    hints = None
    if config["method"] in REFINERS:
        enc = hint_encoder(config["method"])
        hints = {"encoding": enc.encoding, "channels": enc.channels}
    metadata = {
        "method": config["method"],
        "train_config": config,
        "net_configs": data["net_configs"],
        "hints": hints,
        "training": summary,
    }

    def card(meta: dict[str, Any]) -> str:
        return card_text(
            meta,
            description,
            [
                f"Method: {config['method']} (supervised baseline), width {config['width']}, "
                f"grid {config['grid']}, labeled fraction {config.get('labeled_fraction', 1.0)}",
                f"Training: {summary['steps']} steps of {config['batch_size']} crops, split "
                f"`{config['train_split']}`; validation Dice {summary['validation_dice']}",
                *_record_facts(summary, config),
            ],
        )

    return write_bundle(
        out,
        {k: data[k] for k in keep},
        metadata,
        card,
        name=name,
        description=description,
        checkpoint=checkpoint,
        force=force,
    )
