"""MECCA's semi-supervised training with simulated labels (Sec. 3.6, Eqs. 10-11, Alg. 1).

For an unlabeled volume the confidence network's output ``c`` (probability that an
action's direction agrees with the true label, MECCA Eq. 7) turns each action into a
label guess:

* calibrated direction = ``sign(a)`` where ``c > 0.5`` (the action is trusted), else
  ``-sign(a)``; simulated label = 1 where that direction is positive (Eq. 10). Eq. 10 as
  printed (``1 if a XOR c``) would flip trusted actions; the project spec (and Eq. 7's
  definition of agreement) fixes the reading used here.
* only confident voxels train: mask ``M = [max(c, 1 - c) > delta]`` (Eq. 11), with
  ``delta`` rising over the epochs (:class:`DeltaSchedule`). A zero action (possible with
  custom action sets) has no direction, gives label 0 and is always masked out.

Training alternates labeled and unlabeled volumes (Algorithm 1, :func:`alternate`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import numpy as np
import torch

from mecca.errors import ConfigError, InputError

T = TypeVar("T")


class SimulatedLabels(NamedTuple):
    """Simulated labels and their trust mask; unpacks as ``labels, mask_fn``.

    Attributes:
        labels: float {0, 1} tensor of the actions' shape (MECCA Eq. 10).
        mask_fn: ``mask_fn(delta)`` -> bool tensor of the voxels to train on (Eq. 11).
    """

    labels: torch.Tensor
    mask_fn: Callable[[float], torch.Tensor]


def confidence_mask(confidence: torch.Tensor, delta: float) -> torch.Tensor:
    """Bool ``max(c, 1 - c) > delta`` (MECCA Eq. 11): voxels whose confidence is decisive."""
    return torch.maximum(confidence, 1.0 - confidence) > delta


def simulated_labels(action_values: torch.Tensor, confidence: torch.Tensor) -> SimulatedLabels:
    """Labels from actions calibrated by their confidence (MECCA Eq. 10).

    Args:
        action_values: float (B, ...) action amounts taken (e.g. ``actions.action_values``).
        confidence: float (B, ...) confidence of those actions, in [0, 1].

    Returns:
        ``(labels, mask_fn)``: float {0, 1} labels of the same shape, and a function of
        ``delta`` giving the bool Eq. 11 mask (zero actions excluded).
    """
    if action_values.shape != confidence.shape:
        raise InputError(
            f"actions {tuple(action_values.shape)} and confidence "
            f"{tuple(confidence.shape)} differ in shape"
        )
    c = confidence.detach()
    a = action_values.detach().to(c.device)
    direction = torch.where(c > 0.5, torch.sign(a), -torch.sign(a))
    labels = (direction > 0).to(c.dtype if c.dtype.is_floating_point else torch.float32)
    moved = a != 0

    def mask_fn(delta: float) -> torch.Tensor:
        return confidence_mask(c, delta) & moved

    return SimulatedLabels(labels, mask_fn)


class HeldLabels:
    """Simulated labels held for the rest of an episode (``simulated_labels: episode``).

    Eq. 10 labels each step anew from that step's action, so a confident reversal (a voxel
    pushed up, then confidently down) earns the reward of a correct move twice: on the
    hippocampus such runs drifted. Here a voxel's label is fixed at the first step its
    confidence passes ``delta`` and trains from then on (mask = labeled so far); voxels that
    never pass stay masked.
    """

    def __init__(self) -> None:
        self.labels: torch.Tensor | None = None
        self.known: torch.Tensor | None = None

    def update(self, guess: SimulatedLabels, delta: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Add this step's guess; returns ``(labels, mask)`` to train this step with."""
        mask = guess.mask_fn(delta)
        if self.labels is None or self.known is None:
            self.labels = torch.zeros_like(guess.labels)
            self.known = torch.zeros_like(mask)
        new = mask & ~self.known
        self.labels = torch.where(new, guess.labels, self.labels)
        self.known = self.known | mask
        return self.labels, self.known.clone()


@dataclass(frozen=True)
class DeltaSchedule:
    """Confidence threshold of Eq. 11 over training: ``min(start + step * epoch, end)``."""

    start: float = 0.85
    """Threshold at epoch 0."""
    end: float = 0.99
    """Largest threshold."""
    step: float = 0.00025
    """Increase per epoch."""

    def __post_init__(self) -> None:
        if not 0.5 <= self.start <= self.end < 1.0 or self.step < 0:
            raise ConfigError(
                f"need 0.5 <= start <= end < 1 and step >= 0, got start={self.start}, "
                f"end={self.end}, step={self.step}"
            )

    def value(self, epoch: int) -> float:
        """Delta at ``epoch`` (0-based)."""
        if epoch < 0:
            raise InputError(f"epochs are counted from 0, got {epoch}")
        return min(self.start + self.step * epoch, self.end)


def labeled_subset(
    case_ids: Sequence[T], fraction: float, rng: np.random.Generator | int
) -> tuple[list[T], list[T]]:
    """Split cases into a labeled share and the unlabeled rest (MECCA Tables 3-4).

    ``n_labeled = max(1, round(fraction * n))`` cases are drawn by ``rng`` (so the split is
    fixed by the seed); both lists keep the input order.

    Args:
        case_ids: the training cases (at least one).
        fraction: labeled share in (0, 1], e.g. 0.125, 0.25, 1/3, 0.5, 1.
        rng: generator or seed.
    """
    n = len(case_ids)
    if n == 0:
        raise InputError("no training cases to split")
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(
            f"the labeled fraction must lie in (0, 1], got {fraction}",
            hint="give 0.125 for 12.5 %",
        )
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    k = max(1, min(n, math.floor(fraction * n + 0.5)))
    chosen = set(gen.permutation(n)[:k].tolist())
    labeled = [c for i, c in enumerate(case_ids) if i in chosen]
    unlabeled = [c for i, c in enumerate(case_ids) if i not in chosen]
    return labeled, unlabeled


def run_split(cases: Sequence[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """The labeled / unlabeled split of a training run with ``seed``: every method trained
    with the same seed and fraction (MECCA, IteR-MRL, the supervised baselines, UA-MT) gets
    the same labeled cases, on every resume."""
    return labeled_subset(cases, fraction, np.random.default_rng([seed, 7]))


def alternate(labeled: Sequence[T], unlabeled: Sequence[T]) -> list[tuple[T, bool]]:
    """One epoch's order of Algorithm 1: labeled, unlabeled, labeled, unlabeled, ...

    Returns ``(case, is_labeled)`` pairs. The epoch has ``max(len(labeled),
    len(unlabeled))`` pairs, and the shorter list is cycled, so every volume of both lists
    is seen at least once and the 1:1 ratio of Algorithm 1 holds (at 12.5 % labeled each
    labeled volume is seen about 7 times per epoch). With no unlabeled volumes (100 %
    labeled) the order is just the labeled list. Shuffle the lists before calling.
    """
    if not labeled:
        raise InputError("Algorithm 1 needs at least one labeled volume")
    if not unlabeled:
        return [(c, True) for c in labeled]
    n = max(len(labeled), len(unlabeled))
    out: list[tuple[T, bool]] = []
    for i in range(n):
        out.append((labeled[i % len(labeled)], True))
        out.append((unlabeled[i % len(unlabeled)], False))
    return out
