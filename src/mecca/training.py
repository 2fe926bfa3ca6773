"""Training IteR-MRL and MECCA: synchronous A2C over batched voxel-agent episodes.

One training episode (IteR-MRL Sec. 3, MECCA Sec. 3 and Algorithm 1 with every volume
labeled): B augmented ROI crops start at p = 0.5; the simulated user clicks; for T steps
the policy samples one action per voxel, ``p <- clip(p + a, 0, 1)``, the reward of every
voxel is computed (relative cross-entropy gain, or MECCA's confidence-weighted gain, ...),
and the user clicks on the new mask. The A2C loss over the episode updates the
actor-critic; the confidence network (MECCA) is trained with the symmetric BCE of Eq. 6
on the actions taken. IteR-MRL0 pre-training runs the first ``pretrain_episodes`` with no
user (no hints).

A run folder holds ``config.yaml`` (the fully resolved config), ``log.jsonl`` (one line
per episode and per validation), ``last.pt`` (every ``checkpoint_every`` episodes and on
Ctrl-C) and ``best.pt`` (best validation Dice after the last step). ``resume=True``
continues from ``last.pt`` with the model, optimiser, RNG and schedule state restored.
Under ``torchrun`` the same code trains data-parallel (DDP); only rank 0 writes.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mecca import __version__
from mecca.checkpoint import load_checkpoint, restore_rng, rng_state, save_checkpoint
from mecca.config import build_config, config_to_dict
from mecca.data.roi import Box, Crop, NormaliseConfig, random_margin_box
from mecca.episode import run_episode
from mecca.errors import ConfigError, OverwriteError
from mecca.interaction.clicks import make_user
from mecca.interaction.hints import HintEncoder
from mecca.methods.rl_agent import RLAgentMethod
from mecca.nets import (
    ActorCritic,
    ConfidenceConfig,
    ConfidenceNet,
    PNetConfig,
    action_confidence,
    batch_statistics,
    confidence_loss,
)
from mecca.rl.a2c import LossTerms, a2c_loss
from mecca.rl.actions import ACTIONS, action_values
from mecca.rl.env import VoxelEnv
from mecca.rl.rewards import RewardConfig, compute_reward
from mecca.rl.semisup import DeltaSchedule, HeldLabels, run_split, simulated_labels
from mecca.runtime import (
    DistInfo,
    dist_from_env,
    init_distributed,
    resolve_device,
    stop_on_signals,
)
from mecca.training_data import HeldCase, load_cases, sample_crops

log = logging.getLogger(__name__)

Method = Literal["mecca", "itermrl"]


RESUME_MAY_CHANGE = (
    "episodes",
    "lr_decay_episode",
    "lr_decay_factor",
    "unlabeled_from",
    "simulated_labels",
)
"""Settings that ``--resume`` may change: a run can be lengthened, its rate decayed, and a
labeled warm-up branched (unlabeled batches joining at another episode, or never, with
either kind of simulated labels)."""


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run (YAML presets in ``configs/``).

    Fields left ``None`` take the method's default (:func:`method_defaults`).
    """

    method: Method = "mecca"
    """``mecca`` (edge points, Gaussian hints, confidence network, self-adaptive reward) or
    ``itermrl`` (fg/bg clicks at error centres, geodesic hints, relative reward)."""
    target: str | None = None
    """Named target of the dataset (None = its default target)."""
    train_split: str = "train"
    """Split of ``splits.json`` to train on (all cases when the dataset has no splits)."""
    val_split: str = "val"
    """Split used for validation Dice."""
    grid: tuple[int, int, int] = (55, 55, 30)
    """Network grid (i, j, k)."""
    width: int = 8
    """Feature channels of the actor-critic and the confidence network (8: the fastest on a
    CPU, see ``PNetConfig``)."""
    episodes: int = 2000
    """Training episodes in all (each plays B volumes for T steps)."""
    batch_size: int = 2
    """Volumes per episode (B)."""
    steps: int = 5
    """Refinement steps per episode (T)."""
    gamma: float = 0.95
    """Discount factor."""
    lr: float = 1e-4
    """Adam learning rate of the actor-critic."""
    confidence_lr: float = 1e-4
    """Adam learning rate of the confidence network."""
    lr_decay_episode: int | None = None
    """From this episode on, both learning rates are multiplied by ``lr_decay_factor`` (a
    step decay: a run trained fast at a high rate settles at a low one; None = never)."""
    lr_decay_factor: float = 0.1
    """Multiplier of the learning rates from ``lr_decay_episode`` on."""
    value_coef: float = 0.5
    """Weight of the value loss."""
    entropy_coef: float = 0.01
    """Weight of the entropy bonus."""
    advantage: Literal["mean", "voxel"] = "mean"
    """``mean``: the papers' volume-mean reward; ``voxel``: per-voxel returns (PixelRL)."""
    reward: Literal["relative", "absolute", "mecca", "focal", "err"] | None = None
    """Reward kind; None = ``mecca`` for MECCA, ``relative`` for IteR-MRL."""
    reward_alpha: float = 0.8
    """MECCA reward alpha (Eq. 8)."""
    reward_beta: float = 1.0
    """MECCA reward beta (Eq. 8)."""
    reward_lambda: float = 1.0
    """Err-IteR-MRL lambda (Eq. 14)."""
    reward_eps: float = 1e-6
    """Cross-entropy clamp of the rewards (``RewardConfig.eps``)."""
    confidence: bool | None = None
    """Train a confidence network; None = yes for MECCA (and for reward ``mecca``)."""
    confidence_samples: int = 1
    """Episode steps (drawn at random) whose states train the confidence network each
    episode; more is slower, all T is the most faithful."""
    user: str | None = None
    """Simulated user; None = ``edge`` for MECCA, ``error_centre`` for IteR-MRL."""
    hints: Literal["gaussian", "euclidean", "geodesic"] | None = None
    """Hint encoding; None = ``gaussian`` for MECCA, ``geodesic`` for IteR-MRL."""
    pretrain_episodes: int = 0
    """IteR-MRL0: the first episodes run with no user (no hints)."""
    initial: str | None = None
    """IteR-MRL's update mode: every episode (and validation) starts from this supervised
    segmenter's probability map (a ``pnet`` run folder or shipped bundle name, trained on
    the same grid) instead of p = 0.5; such a model is meant for the ``itermrl`` benchmark
    protocol, which starts from the same segmenter."""
    init_from: str | None = None
    """Start from these weights instead of Xavier init: a shipped bundle's name, a bundle
    folder, a run folder (best.pt, else last.pt) or a ``.pt`` file, with the same network
    shape. Fine-tunes a shipped model on other data, or continues a run whose folder is
    gone (the optimisers and the episode count start afresh)."""
    labeled_fraction: float = 1.0
    """Share of the training volumes used with their labels (MECCA Tables 3-4: 0.125,
    0.25, 1/3, 0.5, 1). Below 1, MECCA's Algorithm 1: episodes alternate labeled and
    unlabeled batches; unlabeled ones learn from simulated labels (Eq. 10) under the
    confidence mask (Eq. 11) and give hints only."""
    unlabeled_from: int = 0
    """Episode from which unlabeled batches join (Algorithm 1 alternates from the start:
    0). Simulated labels are only as good as the confidence network, so a run may train on
    labeled batches alone first (docs/ablations.md, "Labeled fraction")."""
    simulated_labels: Literal["step", "episode"] = "step"
    """``step``: Eq. 10 as printed, each step's labels from that step's actions; ``episode``:
    a voxel keeps the label of the first step whose confidence passed delta
    (:class:`mecca.rl.semisup.HeldLabels`), so reversals are not rewarded."""
    delta_start: float = 0.85
    """Eq. 11 confidence threshold at epoch 0."""
    delta_end: float = 0.99
    """Largest Eq. 11 threshold."""
    delta_step: float = 0.00025
    """Threshold increase per epoch (one epoch = as many crops as training volumes)."""
    augment: bool = True
    """Random flips and small in-plane rotations of the training crops."""
    checkpoint_every: int = 25
    """Episodes between ``last.pt`` checkpoints."""
    val_every: int = 100
    """Episodes between validations (0 = never)."""
    val_cases: int = 8
    """Validation cases used (the first of the split)."""
    val_steps: int | None = None
    """Refinement steps of each validation episode; None = ``steps``. Set it to compare
    runs trained with different T on one footing (IteR-MRL Table 7: T = 1 vs 5)."""
    max_cases: int | None = None
    """Use only the first N training cases (smoke tests)."""
    seed: int = 0
    """Seed of every random choice in the run."""

    def resolved(self) -> TrainConfig:
        """The config with every None replaced by the method's default."""
        defaults = method_defaults(self.method)
        filled = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        cfg = replace(self, **filled)
        if cfg.confidence is None:
            cfg = replace(cfg, confidence=cfg.reward == "mecca")
        if cfg.reward == "mecca" and not cfg.confidence:
            raise ConfigError("reward 'mecca' needs the confidence network (confidence: true)")
        if cfg.unlabeled_from < 0:
            raise ConfigError(f"unlabeled_from must be >= 0, got {cfg.unlabeled_from}")
        if cfg.val_steps is not None and cfg.val_steps < 1:
            raise ConfigError(f"val_steps must be >= 1 (or null), got {cfg.val_steps}")
        if not 0.0 < cfg.labeled_fraction <= 1.0:
            raise ConfigError(f"labeled_fraction must lie in (0, 1], got {cfg.labeled_fraction}")
        if cfg.labeled_fraction < 1.0 and not cfg.confidence:
            raise ConfigError(
                "training with unlabeled volumes needs the confidence network",
                hint="use method mecca, or set confidence: true",
            )
        DeltaSchedule(cfg.delta_start, cfg.delta_end, cfg.delta_step)  # checks the values
        return cfg


def method_defaults(method: str) -> dict[str, Any]:
    """The papers' user, hint encoding and reward for each method."""
    if method == "mecca":
        return {"user": "edge", "hints": "gaussian", "reward": "mecca"}
    if method == "itermrl":
        return {"user": "error_centre", "hints": "geodesic", "reward": "relative"}
    raise ConfigError(f"unknown method {method!r}", hint="choose mecca or itermrl")


def hint_encoder(cfg: TrainConfig) -> HintEncoder:
    """Edge users get one edge channel; fg/bg users two channels (h+, h-)."""
    channels = "edge" if cfg.user == "edge" else "fg_bg"
    return HintEncoder(encoding=str(cfg.hints), channels=channels)


@dataclass
class Models:
    """The networks and their optimisers (the DDP wrappers, when distributed, in ``ddp``)."""

    net: ActorCritic
    optimiser: torch.optim.Optimizer
    confidence: ConfidenceNet | None
    confidence_optimiser: torch.optim.Optimizer | None
    ddp: dict[str, nn.Module]


def build_models(cfg: TrainConfig, device: torch.device, *, seed: int) -> Models:
    """Fresh networks (Xavier init from ``seed``) and Adam optimisers."""
    torch.manual_seed(seed)  # init only; training randomness uses explicit generators
    channels = 2 + hint_encoder(cfg).n_channels
    net = ActorCritic(PNetConfig(in_channels=channels, width=cfg.width)).to(device)
    conf = None
    conf_opt = None
    if cfg.confidence:
        conf = ConfidenceNet(ConfidenceConfig(in_channels=channels + 1, width=cfg.width))
        conf = conf.to(device)
        conf_opt = torch.optim.Adam(conf.parameters(), lr=cfg.confidence_lr)
    return Models(net, torch.optim.Adam(net.parameters(), lr=cfg.lr), conf, conf_opt, {})


def load_initial_weights(models: Models, source: str) -> None:
    """Copy the networks of ``source`` (see ``TrainConfig.init_from``) into ``models``.

    The confidence network is copied too when both sides have one; a source without one
    leaves the run's freshly initialised. Different network shapes are refused."""
    from mecca.bundle import model_checkpoint  # the bundle module imports the networks

    path = model_checkpoint(source, "model to start from (init_from)")
    data = load_checkpoint(path)
    pairs: list[tuple[str, nn.Module | None]] = [
        ("net", models.net),
        ("confidence", models.confidence),
    ]
    for key, module in pairs:
        state = data.get(key)
        if module is None or state is None:
            continue
        try:
            module.load_state_dict(state)
        except RuntimeError as err:
            raise ConfigError(
                f"init_from: the {key} network of {source!r} has another shape than this run's",
                path=path,
                hint="use the width, grid channels and hints the source was trained with",
            ) from err
    log.info("initial weights from %s", path)


def sample_actions(logits: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One action per voxel from softmax(logits) over dim 1 (Gumbel-max, seeded)."""
    u = torch.rand(logits.shape, generator=gen, device="cpu").to(logits.device)
    gumbel = -torch.log(-torch.log(u.clamp_(1e-10, 1.0 - 1e-7)))
    return (logits.detach() + gumbel).argmax(dim=1)


@dataclass(frozen=True)
class EpisodeStats:
    """Diagnostics of one training episode."""

    loss: LossTerms
    confidence_loss: float
    dice_per_step: list[float]
    labeled: bool = True


def _dice(prob: torch.Tensor, labels: torch.Tensor) -> float:
    pred = prob > 0.5
    inter = (pred & labels).sum().item()
    total = pred.sum().item() + labels.sum().item()
    return 1.0 if total == 0 else 2.0 * inter / total


def train_episode(
    models: Models,
    env: VoxelEnv,
    images: np.ndarray,
    labels: np.ndarray,
    cfg: TrainConfig,
    rng: np.random.Generator,
    gen: torch.Generator,
    *,
    labeled: bool = True,
    delta: float = 0.85,
    init_prob: np.ndarray | None = None,
) -> EpisodeStats:
    """Play one batched episode and take one optimiser step of each network.

    ``init_prob``: (B, I, J, K) start probability (IteR-MRL update mode); None = 0.5.

    ``labeled=False`` (MECCA Algorithm 1, lines 11-18): the labels only drive the simulated
    user (hints); rewards use the simulated labels of each step (Eq. 10; or held, see
    ``TrainConfig.simulated_labels``), the losses only
    the voxels whose confidence passes ``delta`` (Eq. 11), and the confidence network is
    not trained on the batch. Rewards outside that mask count as 0 (``a2c_loss``), so
    that a masked voxel's return holds no reward from an untrusted label of a later step.
    """
    net = models.ddp.get("net", models.net)
    assert cfg.reward is not None, "call TrainConfig.resolved() first"
    reward_cfg = RewardConfig(
        kind=cfg.reward,
        alpha=cfg.reward_alpha,
        beta=cfg.reward_beta,
        lam=cfg.reward_lambda,
        eps=cfg.reward_eps,
    )
    models.net.train()
    state = env.reset(images, labels, rng, init_prob=init_prob)
    y = env.labels_tensor
    logits_t, values_t, actions_t, rewards_t, states_t, dice = [], [], [], [], [], []
    masks_t: list[torch.Tensor] = []
    held = HeldLabels() if cfg.simulated_labels == "episode" else None
    for _ in range(cfg.steps):
        logits, value = net(state)
        idx = sample_actions(logits, gen)
        out = env.step(idx)
        conf = None
        taken = action_values(idx, ACTIONS)
        if models.confidence is not None:
            models.confidence.eval()
            with batch_statistics(models.confidence), torch.no_grad():
                conf = action_confidence(models.confidence, state, taken[:, None])[:, 0]
        target = y
        if not labeled:
            assert conf is not None, "unlabeled episodes need the confidence network"
            guess = simulated_labels(taken, conf)
            if held is None:
                guessed, mask = guess.labels, guess.mask_fn(delta)
            else:
                guessed, mask = held.update(guess, delta)
            target = guessed > 0.5
            masks_t.append(mask)
        rewards_t.append(compute_reward(reward_cfg, out.p_prev, out.p_next, target, conf))
        logits_t.append(logits)
        values_t.append(value)
        actions_t.append(idx)
        states_t.append(state)
        dice.append(_dice(out.p_next, y))
        state = out.state_next
    terms = a2c_loss(
        torch.stack(logits_t),
        torch.stack(values_t),
        torch.stack(actions_t),
        torch.stack(rewards_t),
        gamma=cfg.gamma,
        advantage_mode=cfg.advantage,
        value_coef=cfg.value_coef,
        entropy_coef=cfg.entropy_coef,
        mask=torch.stack(masks_t) if masks_t else None,
    )
    models.optimiser.zero_grad(set_to_none=True)
    terms.total.backward()
    models.optimiser.step()
    conf_loss = float("nan")
    if labeled:
        conf_loss = _train_confidence(models, states_t, actions_t, y, cfg, rng)
    return EpisodeStats(terms, conf_loss, dice, labeled)


def _train_confidence(
    models: Models,
    states: list[torch.Tensor],
    actions: list[torch.Tensor],
    labels: torch.Tensor,
    cfg: TrainConfig,
    rng: np.random.Generator,
) -> float:
    """One Adam step of the confidence network on ``confidence_samples`` episode steps."""
    if models.confidence is None or models.confidence_optimiser is None:
        return float("nan")
    conf_net = models.ddp.get("confidence", models.confidence)
    models.confidence.train()
    picks = rng.choice(len(states), size=min(cfg.confidence_samples, len(states)), replace=False)
    state = torch.cat([states[int(t)].detach() for t in picks])
    values = torch.cat([action_values(actions[int(t)], ACTIONS)[:, None] for t in picks])
    target = labels[:, None].float().repeat(len(picks), 1, 1, 1, 1)
    loss = confidence_loss(conf_net, state, values, target)
    models.confidence_optimiser.zero_grad(set_to_none=True)
    loss.backward()
    models.confidence_optimiser.step()
    return float(loss.item())


def agent_method(models: Models, cfg: TrainConfig, device: torch.device) -> RLAgentMethod:
    """The current networks as an ``InteractiveMethod`` (evaluation mode)."""
    return RLAgentMethod(
        net=models.net,
        encoder=hint_encoder(cfg),
        confidence=models.confidence,
        name=cfg.method,
        device=device,
    )


def load_initial(cfg: TrainConfig) -> Any:
    """The update mode's initial segmenter (``cfg.initial``, loaded), or None."""
    if cfg.initial is None:
        return None
    from mecca.methods.supervised import load_supervised

    segmenter = load_supervised(cfg.initial)
    if tuple(segmenter.grid) != tuple(cfg.grid):
        raise ConfigError(
            f"initial segmenter {cfg.initial!r} works on grid {tuple(segmenter.grid)}, "
            f"this run on {tuple(cfg.grid)}",
            hint="train the initial segmenter on the run's grid",
        )
    return segmenter


def initial_maps(segmenter: Any, images: np.ndarray) -> np.ndarray:
    """The initial segmenter's probability for each crop of a (B, I, J, K) batch, which is
    already on the segmenter's grid."""
    _, i, j, k = images.shape
    grid = (int(i), int(j), int(k))
    whole = Box((0, 0, 0), grid)
    return np.stack(
        [
            segmenter.initial_prob(Crop(np.asarray(im, np.float32), whole, grid, grid))
            for im in images
        ]
    ).astype(np.float32)


def validate(
    models: Models,
    cfg: TrainConfig,
    cases: list[HeldCase],
    device: torch.device,
    initial: Any = None,
) -> list[float]:
    """Mean Dice (original grid) after each step on the validation cases, same protocol.

    Each case's ROI and clicks come from a generator seeded by the case's position, so
    every validation of a run sees the same boxes and the numbers are comparable.
    ``initial``: the update mode's segmenter (episodes start from its map).
    """
    method = agent_method(models, cfg, device)
    user = make_user(str(cfg.user))
    steps = cfg.val_steps or cfg.steps
    per_step = np.zeros(steps)
    for i, case in enumerate(cases):
        rng = np.random.default_rng([cfg.seed, 10_000 + i])
        box = random_margin_box(case.mask, rng)
        init = None
        if initial is not None:
            from mecca.methods.supervised import initial_prob_on_grid

            init = initial_prob_on_grid(initial, case.image, box, cfg.grid)
        record = run_episode(
            method,
            case.image,
            case.mask,
            user,
            rng=rng,
            steps=steps,
            box=box,
            grid=cfg.grid,
            init_prob=init,
        )
        per_step += np.asarray(record.dice_per_step)
    models.net.train()
    return (per_step / max(1, len(cases))).tolist()


class RunLog:
    """Appends JSON lines to ``log.jsonl`` (rank 0 only)."""

    def __init__(self, path: Path, enabled: bool):
        self.path = path
        self.enabled = enabled

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")


@contextmanager
def _progress(total: int, initial: int, enabled: bool) -> Iterator[Any]:
    from tqdm import tqdm

    bar = tqdm(total=total, initial=initial, disable=not enabled, unit="ep", dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


class Trainer:
    """Runs (or resumes) one training run into ``out``; see the module docstring."""

    def __init__(
        self,
        cfg: TrainConfig,
        data: Path,
        out: Path,
        *,
        device: str = "auto",
        resume: bool = False,
        progress: bool = True,
    ):
        self.dist: DistInfo = dist_from_env()
        self.device = resolve_device(device, local_rank=self.dist.local_rank)
        self.cfg = cfg.resolved()
        self.data = Path(data)
        self.out = Path(out)
        self.progress = progress and self.dist.is_main
        self._prepare_folder(resume)
        init_distributed(self.dist, self.device)
        self.models = build_models(self.cfg, self.device, seed=self.cfg.seed)
        self.initial = load_initial(self.cfg)
        self.rng = np.random.default_rng([self.cfg.seed, self.dist.rank])
        self.gen = torch.Generator().manual_seed(self.cfg.seed * 1000 + self.dist.rank)
        self.episode = 0
        self.best = -1.0
        if resume and (self.out / "last.pt").exists():
            self._restore(load_checkpoint(self.out / "last.pt"))
        elif self.cfg.init_from is not None:
            load_initial_weights(self.models, self.cfg.init_from)
        if self.dist.distributed:
            self.models.ddp["net"] = DistributedDataParallel(self.models.net)
            if self.models.confidence is not None:
                self.models.ddp["confidence"] = DistributedDataParallel(self.models.confidence)
        self.log = RunLog(self.out / "log.jsonl", self.dist.is_main)

    def _prepare_folder(self, resume: bool) -> None:
        """Rank 0 checks the folder and writes config.yaml (other ranks would see its file)."""
        if not self.dist.is_main:
            return
        cfg_path = self.out / "config.yaml"
        if cfg_path.exists():
            if not resume:
                raise OverwriteError(
                    "run folder already holds a run",
                    path=self.out,
                    hint="pass --resume to continue it, or choose another --out",
                )
            saved = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
            mine = config_to_dict(self.cfg)
            for key in RESUME_MAY_CHANGE:
                saved.pop(key, None)
                mine.pop(key)
            defaults = config_to_dict(TrainConfig())
            for key in set(mine) - set(saved):  # settings added since the run began
                saved[key] = defaults[key]
            if saved != mine:
                diff = sorted(k for k in mine if saved.get(k) != mine[k])
                raise ConfigError(
                    f"--resume with a different config (differs in {diff})",
                    path=cfg_path,
                    hint="resume with the saved config; only "
                    + ", ".join(repr(k) for k in RESUME_MAY_CHANGE)
                    + " may change",
                )
        self.out.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump({**config_to_dict(self.cfg)}, sort_keys=False)
        cfg_path.write_text(text, encoding="utf-8")

    def _payload(self) -> dict[str, Any]:
        m = self.models
        return {
            "config": config_to_dict(self.cfg),
            "net": m.net.state_dict(),
            "net_config": config_to_dict(m.net.config),
            "optimiser": m.optimiser.state_dict(),
            "confidence": None if m.confidence is None else m.confidence.state_dict(),
            "confidence_config": None
            if m.confidence is None
            else config_to_dict(m.confidence.config),
            "confidence_optimiser": None
            if m.confidence_optimiser is None
            else m.confidence_optimiser.state_dict(),
            "rng": rng_state(self.rng),
            "torch_gen": self.gen.get_state(),
            "episode": self.episode,
            "best": self.best,
        }

    def _restore(self, data: dict[str, Any]) -> None:
        m = self.models
        m.net.load_state_dict(data["net"])
        m.optimiser.load_state_dict(data["optimiser"])
        if m.confidence is not None and m.confidence_optimiser is not None:
            m.confidence.load_state_dict(data["confidence"])
            m.confidence_optimiser.load_state_dict(data["confidence_optimiser"])
        self.rng = restore_rng(data["rng"])
        self.gen.set_state(data["torch_gen"])
        self.episode = int(data["episode"])
        self.best = float(data["best"])
        log.info("resumed %s at episode %d", self.out, self.episode)

    def _set_learning_rates(self) -> None:
        """Both optimisers at the configured rates, times the decay once it has begun."""
        cfg, m = self.cfg, self.models
        decayed = cfg.lr_decay_episode is not None and self.episode >= cfg.lr_decay_episode
        factor = cfg.lr_decay_factor if decayed else 1.0
        if decayed and self.episode == cfg.lr_decay_episode:
            log.info("episode %d: learning rates x %g", self.episode, factor)
        pairs = [(m.optimiser, cfg.lr), (m.confidence_optimiser, cfg.confidence_lr)]
        for optimiser, lr in pairs:
            for group in [] if optimiser is None else optimiser.param_groups:
                group["lr"] = lr * factor

    def save(self, name: str) -> None:
        if self.dist.is_main:
            save_checkpoint(self.out / name, self._payload())

    def run(self) -> Path:
        """Train until ``episodes``; returns the run folder."""
        cfg = self.cfg
        cases = load_cases(self.data, cfg.train_split, cfg.target, cfg.max_cases)
        train, unlabeled = run_split(cases, cfg.labeled_fraction, cfg.seed)
        delta = DeltaSchedule(cfg.delta_start, cfg.delta_end, cfg.delta_step)
        val = (
            load_cases(self.data, cfg.val_split, cfg.target, cfg.val_cases) if cfg.val_every else []
        )
        user = make_user(str(cfg.user))
        env_hinted = VoxelEnv(hint_encoder(cfg), user, steps=cfg.steps, device=self.device)
        env_plain = VoxelEnv(hint_encoder(cfg), None, steps=cfg.steps, device=self.device)
        normalise = NormaliseConfig()
        self.log.write(
            {
                "type": "start",
                "episode": self.episode,
                "device": str(self.device),
                "world_size": self.dist.world_size,
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "machine": platform.machine(),
                "mecca": __version__,
            }
        )
        try:
            with stop_on_signals(), _progress(cfg.episodes, self.episode, self.progress) as bar:
                while self.episode < cfg.episodes:
                    t0 = time.perf_counter()
                    self._set_learning_rates()
                    labeled = (
                        not unlabeled
                        or self.episode < cfg.unlabeled_from
                        or self.episode % 2 == 0
                    )
                    batch = sample_crops(
                        train if labeled else unlabeled,
                        cfg.batch_size,
                        self.rng,
                        grid=cfg.grid,
                        normalise=normalise,
                        augment=cfg.augment,
                    )
                    env = env_plain if self.episode < cfg.pretrain_episodes else env_hinted
                    epoch = self.episode * cfg.batch_size // len(cases)
                    stats = train_episode(
                        self.models,
                        env,
                        batch.images,
                        batch.labels,
                        cfg,
                        self.rng,
                        self.gen,
                        labeled=labeled,
                        delta=delta.value(epoch),
                        init_prob=None
                        if self.initial is None
                        else initial_maps(self.initial, batch.images),
                    )
                    self.episode += 1
                    self._after_episode(stats, time.perf_counter() - t0, bar, val)
        except KeyboardInterrupt:
            log.warning("interrupted at episode %d: saving last.pt", self.episode)
            self.save("last.pt")
            raise
        self.save("last.pt")
        return self.out

    def _after_episode(
        self, stats: EpisodeStats, seconds: float, bar: Any, val: list[HeldCase]
    ) -> None:
        cfg = self.cfg
        record = {
            "type": "train",
            "episode": self.episode,
            **stats.loss.as_dict(),
            "confidence_loss": None if np.isnan(stats.confidence_loss) else stats.confidence_loss,
            "labeled": stats.labeled,
            "dice_per_step": [round(d, 4) for d in stats.dice_per_step],
            "seconds": round(seconds, 3),
        }
        self.log.write(record)
        bar.update(1)
        bar.set_postfix(
            reward=f"{stats.loss.mean_reward:.4f}", dice=f"{stats.dice_per_step[-1]:.3f}"
        )
        if cfg.checkpoint_every and self.episode % cfg.checkpoint_every == 0:
            self.save("last.pt")
        if val and cfg.val_every and self.episode % cfg.val_every == 0 and self.dist.is_main:
            dice = validate(self.models, cfg, val, self.device, self.initial)
            self.log.write(
                {"type": "val", "episode": self.episode, "cases": len(val), "dice_per_step": dice}
            )
            log.info(
                "episode %d: validation Dice per step %s", self.episode, [round(d, 4) for d in dice]
            )
            if dice[-1] > self.best:
                self.best = dice[-1]
                self.save("best.pt")


def train(
    cfg: TrainConfig,
    data: Path,
    out: Path,
    *,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Train (or resume) a run; see :class:`Trainer`."""
    return Trainer(cfg, data, out, device=device, resume=resume, progress=progress).run()


def config_from_checkpoint(data: dict[str, Any]) -> TrainConfig:
    """The resolved training config stored in a checkpoint, checked against this version."""
    if data.get("mecca_version") != __version__:
        log.warning(
            "checkpoint written by mecca %s, this is %s", data.get("mecca_version"), __version__
        )
    return build_config(TrainConfig, data["config"])
