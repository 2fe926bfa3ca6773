"""The settings of an IteR-MRL or MECCA training run (:class:`TrainConfig`) and what they
decide before any network exists: each method's defaults and the hint channels."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Literal

from mecca._version import __version__
from mecca.config import build_config
from mecca.errors import ConfigError
from mecca.interaction.hints import HintEncoder
from mecca.rl.semisup import DeltaSchedule

log = logging.getLogger(__name__)

AGENTS = ("mecca", "itermrl")
"""The voxel-agent methods (what a ``TrainConfig.method`` may be)."""
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


def config_from_checkpoint(data: dict[str, Any]) -> TrainConfig:
    """The resolved training config stored in a checkpoint, checked against this version."""
    if data.get("mecca_version") != __version__:
        log.warning(
            "checkpoint written by mecca %s, this is %s", data.get("mecca_version"), __version__
        )
    return build_config(TrainConfig, data["config"])
