"""Per-voxel rewards against hand-computed numbers and their sign properties."""

from __future__ import annotations

import math

import pytest
import torch

from mecca.errors import ConfigError, InputError
from mecca.rl.actions import ACTIONS, action_values, apply_actions
from mecca.rl.rewards import (
    RewardConfig,
    absolute_reward,
    compute_reward,
    cross_entropy,
    err_reward,
    focal_reward,
    mecca_reward,
    relative_gain,
)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_apply_actions_clips_and_indexes():
    prob = torch.tensor([[0.5, 0.95, 0.05, 0.3]])
    idx = torch.tensor([[3, 5, 0, 1]])
    out = apply_actions(prob, idx)
    assert torch.allclose(out, torch.tensor([[0.6, 1.0, 0.0, 0.1]]))
    assert torch.equal(action_values(idx), torch.tensor([[0.1, 0.4, -0.4, -0.2]]))
    assert len(ACTIONS) == 6 and 0.0 not in ACTIONS
    small = apply_actions(prob, torch.tensor([[0, 1, 1, 0]]), actions=(-0.05, 0.05))
    assert torch.allclose(small, torch.tensor([[0.45, 1.0, 0.1, 0.25]]))


def test_apply_actions_rejects_bad_indices():
    with pytest.raises(InputError, match="lie in"):
        apply_actions(torch.full((1, 2), 0.5), torch.tensor([[0, 6]]))
    with pytest.raises(InputError, match="does not match"):
        apply_actions(torch.full((1, 2), 0.5), torch.tensor([[0]]))
    with pytest.raises(InputError, match="integer"):
        action_values(torch.tensor([0.0]))


def test_cross_entropy_by_hand_and_clamped():
    x = cross_entropy(t(0.7, 0.7, 0.0, 1.0), t(1, 0, 1, 1))
    assert x[0].item() == pytest.approx(-math.log(0.7))
    assert x[1].item() == pytest.approx(-math.log(0.3))
    assert x[2].item() == pytest.approx(-math.log(1e-6))  # finite at p = 0
    assert x[3].item() == pytest.approx(1e-6, abs=1e-9)
    assert cross_entropy(t(0.5), torch.tensor([True])).item() == pytest.approx(math.log(2))


def test_relative_gain_by_hand_and_sign():
    g = relative_gain(t(0.5, 0.5, 0.5, 0.5), t(0.7, 0.7, 0.3, 0.3), t(1, 0, 1, 0))
    assert g[0].item() == pytest.approx(math.log(0.7 / 0.5))
    assert g[1].item() == pytest.approx(math.log(0.3 / 0.5))
    assert g[0] > 0 and g[3] > 0  # toward the label: positive
    assert g[1] < 0 and g[2] < 0  # away from it: negative
    assert g[2].item() == pytest.approx(math.log(0.3 / 0.5))


def test_absolute_reward_is_minus_current_cross_entropy():
    r = absolute_reward(t(0.7, 0.2), t(1, 0))
    assert r[0].item() == pytest.approx(math.log(0.7))
    assert r[1].item() == pytest.approx(math.log(0.8))
    assert torch.all(r <= 0)


def test_mecca_reward_weights_low_confidence_more():
    gain = t(0.2, 0.2, -0.2)
    r = mecca_reward(gain, t(0.0, 1.0, 0.0))
    assert r[0].item() == pytest.approx(0.8 * 2 * 0.2)
    assert r[1].item() == pytest.approx(0.8 * 1 * 0.2)
    assert r[2].item() == pytest.approx(-0.8 * 2 * 0.2)  # low confidence, wrong: punished more
    assert abs(r[0]) > abs(r[1])
    r2 = mecca_reward(t(1.0), t(0.5), alpha=1.0, beta=2.0)
    assert r2.item() == pytest.approx(1.5**2)


def test_focal_reward_weight_is_one_minus_true_probability():
    p_prev, p_next = t(0.5, 0.5), t(0.7, 0.3)
    y = t(1, 0)
    gain = math.log(0.7 / 0.5)
    r = focal_reward(p_prev, p_next, y)  # weight from p_next: 1 - 0.7 and 0.3
    assert r[0].item() == pytest.approx(0.3 * gain)
    assert r[1].item() == pytest.approx(0.3 * gain)
    r_prev = focal_reward(t(0.6), t(0.8), t(1), weight_from="prev")
    assert r_prev.item() == pytest.approx(0.4 * math.log(0.8 / 0.6))
    # sign follows the gain
    assert focal_reward(t(0.6), t(0.4), t(1)).item() < 0


def test_err_reward_only_on_errors():
    gain = t(0.1, 0.1, 0.1, 0.1)
    p_prev = t(0.7, 0.3, 0.3, 0.7)
    y = t(1, 1, 0, 0)  # correct, wrong, correct, wrong
    r = err_reward(gain, p_prev, y, lam=0.5)
    assert torch.allclose(r, t(0.1, 0.15, 0.1, 0.15))


def test_compute_reward_dispatch_and_errors():
    p_prev, p_next, y = t(0.5, 0.4), t(0.7, 0.2), t(1, 1)
    gain = relative_gain(p_prev, p_next, y)
    assert torch.allclose(compute_reward(RewardConfig(), p_prev, p_next, y), gain)
    assert torch.allclose(
        compute_reward(RewardConfig("absolute"), p_prev, p_next, y), absolute_reward(p_next, y)
    )
    c = t(0.9, 0.1)
    assert torch.allclose(
        compute_reward(RewardConfig("mecca"), p_prev, p_next, y, confidence=c),
        0.8 * (2 - c) * gain,
    )
    # p_prev = 0.5 is a background prediction (mask p > 0.5), so both voxels are errors
    assert torch.allclose(
        compute_reward(RewardConfig("err", lam=2.0), p_prev, p_next, y), gain * 3
    )
    assert torch.allclose(
        compute_reward(RewardConfig("err", lam=2.0), t(0.6, 0.4), p_next, y),
        relative_gain(t(0.6, 0.4), p_next, y) * t(1, 3),
    )
    assert torch.allclose(
        compute_reward(RewardConfig("focal"), p_prev, p_next, y), t(0.3, 0.8) * gain
    )
    with pytest.raises(ConfigError, match="confidence"):
        compute_reward(RewardConfig("mecca"), p_prev, p_next, y)
    with pytest.raises(ConfigError, match="unknown reward"):
        RewardConfig("nope")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="labels"):
        compute_reward(RewardConfig(), p_prev, p_next, t(1))


def test_rewards_on_volumes_keep_shape():
    g = torch.Generator().manual_seed(0)
    p_prev = torch.rand(2, 4, 5, 3, generator=g)
    p_next = torch.rand(2, 4, 5, 3, generator=g)
    y = torch.rand(2, 4, 5, 3, generator=g) > 0.5
    for kind in ("relative", "absolute", "focal", "err"):
        r = compute_reward(RewardConfig(kind), p_prev, p_next, y)  # type: ignore[arg-type]
        assert r.shape == p_next.shape and torch.isfinite(r).all()
