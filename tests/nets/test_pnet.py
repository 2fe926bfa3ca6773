"""ActorCritic (P-Net backbone, policy and value heads) and the network registry."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mecca.errors import ConfigError
from mecca.nets import NETWORKS, build, register
from mecca.nets.blocks import DilatedConv3d
from mecca.nets.pnet import (
    DEFAULT_ACTIONS,
    ActorCritic,
    PNetConfig,
    iter_mrl_config,
)


def _state(b: int, c: int, grid: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    return torch.randn(b, c, *grid, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("in_channels", [3, 4, 5])
@pytest.mark.parametrize("grid", [(12, 12, 8), (9, 10, 7)])
def test_forward_shapes(in_channels: int, grid: tuple[int, int, int]) -> None:
    net = ActorCritic(PNetConfig(in_channels=in_channels, width=4)).eval()
    logits, value = net(_state(2, in_channels, grid))
    assert logits.shape == (2, len(DEFAULT_ACTIONS), *grid)
    assert value.shape == (2, 1, *grid)
    assert logits.dtype == value.dtype == torch.float32
    assert logits.is_contiguous() and value.is_contiguous()
    assert net.features(_state(1, in_channels, grid)).shape == (1, 4, *grid)


def test_value_is_per_voxel() -> None:
    net = ActorCritic(PNetConfig(width=4)).eval()
    with torch.no_grad():
        _, value = net(_state(1, 3, (10, 10, 6)))
    assert value.std() > 0  # one value per voxel, not one per crop


def test_policy_logits_equal_forward() -> None:
    net = ActorCritic(PNetConfig(width=4)).eval()
    x = _state(2, 3, (12, 12, 8))
    with torch.no_grad():
        logits, _ = net(x)
        assert torch.equal(net.policy_logits(x), logits)


def test_large_dilations_keep_shape() -> None:
    cfg = PNetConfig(width=4, trunk_dilations=(1, 3, 5), head_dilations=(9, 20), head_convs=1)
    logits, value = ActorCritic(cfg).eval()(_state(1, 3, (7, 11, 5)))
    assert logits.shape[2:] == value.shape[2:] == (7, 11, 5)


def test_block_counts_follow_the_papers() -> None:
    def n_convs(m: nn.Module) -> int:
        return sum(isinstance(c, nn.Conv3d) and c.kernel_size == (3, 3, 3) for c in m.modules())

    mecca = ActorCritic(PNetConfig(width=4))
    assert n_convs(mecca.trunk) == 6 and n_convs(mecca.policy_head) == 4  # 3 + 2 blocks
    iter_mrl = ActorCritic(iter_mrl_config(width=4))
    assert iter_mrl.config.in_channels == 4
    assert n_convs(iter_mrl.value_head) == 6  # 3 blocks of 2 convs
    light = ActorCritic(PNetConfig(width=4, head_convs=1))
    assert n_convs(light.policy_head) == 2


def test_xavier_init() -> None:
    net = ActorCritic(PNetConfig(width=16, norm="none"))
    convs = [m for m in net.trunk.modules() if isinstance(m, nn.Conv3d)]
    conv = convs[2]  # second block's first conv: 16 -> 16, 3x3x3
    fan = 16 * 27
    glorot_std = math.sqrt(2.0 / (fan + fan))
    kaiming_default_std = 1.0 / math.sqrt(3.0 * fan)  # torch's default uniform init
    std = float(conv.weight.detach().std())
    assert abs(std - glorot_std) < 0.05 * glorot_std
    assert abs(std - kaiming_default_std) > 0.3 * kaiming_default_std
    for m in net.modules():
        if isinstance(m, nn.Conv3d):
            assert m.bias is not None and torch.all(m.bias == 0)


def test_batch_norm_convs_have_no_bias() -> None:
    net = ActorCritic(PNetConfig(width=4))
    assert any(isinstance(m, nn.BatchNorm3d) for m in net.modules())
    assert all(m.bias is None for m in net.trunk.modules() if isinstance(m, nn.Conv3d))


def test_memory_layout_does_not_change_results() -> None:
    a = ActorCritic(PNetConfig(width=8, channels_last=False)).eval()
    b = ActorCritic(PNetConfig(width=8, channels_last=True)).eval()
    b.load_state_dict(a.state_dict())
    x = _state(1, 3, (12, 12, 8))
    with torch.no_grad():
        torch.testing.assert_close(a.policy_logits(x), b.policy_logits(x), atol=1e-5, rtol=1e-4)


def test_train_step_updates_both_heads() -> None:
    net = ActorCritic(PNetConfig(width=4)).train()
    logits, value = net(_state(2, 3, (8, 8, 6)))
    (logits.logsumexp(1).mean() + value.square().mean()).backward()
    for head in (net.trunk, net.policy_head, net.value_head):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


def test_bad_config_and_input() -> None:
    with pytest.raises(ConfigError):
        PNetConfig(width=0)
    with pytest.raises(ConfigError):
        PNetConfig(head_dilations=())
    with pytest.raises(ConfigError):
        PNetConfig(norm="group")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="in_channels|hint channels"):
        ActorCritic(PNetConfig(width=4))(_state(1, 4, (8, 8, 6)))


def test_registry_builds_networks() -> None:
    net = build("pnet", width=4, in_channels=4)
    assert isinstance(net, ActorCritic) and net.config.width == 4
    assert isinstance(build("iter_mrl_pnet", width=4), ActorCritic)
    with pytest.raises(ConfigError, match="unknown network"):
        build("no-such-net")
    with pytest.raises(ConfigError, match="widht"):
        build("pnet", widht=4)
    register("tiny_test_net", lambda **cfg: nn.Identity())
    try:
        assert isinstance(build("tiny_test_net"), nn.Identity)
    finally:
        NETWORKS.pop("tiny_test_net")


def test_batch_statistics_normalises_with_the_input_and_restores_everything() -> None:
    from mecca.nets import batch_statistics

    net = ActorCritic(PNetConfig(width=4))
    net.eval()
    x = torch.randn(1, 3, 12, 12, 8)
    bn = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm3d))
    before = bn.running_mean.clone()
    with batch_statistics(net), torch.no_grad():
        inside = net.policy_logits(x)
    assert not bn.training and bn.momentum == 0.1
    torch.testing.assert_close(bn.running_mean, before)
    net.train()
    with torch.no_grad():
        reference = net.policy_logits(x)  # train mode: the batch's own statistics
    torch.testing.assert_close(inside, reference)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dilated_conv_matches_conv3d_outputs_and_gradients(dtype: torch.dtype) -> None:
    """The oneDNN shortcut (float32 CPU) and the fallback give nn.Conv3d's numbers."""
    torch.manual_seed(0)
    fast = DilatedConv3d(3, 8, kernel_size=3, padding=4, dilation=4).to(dtype)
    plain = nn.Conv3d(3, 8, kernel_size=3, padding=4, dilation=4).to(dtype)
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(1, 3, 9, 10, 11, dtype=dtype, requires_grad=True)
    y_fast, y_plain = fast(x), plain(x)
    assert y_fast.shape == (1, 8, 9, 10, 11)
    torch.testing.assert_close(y_fast, y_plain, rtol=1e-5, atol=1e-5)
    g_fast = torch.autograd.grad(y_fast.square().sum(), (x, fast.weight, fast.bias))
    g_plain = torch.autograd.grad(y_plain.square().sum(), (x, plain.weight, plain.bias))
    for a, b in zip(g_fast, g_plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
