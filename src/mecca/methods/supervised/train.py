"""Training the supervised baselines of the MECCA paper's tables: P-Net, U-Net, InterCNN,
DeepIGeoS (SPEC Sec. 6), on the same crops and splits as the RL methods.

Every training step draws ``batch_size`` augmented ROI crops on the network grid
(:func:`mecca.data.cases.sample_crops`, the RL runs' sampler) and takes one Adam step
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
* ``uamt`` (Yu et al. 2019, :mod:`mecca.methods.supervised.uamt`): a P-Net or U-Net
  student on the labeled crops' loss plus an uncertainty-masked consistency with its mean
  teacher on as many unlabeled crops per step; the semi-supervised baseline of MECCA's
  Table 3.
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

The run folder, resume, log and checkpoints are :mod:`mecca.training.run`'s: the log has
one ``train`` line per step with the loss and the training Dice of each pass, and one
``val`` line per validation; checkpoints add the network configs as plain data, every
network's weights and the Adam state. Validation: mean Dice on the original grid over the
first ``val_cases`` cases of the val split, each with a fixed seeded ROI and user, after 1
step for the segmenters and after ``val_rounds`` simulated rounds
(:func:`mecca.episode.run_episode`) for InterCNN and DeepIGeoS. Single process only (no
DDP).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mecca.config import load_config
from mecca.data.cases import HeldCase, load_cases, sample_crops
from mecca.data.roi import NormaliseConfig, random_margin_box
from mecca.episode import run_episode
from mecca.errors import ConfigError, InputError
from mecca.interaction.hints import HintEncoder
from mecca.interaction.users import SimulatedUser, make_user
from mecca.methods.spec import TrainRequest
from mecca.methods.supervised import uamt
from mecca.methods.supervised.bundle import load_supervised, nets_from_payload
from mecca.methods.supervised.config import SupervisedConfig
from mecca.methods.supervised.method import (
    SEGMENTERS,
    SegmenterMethod,
    SupervisedMethod,
    hint_encoder,
    method_from_nets,
)
from mecca.nets.segnet import SegNetConfig, build_segnet
from mecca.rl.semisup import run_split
from mecca.runtime import resolve_device
from mecca.training.run import Trainer, Validation, due

log = logging.getLogger(__name__)


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
    """One UA-MT step (:mod:`mecca.methods.supervised.uamt`) on labeled crops and as many
    unlabeled ones; (total loss, training Dice of the labeled crops, the consistency terms
    for the log)."""
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


class SupervisedTrainer(Trainer):
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
        rng = np.random.default_rng([cfg.seed, 1])
        super().__init__(cfg, out, method=cfg.method, resume=resume, progress=progress, rng=rng)
        self.cfg: SupervisedConfig = cfg
        self.data = Path(data)
        self.device = resolve_device(device)
        saved = self.checkpoint_to_resume(resume)
        self.models = build_models(cfg, self.device, saved)
        if saved is not None:
            self.resume_from(saved)

    @property
    def total(self) -> int:
        return self.cfg.steps

    def state(self) -> dict[str, Any]:
        m = self.models
        return {
            "nets": {k: net.state_dict() for k, net in m.nets.items()},
            "net_configs": {k: _net_config(net) for k, net in m.nets.items()},
            "frozen": list(m.frozen),
            "optimiser": m.optimiser.state_dict(),
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Nothing to do: :func:`build_models` built the networks from the checkpoint."""

    def begin(self) -> dict[str, Any]:
        cfg = self.cfg
        cases = load_cases(self.data, cfg.train_split, cfg.target, cfg.max_cases)
        self.labeled, self.unlabeled = run_split(cases, cfg.labeled_fraction, cfg.seed)
        if cfg.method == "uamt" and not self.unlabeled:
            raise InputError(
                f"uamt: no unlabeled cases left at labeled_fraction {cfg.labeled_fraction} of "
                f"{len(cases)} training cases",
                hint="lower labeled_fraction, or train pnet / unet on all the labels",
            )
        val = load_cases(self.data, cfg.val_split, cfg.target, cfg.val_cases)
        self.val: list[HeldCase] = val if cfg.val_every else []
        if cfg.val_every and not val:
            log.warning("split %r has no cases: no validation, no best.pt", cfg.val_split)
        self.user = make_user(cfg.user)
        return {
            "method": cfg.method,
            "labeled_cases": len(self.labeled),
            "unlabeled_cases": len(self.unlabeled) if cfg.method == "uamt" else 0,
            "device": str(self.device),
        }

    def train_step(self) -> dict[str, Any]:
        cfg = self.cfg
        draw = partial(
            sample_crops,
            batch_size=cfg.batch_size,
            rng=self.rng,
            grid=cfg.grid,
            normalise=NormaliseConfig(),
            augment=cfg.augment,
        )
        batch = draw(self.labeled)
        stats: dict[str, float] = {}
        if cfg.method == "uamt":
            plain = draw(self.unlabeled)
            loss, dice, stats = uamt_step(
                self.models,
                batch.images,
                batch.labels,
                plain.images,
                cfg,
                self.rng,
                self.device,
                self.step,
            )
        else:
            loss, dice = train_step(
                self.models, batch.images, batch.labels, cfg, self.rng, self.user, self.device
            )
        return {"loss": loss, "dice_per_pass": [round(d, 4) for d in dice], **stats}

    def postfix(self, record: dict[str, Any]) -> dict[str, str]:
        return {"loss": f"{record['loss']:.4f}", "dice": f"{record['dice_per_pass'][-1]:.3f}"}

    def validate(self) -> Validation | None:
        if not (self.val and due(self.step, self.cfg.val_every)):
            return None
        initial, per_step = validate(
            current_method(self.models, self.cfg, self.device), self.cfg, self.val
        )
        self.models.train()
        record = {"dice": per_step[-1], "initial_dice": initial, "dice_per_step": per_step}
        return Validation(per_step[-1], record)


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


def train_request(request: TrainRequest) -> Path:
    """``mecca train`` for the supervised baselines (the registry's train function)."""
    cfg = load_config(SupervisedConfig, request.config_file, request.values)
    return train_supervised(
        cfg,
        request.data,
        request.out,
        resume=request.resume,
        progress=request.progress,
        device=request.device,
    )
