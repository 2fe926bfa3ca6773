"""Discrete probability-adjustment actions of the voxel agents.

Each voxel picks an index into an action set ``A`` and moves its foreground probability
by that amount, clipped to [0, 1] (MECCA Eq. 2, IteR-MRL Eq. 2):
``p_i <- clip(p_i + A[a_i], 0, 1)``. The default set of both papers has no zero action.
Other sets (IteR-MRL Table 4 ablation) are plain tuples of floats.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mecca.errors import ConfigError, InputError

ACTIONS: tuple[float, ...] = (-0.4, -0.2, -0.1, 0.1, 0.2, 0.4)
"""The paper's action set {+-0.1, +-0.2, +-0.4}, in ascending order (index = action id)."""


def check_actions(actions: Sequence[float]) -> tuple[float, ...]:
    """The action set as a tuple of floats; ConfigError if empty or not finite."""
    out = tuple(float(a) for a in actions)
    if not out:
        raise ConfigError("an action set needs at least one action")
    if not all(-1.0 <= a <= 1.0 for a in out):
        raise ConfigError(f"actions move a probability, so they must lie in [-1, 1]: {out}")
    return out


def action_values(action_idx: torch.Tensor, actions: Sequence[float] = ACTIONS) -> torch.Tensor:
    """Float32 tensor of the amounts ``A[action_idx]``, same shape and device as the indices.

    Args:
        action_idx: integer tensor of any shape, values in ``[0, len(actions))``.
        actions: the action set.
    """
    table = torch.tensor(check_actions(actions), dtype=torch.float32, device=action_idx.device)
    if action_idx.dtype.is_floating_point or action_idx.dtype == torch.bool:
        raise InputError(f"action indices must be an integer tensor, got {action_idx.dtype}")
    if action_idx.numel() and (int(action_idx.min()) < 0 or int(action_idx.max()) >= len(table)):
        raise InputError(
            f"action indices must lie in [0, {len(table)}), got "
            f"[{int(action_idx.min())}, {int(action_idx.max())}]"
        )
    return table[action_idx.long()]


def apply_actions(
    prob: torch.Tensor, action_idx: torch.Tensor, actions: Sequence[float] = ACTIONS
) -> torch.Tensor:
    """New probability ``clip(prob + A[action_idx], 0, 1)`` (MECCA Eq. 2); a new tensor.

    Args:
        prob: float (B, I, J, K) foreground probability in [0, 1].
        action_idx: integer (B, I, J, K) action indices.
        actions: the action set.

    Returns:
        Float tensor of ``prob``'s shape and dtype.
    """
    if prob.shape != action_idx.shape:
        raise InputError(
            f"action map {tuple(action_idx.shape)} does not match the probability "
            f"{tuple(prob.shape)}"
        )
    step = action_values(action_idx, actions).to(prob.dtype)
    return (prob + step).clamp_(0.0, 1.0)
