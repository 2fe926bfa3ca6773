"""MECCA's confidence network C and the symmetric-sample BCE of Eq. 6."""

from __future__ import annotations

import math

import pytest
import torch

from mecca.errors import ConfigError
from mecca.nets import build
from mecca.nets.confidence import (
    ConfidenceConfig,
    ConfidenceNet,
    action_agreement,
    action_confidence,
    confidence_loss,
)
from mecca.nets.pnet import ActorCritic, PNetConfig, batch_statistics

GRID = (8, 8, 6)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _actions(b: int, seed: int = 0) -> torch.Tensor:
    values = torch.tensor([-0.4, -0.2, -0.1, 0.1, 0.2, 0.4])
    return values[torch.randint(0, 6, (b, 1, *GRID), generator=_gen(seed))]


def _label(b: int, seed: int = 1) -> torch.Tensor:
    return (torch.rand(b, 1, *GRID, generator=_gen(seed)) > 0.5).float()


def _small_net(in_channels: int = 4) -> ConfidenceNet:
    return ConfidenceNet(ConfidenceConfig(in_channels=in_channels, width=4, dilations=(1, 2)))


def _bce(z: float, t: float) -> float:
    p = 1.0 / (1.0 + math.exp(-z))
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def test_confidence_shape_and_range() -> None:
    net = ConfidenceNet(ConfidenceConfig(width=4)).eval()
    state = torch.randn(2, 3, *GRID, generator=_gen())
    c = net(state, _actions(2))
    assert c.shape == (2, 1, *GRID) and c.dtype == torch.float32
    assert torch.all((c >= 0) & (c <= 1))
    torch.testing.assert_close(c, torch.sigmoid(net.logits(state, _actions(2))))


def test_six_blocks_by_default() -> None:
    net = ConfidenceNet()
    assert len(net.blocks) == 6
    assert sum(isinstance(m, torch.nn.Conv3d) for m in net.blocks.modules()) == 12


def test_action_agreement_table() -> None:
    a = torch.tensor([0.2, 0.2, -0.1, -0.1, 0.0, 0.0])
    y = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    assert action_agreement(a, y).tolist() == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert action_agreement(a, y.bool()).tolist() == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]


def test_loss_matches_hand_computed_bce(monkeypatch: pytest.MonkeyPatch) -> None:
    net = _small_net()
    z_pos, z_neg = 0.7, -1.3  # constant logits for the (s, a) and the (s, -a) halves

    def fixed_logits(state: torch.Tensor, action_values: torch.Tensor) -> torch.Tensor:
        b = state.shape[0] // 2
        assert torch.equal(action_values[b:], -action_values[:b])  # the symmetric sample
        out = torch.full_like(action_values, z_pos)
        out[b:] = z_neg
        return out

    monkeypatch.setattr(net, "logits", fixed_logits)
    a = torch.tensor([0.1, -0.2, 0.4, -0.4]).reshape(1, 1, 4, 1, 1)
    y = torch.tensor([1.0, 1.0, 0.0, 0.0]).reshape(1, 1, 4, 1, 1)
    g = [1.0, 0.0, 0.0, 1.0]
    expected = sum(_bce(z_pos, t) for t in g) / 4 + sum(_bce(z_neg, 1 - t) for t in g) / 4
    loss = confidence_loss(net, torch.zeros(1, 3, 4, 1, 1), a, y)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


class _Oracle(torch.nn.Module):
    """Logit +k where the action agrees with the label in state channel 0, else -k."""

    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = k

    def forward(
        self, state: torch.Tensor, action_values: torch.Tensor, *, logits: bool
    ) -> torch.Tensor:
        assert logits
        agree = torch.sign(action_values) * (2 * state[:, :1] - 1)
        return self.k * agree


def test_symmetric_sample_flips_the_target() -> None:
    a, y = _actions(2), _label(2)
    state = torch.cat([y, torch.zeros(2, 2, *GRID)], dim=1)
    good = confidence_loss(_Oracle(20.0), state, a, y)
    bad = confidence_loss(_Oracle(-20.0), state, a, y)
    assert good.item() < 1e-6  # right on a and, with g flipped, right on -a
    assert bad.item() == pytest.approx(40.0, rel=1e-3)


class _Free(torch.nn.Module):
    """Returns a free logit tensor, so the loss's gradient per voxel can be read off."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.z = torch.nn.Parameter(torch.randn(shape, generator=_gen(3)))

    def forward(
        self, state: torch.Tensor, action_values: torch.Tensor, *, logits: bool
    ) -> torch.Tensor:
        return self.z


def test_masked_loss_ignores_masked_voxels() -> None:
    a, y = _actions(1), _label(1)
    mask = torch.zeros(1, 1, *GRID, dtype=torch.bool)
    mask[..., :3] = True
    net = _Free((2, 1, *GRID))
    loss = confidence_loss(net, torch.zeros(1, 3, *GRID), a, y, mask)
    loss.backward()
    grad = net.z.grad
    assert grad is not None
    assert torch.all(grad[:, :, :, :, 3:] == 0)
    assert torch.all(grad[:, :, :, :, :3] != 0)
    g = action_agreement(a, y)
    z = net.z.detach()
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    pos = bce(z[:1], g, reduction="none")[mask].mean()
    neg = bce(z[1:], 1 - g, reduction="none")[mask].mean()
    assert loss.item() == pytest.approx((pos + neg).item(), rel=1e-5)
    empty = torch.zeros_like(mask)
    assert confidence_loss(net, torch.zeros(1, 3, *GRID), a, y, empty).item() == 0.0


def _episode_sample(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(state, action map, label) on a 16 x 16 x 10 grid: a ball in noise, and actions that
    follow a prediction with blob-shaped errors, spatially coherent as a policy's are."""
    g = _gen(seed)
    grid = (16, 16, 10)
    ii, jj, kk = torch.meshgrid(
        *[torch.arange(n, dtype=torch.float32) for n in grid], indexing="ij"
    )
    c = torch.rand(3, generator=g) * 4 + torch.tensor([6.0, 6.0, 3.0])
    y = ((ii - c[0]) / 5) ** 2 + ((jj - c[1]) / 5) ** 2 + ((kk - c[2]) / 3) ** 2 <= 1
    image = 2 * y.float() - 1 + 0.5 * torch.randn(grid, generator=g)
    blobs = torch.nn.functional.avg_pool3d(torch.randn(1, 1, *grid, generator=g), 5, 1, 2)[0, 0]
    pred = (y.float() + 3 * blobs) > 0.5
    size = torch.tensor([0.1, 0.2, 0.4])[torch.randint(0, 3, grid, generator=g)]
    a = torch.where(pred, size, -size)
    state = torch.stack([image, pred.float(), torch.zeros(grid)])
    return state[None], a[None, None], y.float()[None, None]


def test_confidence_is_learnable() -> None:
    torch.manual_seed(0)
    net = ConfidenceNet(ConfidenceConfig(in_channels=4, width=8, dilations=(1, 2))).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for step in range(30):
        loss = confidence_loss(net, *_episode_sample(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5


def test_action_confidence_normalises_as_training_did() -> None:
    """Trained on symmetric batches, C must be evaluated on one too: with batch statistics
    over the taken actions alone it loses their mean direction (it did: simulated labels at
    chance on the hippocampus)."""
    torch.manual_seed(0)
    net = ConfidenceNet(ConfidenceConfig(in_channels=4, width=8, dilations=(1, 2))).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for step in range(60):
        loss = confidence_loss(net, *_episode_sample(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    right, plain = [], []
    for seed in range(100, 104):
        state, a, y = _episode_sample(seed)
        a = -a.abs()  # an all-negative action map: its mean direction carries the signal
        g = action_agreement(a, y)
        with batch_statistics(net), torch.no_grad():
            right.append(((action_confidence(net, state, a) > 0.5).float() == g).float().mean())
            plain.append(((net(state, a) > 0.5).float() == g).float().mean())
    assert torch.stack(right).mean() > 0.8
    assert torch.stack(right).mean() > torch.stack(plain).mean() + 0.1


def test_shared_trunk_variant() -> None:
    ac = ActorCritic(PNetConfig(width=4)).eval()
    head = ConfidenceNet(ConfidenceConfig.shared_trunk(ac.config)).eval()
    assert head.config.in_channels == 5 and len(head.blocks) == 3
    state = torch.randn(1, 3, *GRID, generator=_gen())
    features = ac.features(state).detach()
    c = head(features, _actions(1))
    assert c.shape == (1, 1, *GRID)
    loss = confidence_loss(head, features, _actions(1), _label(1))
    loss.backward()
    assert all(p.grad is None for p in ac.parameters())


def test_shape_errors_and_registry() -> None:
    net = _small_net()
    with pytest.raises(ConfigError):
        net(torch.zeros(1, 4, *GRID), _actions(1))  # state has one channel too many
    with pytest.raises(ConfigError):
        net(torch.zeros(1, 3, *GRID), torch.zeros(1, 1, 8, 8, 5))
    with pytest.raises(ConfigError):
        confidence_loss(net, torch.zeros(1, 3, *GRID), _actions(1), torch.zeros(1, *GRID))
    with pytest.raises(ConfigError):
        ConfidenceConfig(in_channels=1)
    built = build("confidence", in_channels=5, width=4)
    assert isinstance(built, ConfidenceNet) and built.config.in_channels == 5
