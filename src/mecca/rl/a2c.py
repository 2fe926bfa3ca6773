"""Synchronous advantage actor-critic (A2C) losses over a batched voxel-agent episode.

IteR-MRL (Sec. 3.3, Eqs. 6-8) and MECCA (Eqs. 3-5) train with A3C; here one batch of B
volumes plays a whole T-step episode and the losses are summed over it (synchronous A2C).
Tensors are stacked over time: ``(T, B, ...)`` where ``...`` are the voxel axes (I, J, K).

Returns (MECCA Eq. 3, IteR-MRL Eq. 7): ``R_t = sum_{k >= t} gamma^(k - t) r_k``; episodes
end after T steps, so there is no bootstrap value unless one is given.

Two advantage modes (``advantage_mode``):

* ``'mean'`` (the papers, IteR-MRL Eq. 7 / MECCA Eq. 4): the reward of a volume at step k
  is the mean of its voxel rewards ``r_bar(k)``; the state value of the volume is the mean
  of the value head's per-voxel outputs ``V_bar(s(t))``; the advantage is one scalar per
  volume and step, ``A(t) = sum_{k >= t} gamma^(k - t) r_bar(k) - V_bar(s(t))``. The value
  loss is ``A(t)^2`` averaged over volumes and steps; the policy loss is
  ``-log pi(a_i(t) | s(t)) * A(t)`` with the same scalar ``A(t)`` broadcast to every voxel,
  averaged over voxels, volumes and steps.
* ``'voxel'`` (PixelRL): every voxel has its own return ``R_i(t)`` from its own rewards and
  its own value ``V_i(s(t))``; ``A_i(t) = R_i(t) - V_i(s(t))``; the value loss is
  ``A_i(t)^2`` and the policy loss ``-log pi(a_i(t) | s(t)) * A_i(t)``, both averaged over
  voxels, volumes and steps.

In both modes the advantage in the policy loss is detached (the critic is a baseline),
and an entropy bonus (the mean per-voxel policy entropy, in nats) is subtracted:
``total = policy + value_coef * value - entropy_coef * entropy``.

An optional voxel mask (MECCA Eq. 11, simulated labels of unlabeled volumes), bool or
{0, 1}, of shape (B, ...) (the same for every step) or (T, B, ...), selects which
(step, voxel) terms enter the losses: every mean becomes a masked mean, so masked-out
voxels get exactly zero gradient. Rewards outside the mask count as 0 in both modes: in
``'mean'`` mode the per-volume reward and value means are taken over the masked-in voxels
(a volume-step with none left drops out of the value loss); in ``'voxel'`` mode a voxel's
return sums only its masked-in rewards, so no reward of an untrusted (step, voxel) enters
any return.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from mecca.errors import ConfigError, InputError

AdvantageMode = Literal["mean", "voxel"]


@dataclass(frozen=True)
class A2CConfig:
    """Hyper-parameters of :func:`a2c_loss`; ``a2c_loss(..., **cfg.as_kwargs())``."""

    gamma: float = 0.95
    """Discount factor in (0, 1] (both papers: 0.95)."""
    advantage_mode: AdvantageMode = "mean"
    """'mean' (the papers: volume-mean reward and value) or 'voxel' (PixelRL)."""
    value_coef: float = 0.5
    """Weight of the value loss A^2 in the total."""
    entropy_coef: float = 0.01
    """Weight of the entropy bonus (subtracted from the total)."""

    def __post_init__(self) -> None:
        _check_settings(self.gamma, self.advantage_mode, self.value_coef, self.entropy_coef)

    def as_kwargs(self) -> dict[str, float | str]:
        """The fields as keyword arguments of :func:`a2c_loss`."""
        return asdict(self)


def _check_settings(gamma: float, mode: str, value_coef: float, entropy_coef: float) -> None:
    """ConfigError for a discount outside (0, 1], an unknown mode or negative weights."""
    if not 0.0 < gamma <= 1.0:
        raise ConfigError(f"gamma must lie in (0, 1], got {gamma}")
    if mode not in get_args(AdvantageMode):
        raise ConfigError(
            f"unknown advantage mode {mode!r}", hint=f"use one of {get_args(AdvantageMode)}"
        )
    if value_coef < 0 or entropy_coef < 0:
        raise ConfigError(f"loss weights must be >= 0, got {value_coef}, {entropy_coef}")


@dataclass(frozen=True)
class LossTerms:
    """The A2C loss of one batched episode and its diagnostics.

    Tensors are 0-d; ``total`` is what to back-propagate. Floats are for logging.
    """

    total: torch.Tensor
    policy: torch.Tensor
    value: torch.Tensor
    entropy: torch.Tensor
    mean_reward: float
    """Mean (masked) per-voxel reward over the episode."""
    mean_return: float
    """Mean return R(t) (per voxel in 'voxel' mode, per volume in 'mean' mode)."""
    mean_value: float
    """Mean critic value, in the same units as ``mean_return``."""
    mask_fraction: float
    """Share of (step, voxel) terms that entered the losses (1.0 without a mask)."""

    def as_dict(self) -> dict[str, float]:
        """All terms as plain floats, for logs."""
        return {
            "total": float(self.total.detach()),
            "policy": float(self.policy.detach()),
            "value": float(self.value.detach()),
            "entropy": float(self.entropy.detach()),
            "mean_reward": self.mean_reward,
            "mean_return": self.mean_return,
            "mean_value": self.mean_value,
            "mask_fraction": self.mask_fraction,
        }


def discounted_returns(
    rewards: torch.Tensor, gamma: float = 0.95, bootstrap: torch.Tensor | None = None
) -> torch.Tensor:
    """``R_t = sum_{k >= t} gamma^(k - t) r_k + gamma^(T - t) * bootstrap`` (MECCA Eq. 3).

    Args:
        rewards: float (T, ...) rewards, time first.
        gamma: discount in (0, 1].
        bootstrap: value of the state after the last step, broadcastable to ``rewards[0]``;
            None for a terminal episode (both papers: episodes end after T steps).

    Returns:
        Float (T, ...) returns, same dtype and device as ``rewards``.
    """
    if rewards.ndim < 1 or rewards.shape[0] == 0:
        raise InputError(f"rewards need a non-empty time axis first, got {tuple(rewards.shape)}")
    if not 0.0 < gamma <= 1.0:
        raise ConfigError(f"gamma must lie in (0, 1], got {gamma}")
    running = torch.zeros_like(rewards[0])
    if bootstrap is not None:
        running = running + bootstrap.to(device=rewards.device, dtype=rewards.dtype)
    out = []
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = rewards[t] + gamma * running
        out.append(running)
    return torch.stack(out[::-1])


def _masked_mean(x: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``x`` over all elements where ``m`` is set (0 when none is)."""
    if m is None:
        return x.mean()
    return (x * m).sum() / m.sum().clamp(min=1.0)


def _check_shapes(
    logits: torch.Tensor, values: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor
) -> None:
    """InputError unless logits (T,B,A,...), values (T,B,1,...), actions/rewards (T,B,...)."""
    if rewards.ndim < 2:
        raise InputError(f"rewards must be (T, B, ...), got {tuple(rewards.shape)}")
    tb, vox = tuple(rewards.shape[:2]), tuple(rewards.shape[2:])
    if tuple(actions.shape) != tuple(rewards.shape):
        raise InputError(f"actions {tuple(actions.shape)} differ from rewards {tb + vox}")
    logits_fit = tuple(logits.shape[:2]) == tb and tuple(logits.shape[3:]) == vox
    if logits.ndim != rewards.ndim + 1 or not logits_fit:
        raise InputError(f"logits must be {tb + ('A',) + vox}, got {tuple(logits.shape)}")
    if tuple(values.shape) != tb + (1,) + vox:
        raise InputError(f"values must be {tb + (1,) + vox}, got {tuple(values.shape)}")
    if actions.dtype.is_floating_point or actions.dtype == torch.bool:
        raise InputError(f"actions must be integer indices, got {actions.dtype}")


def _prepare_mask(mask: torch.Tensor | None, rewards: torch.Tensor) -> torch.Tensor | None:
    """Float {0, 1} mask of ``rewards``' shape from a (B, ...) or (T, B, ...) mask."""
    if mask is None:
        return None
    shape = tuple(rewards.shape)
    if tuple(mask.shape) not in (shape, shape[1:]):
        raise InputError(f"mask must be {shape[1:]} or {shape}, got {tuple(mask.shape)}")
    m = (mask != 0).to(device=rewards.device, dtype=rewards.dtype)
    return m.expand(shape)


def _mean_mode(
    logp: torch.Tensor,
    v: torch.Tensor,
    rewards: torch.Tensor,
    m: torch.Tensor | None,
    gamma: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Policy loss, value loss, returns (T, B) and values (T, B) with volume-mean rewards."""
    vox = tuple(range(2, rewards.ndim))
    weight = torch.ones_like(rewards) if m is None else m
    count = weight.sum(dim=vox)
    safe = count.clamp(min=1.0)
    r_bar = (rewards * weight).sum(dim=vox) / safe
    v_bar = (v * weight).sum(dim=vox) / safe
    returns = discounted_returns(r_bar, gamma)
    adv = returns - v_bar
    present = (count > 0).to(adv.dtype)
    value_loss = (adv.pow(2) * present).sum() / present.sum().clamp(min=1.0)
    adv_voxels = adv.detach().reshape(adv.shape + (1,) * len(vox))
    policy_loss = _masked_mean(-logp * adv_voxels, m)
    return policy_loss, value_loss, returns, v_bar


def _voxel_mode(
    logp: torch.Tensor,
    v: torch.Tensor,
    rewards: torch.Tensor,
    m: torch.Tensor | None,
    gamma: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Policy loss, value loss, returns and values, all per voxel (PixelRL)."""
    returns = discounted_returns(rewards if m is None else rewards * m, gamma)
    adv = returns - v
    value_loss = _masked_mean(adv.pow(2), m)
    policy_loss = _masked_mean(-logp * adv.detach(), m)
    return policy_loss, value_loss, returns, v


def a2c_loss(
    logits: torch.Tensor,
    values: torch.Tensor,
    actions: torch.Tensor,
    rewards: torch.Tensor,
    *,
    gamma: float = 0.95,
    advantage_mode: AdvantageMode = "mean",
    value_coef: float = 0.5,
    entropy_coef: float = 0.01,
    mask: torch.Tensor | None = None,
) -> LossTerms:
    """A2C loss of one batched episode (IteR-MRL Eqs. 6-8, MECCA Eqs. 4-5 and 11).

    Args:
        logits: float (T, B, A, ...) policy logits over the A actions, per voxel.
        values: float (T, B, 1, ...) value head output, per voxel.
        actions: integer (T, B, ...) indices of the actions taken.
        rewards: float (T, B, ...) per-voxel rewards (no gradient needed).
        gamma: discount in (0, 1].
        advantage_mode: 'mean' (the papers) or 'voxel' (PixelRL); see the module docstring.
        value_coef, entropy_coef: weights of the value loss and the entropy bonus.
        mask: optional bool/{0, 1} (B, ...) or (T, B, ...) voxel mask (MECCA Eq. 11).

    Returns:
        :class:`LossTerms`; back-propagate ``total``.
    """
    _check_settings(gamma, advantage_mode, value_coef, entropy_coef)
    _check_shapes(logits, values, actions, rewards)
    rewards = rewards.detach().to(values.dtype)
    m = _prepare_mask(mask, rewards)
    logp_all = F.log_softmax(logits, dim=2)
    logp = logp_all.gather(2, actions.long().unsqueeze(2)).squeeze(2)
    entropy = _masked_mean(-(logp_all.exp() * logp_all).sum(dim=2), m)
    v = values.squeeze(2)
    terms = _mean_mode if advantage_mode == "mean" else _voxel_mode
    policy_loss, value_loss, returns, v_used = terms(logp, v, rewards, m, gamma)
    total = policy_loss + value_coef * value_loss - entropy_coef * entropy
    per_voxel = m if advantage_mode == "voxel" else None
    return LossTerms(
        total=total,
        policy=policy_loss,
        value=value_loss,
        entropy=entropy,
        mean_reward=float(_masked_mean(rewards, m)),
        mean_return=float(_masked_mean(returns, per_voxel)),
        mean_value=float(_masked_mean(v_used.detach(), per_voxel)),
        mask_fraction=1.0 if m is None else float(m.mean()),
    )
