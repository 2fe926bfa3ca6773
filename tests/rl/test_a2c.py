"""A2C maths against hand-built cases: returns, advantages, gradient signs, masks."""

from __future__ import annotations

import math

import pytest
import torch

from mecca.errors import ConfigError, InputError
from mecca.rl.a2c import A2CConfig, a2c_loss, discounted_returns


def uniform(t: int, b: int, *vox: int, a: int = 6) -> torch.Tensor:
    return torch.zeros(t, b, a, *vox, dtype=torch.float64, requires_grad=True)


def test_returns_by_hand():
    r = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    R = discounted_returns(r, 0.95)
    assert R.tolist() == pytest.approx([1 + 0.95 * 2 + 0.95**2 * 3, 2 + 0.95 * 3, 3.0])
    assert R.tolist() == pytest.approx([5.6075, 4.85, 3.0])
    Rb = discounted_returns(r, 0.95, bootstrap=torch.tensor(10.0, dtype=torch.float64))
    assert Rb.tolist() == pytest.approx([5.6075 + 0.95**3 * 10, 4.85 + 0.95**2 * 10, 13.0 - 0.5])


def test_returns_per_voxel_shape():
    r = torch.ones(3, 2, 4, 4, 2)
    R = discounted_returns(r, 0.5)
    assert R.shape == r.shape
    assert torch.allclose(R[0], torch.full((2, 4, 4, 2), 1.75))
    with pytest.raises(ConfigError):
        discounted_returns(r, 0.0)
    with pytest.raises(InputError):
        discounted_returns(torch.zeros(0, 2))


def _two_step_case():
    # T = 2, B = 1, two voxels; gamma = 0.5
    rewards = torch.tensor([[[1.0, 3.0]], [[2.0, 0.0]]], dtype=torch.float64)
    values = torch.tensor([[[[0.5, 1.0]]], [[[1.0, 0.0]]]], dtype=torch.float64)
    actions = torch.zeros(2, 1, 2, dtype=torch.long)
    return uniform(2, 1, 2), values.requires_grad_(), actions, rewards


def test_voxel_advantage_by_hand():
    logits, values, actions, rewards = _two_step_case()
    terms = a2c_loss(logits, values, actions, rewards, gamma=0.5, advantage_mode="voxel",
                     value_coef=0.5, entropy_coef=0.01)
    # returns: t=1 -> [2, 0]; t=0 -> [1 + 1, 3 + 0] = [2, 3]; A = R - V
    adv = [1.5, 2.0, 1.0, 0.0]
    assert terms.value.item() == pytest.approx(sum(a * a for a in adv) / 4)
    assert terms.policy.item() == pytest.approx(math.log(6) * sum(adv) / 4)
    assert terms.entropy.item() == pytest.approx(math.log(6))
    expected = terms.policy.item() + 0.5 * terms.value.item() - 0.01 * math.log(6)
    assert terms.total.item() == pytest.approx(expected)
    assert terms.mean_return == pytest.approx((2 + 3 + 2 + 0) / 4)
    assert terms.mask_fraction == 1.0


def test_mean_advantage_by_hand():
    logits, values, actions, rewards = _two_step_case()
    terms = a2c_loss(logits, values, actions, rewards, gamma=0.5, advantage_mode="mean")
    # r_bar = [2, 1]; R = [2 + 0.5, 1]; V_bar = [0.75, 0.5]; A = [1.75, 0.5]
    assert terms.value.item() == pytest.approx((1.75**2 + 0.5**2) / 2)
    assert terms.policy.item() == pytest.approx(math.log(6) * (1.75 + 0.5) / 2)
    assert terms.mean_reward == pytest.approx(1.5)
    assert terms.mean_value == pytest.approx(0.625)


def test_config_kwargs_and_validation():
    logits, values, actions, rewards = _two_step_case()
    cfg = A2CConfig(gamma=0.5, advantage_mode="voxel")
    a = a2c_loss(logits, values, actions, rewards, **cfg.as_kwargs())  # type: ignore[arg-type]
    b = a2c_loss(logits, values, actions, rewards, gamma=0.5, advantage_mode="voxel")
    assert a.as_dict() == b.as_dict()
    with pytest.raises(ConfigError, match="advantage"):
        A2CConfig(advantage_mode="pixel")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="values"):
        a2c_loss(logits, values[:, :, :, :1], actions, rewards)
    with pytest.raises(InputError, match="integer"):
        a2c_loss(logits, values, actions.float(), rewards)


@pytest.mark.parametrize("mode", ["mean", "voxel"])
@pytest.mark.parametrize("reward", [1.0, -1.0])
def test_policy_gradient_sign(mode, reward):
    torch.manual_seed(0)
    logits = torch.zeros(1, 2, 6, 3, 3, 2, requires_grad=True)  # raw logits as parameters
    values = torch.zeros(1, 2, 1, 3, 3, 2)
    actions = torch.full((1, 2, 3, 3, 2), 4, dtype=torch.long)
    rewards = torch.full((1, 2, 3, 3, 2), reward)
    opt = torch.optim.SGD([logits], lr=0.5)
    before = torch.log_softmax(logits, dim=2)[:, :, 4].detach().clone()
    loss = a2c_loss(logits, values, actions, rewards, advantage_mode=mode, entropy_coef=0.0)
    opt.zero_grad()
    loss.total.backward()
    opt.step()
    after = torch.log_softmax(logits, dim=2)[:, :, 4].detach()
    if reward > 0:
        assert torch.all(after > before)
    else:
        assert torch.all(after < before)


def test_value_loss_moves_value_toward_return():
    values = torch.zeros(2, 1, 1, 2, 2, requires_grad=True)
    logits = torch.zeros(2, 1, 6, 2, 2)
    actions = torch.zeros(2, 1, 2, 2, dtype=torch.long)
    rewards = torch.ones(2, 1, 2, 2)
    for mode in ("mean", "voxel"):
        values.grad = None
        a2c_loss(logits, values, actions, rewards, advantage_mode=mode).total.backward()
        assert values.grad is not None and torch.all(values.grad < 0)  # gradient descent raises V


def test_entropy_of_uniform_logits_is_ln6():
    terms = a2c_loss(uniform(2, 3, 2, 2, 2), torch.zeros(2, 3, 1, 2, 2, 2),
                     torch.zeros(2, 3, 2, 2, 2, dtype=torch.long), torch.zeros(2, 3, 2, 2, 2))
    assert terms.entropy.item() == pytest.approx(math.log(6))
    peaked = torch.zeros(1, 1, 6, 2)
    peaked[:, :, 0] = 50.0
    low = a2c_loss(peaked, torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 2, dtype=torch.long),
                   torch.zeros(1, 1, 2))
    assert low.entropy.item() < 1e-6


@pytest.mark.parametrize("mode", ["mean", "voxel"])
@pytest.mark.parametrize("time_mask", [False, True])
def test_mask_removes_voxels_from_the_loss(mode, time_mask):
    g = torch.Generator().manual_seed(3)
    T, B = 3, 2
    logits = torch.randn(T, B, 6, 4, 4, generator=g, requires_grad=True)
    values = torch.randn(T, B, 1, 4, 4, generator=g, requires_grad=True)
    actions = torch.randint(0, 6, (T, B, 4, 4), generator=g)
    rewards = torch.randn(T, B, 4, 4, generator=g)
    mask = torch.zeros(B, 4, 4, dtype=torch.bool)
    mask[:, :2] = True
    m = mask.expand(T, B, 4, 4) if time_mask else mask
    terms = a2c_loss(logits, values, actions, rewards, advantage_mode=mode, mask=m)
    terms.total.backward()
    assert logits.grad is not None and values.grad is not None
    assert torch.all(logits.grad[:, :, :, 2:] == 0) and torch.all(values.grad[:, :, :, 2:] == 0)
    assert logits.grad[:, :, :, :2].abs().sum() > 0 and values.grad[:, :, :, :2].abs().sum() > 0
    assert terms.mask_fraction == pytest.approx(0.5)
    # the masked loss equals the unmasked loss on the kept voxels only
    kept = a2c_loss(logits[..., :2, :], values[..., :2, :], actions[..., :2, :],
                    rewards[..., :2, :], advantage_mode=mode)
    assert terms.total.item() == pytest.approx(kept.total.item(), rel=1e-5)
    with pytest.raises(InputError, match="mask"):
        a2c_loss(logits, values, actions, rewards, mask=mask[0])


@pytest.mark.parametrize("mode", ["mean", "voxel"])
def test_rewards_outside_the_mask_enter_no_return(mode):
    """Eq. 11: a (step, voxel) outside the mask adds nothing to any kept voxel's return."""
    g = torch.Generator().manual_seed(5)
    T, B = 3, 1
    logits = torch.randn(T, B, 6, 4, generator=g)
    values = torch.randn(T, B, 1, 4, generator=g)
    actions = torch.randint(0, 6, (T, B, 4), generator=g)
    rewards = torch.randn(T, B, 4, generator=g)
    mask = torch.ones(T, B, 4, dtype=torch.bool)
    mask[1:, :, 0] = False  # voxel 0 is trusted at step 0 only
    noisy = rewards.clone()
    noisy[~mask] = 100.0
    a = a2c_loss(logits, values, actions, rewards, advantage_mode=mode, mask=mask, gamma=0.9)
    b = a2c_loss(logits, values, actions, noisy, advantage_mode=mode, mask=mask, gamma=0.9)
    assert a.total.item() == pytest.approx(b.total.item(), rel=1e-6)
    assert a.mean_return == pytest.approx(b.mean_return, rel=1e-6)
