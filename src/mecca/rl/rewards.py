"""Per-voxel rewards of the voxel agents: IteR-MRL and the MECCA reward family.

Every function works element-wise on float tensors of one shape, typically (B, I, J, K)
(or (T, B, I, J, K)): ``p_prev`` is the probability before a step's actions
(:math:`p^{(t-1)}`), ``p_next`` the probability after them (:math:`p^{(t)}`), ``y`` the
label (bool or float in {0, 1}) and ``confidence`` the confidence network's output in
[0, 1]. Rewards are computed without gradients in mind (they are targets); callers pass
detached tensors, and the functions add nothing that needs a graph.

Rewards:

* ``relative`` (IteR-MRL Eq. 3, MECCA Eq. 9): the cross-entropy gain
  ``X(t-1) - X(t)``; positive when the probability moved toward the label.
* ``absolute`` (IteR-MRL Table 5): "the difference between the current prediction and
  ground truth", read as the negated cross-entropy of the new prediction, ``-X(t)``:
  the same distance the relative reward differences, so the two variants differ only in
  having a baseline (``X(t-1)``) or not. Always <= 0; 0 only for a perfect prediction.
* ``mecca`` (MECCA Eq. 8): ``alpha * (2 - c)^beta * gain``, so actions of low confidence
  weigh more. Eq. 8 sums over voxels; here it is per voxel and the actor-critic
  aggregates (mean or per voxel, see :mod:`mecca.rl.a2c`).
* ``focal`` (MECCA Eqs. 12-13): the gain with focal cross-entropies
  ``X_i = -(1 - p_i) y ln p_i(t) - p_i (1 - y) ln(1 - p_i(t))``. Eq. 13 gives the focal
  weight's ``p_i`` no step index while ``ln p_i(t)`` has one, and Fig. 10 shows it as one
  "focal mask that weighs the primary reward", non-uniform at the first step (when the
  start probability is 0.5 everywhere). So the weight is one per voxel and step, shared by
  ``X(t-1)`` and ``X(t)`` and treated as a constant: ``w = 1 - p_true``, the probability
  of the wrong class, taken from the step's new prediction ``p(t)`` by default
  (``focal_from='next'``) or from the previous one (``'prev'``). The reward is then
  ``w * gain``: large where the prediction is still poor.
* ``err`` (MECCA Eq. 14): ``(1 + lambda) * gain`` on voxels misclassified by the previous
  prediction (``(p_prev > 0.5) != y``, the "error region mask" of Fig. 10), ``gain``
  elsewhere. Like the final mask, p = 0.5 counts as background: from MECCA's start
  (p = 0.5 everywhere) every foreground voxel is misclassified at the first step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch

from mecca.errors import ConfigError, InputError

RewardKind = Literal["relative", "absolute", "mecca", "focal", "err"]
FocalFrom = Literal["next", "prev"]


def _label(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Labels as floats of ``like``'s dtype and device; InputError on a shape mismatch."""
    if y.shape != like.shape:
        raise InputError(
            f"labels {tuple(y.shape)} do not match the probability {tuple(like.shape)}"
        )
    return y.to(device=like.device, dtype=like.dtype)


def cross_entropy(p: torch.Tensor, y: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-voxel binary cross-entropy ``X = -y ln p - (1 - y) ln(1 - p)`` (IteR-MRL Eq. 4).

    ``p`` is clamped to ``[eps, 1 - eps]`` so that clipped probabilities of exactly 0 or 1
    give a finite (large) penalty. Float tensor of ``p``'s shape.
    """
    q = p.clamp(eps, 1.0 - eps)
    yf = _label(y, q)
    return -(yf * torch.log(q) + (1.0 - yf) * torch.log1p(-q))


def relative_gain(
    p_prev: torch.Tensor, p_next: torch.Tensor, y: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """Cross-entropy gain ``X(t-1) - X(t)`` (IteR-MRL Eq. 3, MECCA Eq. 9)."""
    return cross_entropy(p_prev, y, eps) - cross_entropy(p_next, y, eps)


def absolute_reward(p_next: torch.Tensor, y: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Absolute reward ``-X(t)`` (IteR-MRL Table 5): minus the new prediction's distance
    (cross-entropy) to the ground truth; <= 0."""
    return -cross_entropy(p_next, y, eps)


def mecca_reward(
    gain: torch.Tensor, confidence: torch.Tensor, alpha: float = 0.8, beta: float = 1.0
) -> torch.Tensor:
    """Self-adaptive reward ``alpha * (2 - c)^beta * gain`` per voxel (MECCA Eq. 8).

    Args:
        gain: float relative gain (:func:`relative_gain`).
        confidence: float action confidence in [0, 1], same shape.
        alpha, beta: the paper's 0.8 and 1.
    """
    if confidence.shape != gain.shape:
        raise InputError(
            f"confidence {tuple(confidence.shape)} does not match the rewards {tuple(gain.shape)}"
        )
    c = confidence.to(device=gain.device, dtype=gain.dtype).clamp(0.0, 1.0)
    return alpha * (2.0 - c) ** beta * gain


def focal_weight(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Focal weight ``1 - p_true``: ``1 - p`` where y = 1, ``p`` where y = 0 (MECCA Eq. 13)."""
    yf = _label(y, p)
    return yf * (1.0 - p) + (1.0 - yf) * p


def focal_reward(
    p_prev: torch.Tensor,
    p_next: torch.Tensor,
    y: torch.Tensor,
    *,
    weight_from: FocalFrom = "next",
    eps: float = 1e-6,
) -> torch.Tensor:
    """Focal reward ``w * (X(t-1) - X(t))`` with a constant focal weight (MECCA Eqs. 12-13).

    ``w = 1 - p_true`` of ``p_next`` (default) or ``p_prev``, detached; see the module
    docstring for why one weight serves both cross-entropies.
    """
    if weight_from not in get_args(FocalFrom):
        raise ConfigError(f"focal weight_from must be 'next' or 'prev', got {weight_from!r}")
    p_w = (p_next if weight_from == "next" else p_prev).detach()
    return focal_weight(p_w, y) * relative_gain(p_prev, p_next, y, eps)


def err_reward(
    gain: torch.Tensor, p_prev: torch.Tensor, y: torch.Tensor, lam: float = 1.0
) -> torch.Tensor:
    """Error-weighted reward (MECCA Eq. 14): ``(1 + lam) * gain`` where the previous mask
    ``p_prev > 0.5`` disagrees with ``y``, ``gain`` elsewhere."""
    wrong = (p_prev > 0.5) != (_label(y, p_prev) > 0.5)
    return gain * (1.0 + lam * wrong.to(gain.dtype))


@dataclass(frozen=True)
class RewardConfig:
    """Which per-voxel reward the trainer gives, with its hyper-parameters."""

    kind: RewardKind = "relative"
    """'relative' (IteR-MRL Eq. 3), 'absolute' (IteR-MRL Table 5), 'mecca' (MECCA Eq. 8),
    'focal' (MECCA Eqs. 12-13) or 'err' (MECCA Eq. 14)."""
    alpha: float = 0.8
    """MECCA Eq. 8 scale alpha."""
    beta: float = 1.0
    """MECCA Eq. 8 exponent beta on (2 - confidence)."""
    lam: float = 1.0
    """MECCA Eq. 14 extra weight lambda > 0 on previously misclassified voxels."""
    focal_from: FocalFrom = "next"
    """Probability the focal weight is taken from: 'next' = p(t), 'prev' = p(t-1)."""
    eps: float = 1e-6
    """Cross-entropies clamp p to [eps, 1 - eps] (the papers: "away from 0 and 1"). With
    p on a 0.1 lattice only p = 0 or 1 is clamped; 1e-6 caps one voxel's cross-entropy at
    13.8 nats (heavy-tailed returns), 1e-2 at 4.6 (an easier critic); a training setting."""

    def __post_init__(self) -> None:
        if self.kind not in get_args(RewardKind):
            raise ConfigError(
                f"unknown reward kind {self.kind!r}", hint=f"use one of {get_args(RewardKind)}"
            )
        if self.focal_from not in get_args(FocalFrom):
            raise ConfigError(f"focal_from must be 'next' or 'prev', got {self.focal_from!r}")
        if not self.alpha > 0 or self.beta < 0:
            raise ConfigError(f"need alpha > 0 and beta >= 0, got {self.alpha}, {self.beta}")
        if self.lam < 0:
            raise ConfigError(f"lam must be >= 0, got {self.lam}")
        if not 0.0 < self.eps < 0.5:
            raise ConfigError(f"eps must be in (0, 0.5), got {self.eps}")


def compute_reward(
    cfg: RewardConfig,
    p_prev: torch.Tensor,
    p_next: torch.Tensor,
    y: torch.Tensor,
    confidence: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-voxel reward of one step as ``cfg`` says; float tensor of ``p_next``'s shape.

    Args:
        cfg: the reward configuration.
        p_prev, p_next: float probabilities before and after the step's actions.
        y: labels (bool or float {0, 1}), same shape.
        confidence: float action confidence in [0, 1]; required for ``kind='mecca'``.
    """
    if p_prev.shape != p_next.shape:
        raise InputError(
            f"probabilities before {tuple(p_prev.shape)} and after {tuple(p_next.shape)} "
            "the step differ in shape"
        )
    if cfg.kind == "absolute":
        return absolute_reward(p_next, y, cfg.eps)
    if cfg.kind == "focal":
        return focal_reward(p_prev, p_next, y, weight_from=cfg.focal_from, eps=cfg.eps)
    gain = relative_gain(p_prev, p_next, y, cfg.eps)
    if cfg.kind == "mecca":
        if confidence is None:
            raise ConfigError(
                "the 'mecca' reward needs the action confidence",
                hint="pass confidence=ConfidenceNet output, or use kind='relative'",
            )
        return mecca_reward(gain, confidence, cfg.alpha, cfg.beta)
    if cfg.kind == "err":
        return err_reward(gain, p_prev, y, cfg.lam)
    return gain
