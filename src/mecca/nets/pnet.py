"""P-Net-style actor-critic for voxel agents (IteR-MRL Fig. 3, MECCA Fig. 4).

Every voxel is an agent. The network reads the state ``s = [b, p, h...]`` (intensity,
current foreground probability, hint channels) as a (B, C, I, J, K) float32 tensor and
returns, per voxel, logits over the discrete action set (policy head) and one state value
(value head). Resolution is never reduced: every 3x3x3 convolution is dilated and padded by
its dilation, so the output grid equals the input grid for any spatial size (default crop
55 x 55 x 30).

Layout (MECCA Sec. 3.2): a shared trunk of three blocks, then a policy head and a value head
of their own blocks. A block is ``convs_per_block`` x (3x3x3 dilated conv -> BatchNorm3d ->
ReLU). MECCA gives each head two blocks; IteR-MRL (Sec. 3.3) gives each head three
(:func:`iter_mrl_config`). Weights use Xavier/Glorot uniform init with zero bias, as both
papers state (MECCA Sec. 4.1).

Batch norm and RL: training rollouts run in ``train()`` mode, so batch norm normalises
with the statistics of the crops being segmented (B x I x J x K voxels, 90 750 per
55 x 55 x 30 crop). Inference must do the same (:func:`batch_statistics`): the running
averages mix all T steps, whose probability and hint channels differ widely, and a policy
run on them drifts. Measured on the hippocampus val split (IteR-MRL, 360 episodes, 4
cases, Dice % per step): running statistics 63.9, 42.8, 39.4, 37.7, 36.6; the crop's own
statistics 75.6, 77.3, 77.7, 77.5, 76.6.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from torch import nn

from mecca.errors import ConfigError
from mecca.nets.blocks import Norm, as_layout, check_input, conv_stack, set_layout, xavier_init

#: IteR-MRL / MECCA action set A (probability increments, no zero action). The networks only
#: need its size; the RL code owns the values.
DEFAULT_ACTIONS: tuple[float, ...] = (-0.4, -0.2, -0.1, 0.1, 0.2, 0.4)

@dataclass(frozen=True)
class PNetConfig:
    """Shape of :class:`ActorCritic`.

    Default width 8, chosen by measurement (``benchmarks/net_speed.py``: 2 CPU threads,
    float32, one 55 x 55 x 30 crop, medians of interleaved runs). The interactive budget is
    ~250 ms per step for everything; one MECCA model step (policy, then the separate
    confidence network on the greedy action) costs 168 ms at width 8 and 277 ms at width
    16, so width 8 is the fastest, and the only, width within budget that keeps the papers'
    layout (width 12 costs as much as 16: oneDNN blocks channels by 8 on this AVX2 CPU;
    24 and 32 cost 1.8x and 3.2x). Policy-only inference: 56 ms (w8), 109 ms (w16); a
    training step (batch 2, both heads, Adam): 0.61 s (w8), 1.0 s (w16). The Dice cost of
    width 8 against 16 is not measured here: if it loses Dice, width 16 with the
    shared-trunk confidence head (168 ms per step) is the equally fast alternative.
    ``channels_last`` (about 3x, identical numbers) is the one free speed-up;
    ``head_convs=1`` saves only ~15 % and ``torch.compile`` ~4 % (after 15-30 s of
    compiling), so neither is a default.
    """

    in_channels: int = 3
    """State channels: intensity, probability and hint maps (3 for MECCA's single edge-hint
    map, 4 for IteR-MRL's h+ / h- maps)."""
    width: int = 8
    """Feature channels of every block (see above for why 8)."""
    trunk_dilations: tuple[int, ...] = (1, 2, 4)
    """Dilation of each shared block (three blocks in both papers)."""
    head_dilations: tuple[int, ...] = (8, 16)
    """Dilation of each block of the policy head and, separately, of the value head. MECCA
    uses two blocks per head; with the trunk this gives P-Net's five dilated blocks
    1, 2, 4, 8, 16 (Wang et al. 2019), dilations growing with depth."""
    convs_per_block: int = 2
    """Convolutions per trunk block (two in both papers)."""
    head_convs: int = 2
    """Convolutions per head block (two in both papers; 1 is a speed option)."""
    n_actions: int = len(DEFAULT_ACTIONS)
    """Number of discrete actions, i.e. policy logits per voxel."""
    norm: Norm = "batch"
    """``"batch"``: BatchNorm3d after every conv (the papers); ``"none"``: conv with bias."""
    channels_last: bool = True
    """Run the convolutions in ``channels_last_3d`` memory format: same numbers, about 3x
    faster on CPU (oneDNN) for inference and training; outputs are returned contiguous."""

    def __post_init__(self) -> None:
        for name in ("in_channels", "width", "n_actions", "convs_per_block", "head_convs"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"PNetConfig.{name} must be >= 1, got {getattr(self, name)}")
        _check_dilations(self.trunk_dilations, "trunk_dilations")
        _check_dilations(self.head_dilations, "head_dilations")
        if self.norm not in ("batch", "none"):
            raise ConfigError(f"PNetConfig.norm must be 'batch' or 'none', got {self.norm!r}")


def iter_mrl_config(**overrides: object) -> PNetConfig:
    """IteR-MRL's layout (its Fig. 3): three blocks per head, 4 state channels (fg/bg hints)."""
    base = PNetConfig(in_channels=4, head_dilations=(4, 8, 16))
    return replace(base, **overrides)  # type: ignore[arg-type]


def _check_dilations(dilations: Sequence[int], name: str) -> None:
    if len(dilations) == 0 or any(int(d) < 1 for d in dilations):
        raise ConfigError(f"{name} must be a non-empty sequence of ints >= 1, got {dilations}")


@contextmanager
def batch_statistics(*modules: nn.Module | None) -> Iterator[None]:
    """Within the block, batch norm layers normalise with the statistics of their input (as
    in training) and leave their running averages untouched; other layers stay in eval
    mode. Restores every layer's mode and momentum afterwards."""
    norms = [
        m
        for module in modules
        if module is not None
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    saved = [(m, m.training, m.momentum) for m in norms]
    try:
        for m in norms:
            m.train()
            m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
        yield
    finally:
        for m, training, momentum in saved:
            m.train(training)
            m.momentum = momentum


class ActorCritic(nn.Module):
    """Shared trunk, policy head and value head; every output is per voxel.

    ``forward(x)``: x (B, C, I, J, K) float32 -> (logits (B, A, I, J, K), value
    (B, 1, I, J, K)), A = ``config.n_actions``; softmax over dim 1 gives the policy.
    """

    def __init__(self, config: PNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or PNetConfig()
        w = config.width
        self.trunk = conv_stack(
            config.in_channels, w, config.trunk_dilations, config.convs_per_block, config.norm
        )
        self.policy_head = nn.Sequential(
            conv_stack(w, w, config.head_dilations, config.head_convs, config.norm),
            nn.Conv3d(w, config.n_actions, kernel_size=1),
        )
        self.value_head = nn.Sequential(
            conv_stack(w, w, config.head_dilations, config.head_convs, config.norm),
            nn.Conv3d(w, 1, kernel_size=1),
        )
        xavier_init(self)
        set_layout(self, config.channels_last)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk output (B, width, I, J, K), shared by both heads (and by a shared-trunk
        :class:`~mecca.nets.confidence.ConfidenceNet`); left in the conv layout."""
        check_input(x, self.config.in_channels)
        return self.trunk(as_layout(x, self.config.channels_last))

    def policy_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk + policy head only, the inference path: (B, A, I, J, K) float32 logits."""
        return self.policy_head(self.features(x)).contiguous()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.policy_head(f).contiguous(), self.value_head(f).contiguous()
