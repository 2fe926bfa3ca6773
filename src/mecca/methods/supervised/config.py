"""The settings of a supervised-baseline run (:class:`SupervisedConfig`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mecca.errors import ConfigError
from mecca.interaction.users import USERS
from mecca.methods.supervised.method import REFINERS, SEGMENTERS

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
