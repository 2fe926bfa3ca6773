"""MECCA's action-confidence network C and its loss (MECCA Sec. 3.3, Eqs. 6-7, Fig. 4).

C reads the state and an action map (the chosen action's value per voxel, e.g. -0.2) and
predicts, per voxel, the probability that the action moves the foreground probability in
the direction of the true label. It has the P-Net layout of the value branch but its own
weights: six blocks of two dilated 3x3x3 convolutions with BatchNorm and ReLU (the paper's
text; its Fig. 4 caption says "same as the value branch"), then a 1x1x1 conv to one logit.

Shared-trunk variant (a speed option, not the paper): :meth:`ConfidenceConfig.shared_trunk`
builds the same class as a three-block head that reads ``ActorCritic.features(state)``
(detach them to keep the confidence loss out of the policy's trunk) plus the action map, so
one trunk pass serves both networks.

Learnability note: the action map enters only at the input, as in the paper, so C learns
spatially coherent action maps (what a trained policy or its greedy action gives) within
tens of steps, but stays at chance (loss 2 ln 2) on voxel-wise i.i.d. random actions,
which six blocks of 3x3x3 convs blur into their neighbours: a near-uniform policy's
*sampled* actions look like that early in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mecca.errors import ConfigError
from mecca.nets.blocks import Norm, as_layout, check_input, conv_stack, set_layout, xavier_init
from mecca.nets.pnet import PNetConfig


@dataclass(frozen=True)
class ConfidenceConfig:
    """Shape of :class:`ConfidenceNet`."""

    in_channels: int = 4
    """Input channels = state channels + 1 for the action map (4 for MECCA's 3-channel
    state; ``width + 1`` for the shared-trunk variant, whose input is trunk features)."""
    width: int = 8
    """Feature channels of every block (the segmentation network's default and its reason:
    :class:`~mecca.nets.pnet.PNetConfig`; 92 ms per crop at 8, 154 ms at 16 on 2 threads)."""
    dilations: tuple[int, ...] = (1, 2, 4, 4, 8, 16)
    """Dilation of each block: six blocks, the P-Net trunk 1, 2, 4 then a three-block
    value-style head 4, 8, 16 (dilations growing with depth, as in P-Net)."""
    convs_per_block: int = 2
    """Convolutions per block (two in the paper)."""
    norm: Norm = "batch"
    """``"batch"``: BatchNorm3d after every conv (the paper); ``"none"``: conv with bias."""
    channels_last: bool = True
    """Run the convolutions in ``channels_last_3d`` memory format (same numbers, about 3x
    faster on CPU); the output is returned contiguous."""

    def __post_init__(self) -> None:
        for name in ("in_channels", "width", "convs_per_block"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"ConfidenceConfig.{name} must be >= 1")
        if self.in_channels < 2:
            raise ConfigError("ConfidenceConfig.in_channels counts the action map: need >= 2")
        if len(self.dilations) == 0 or any(int(d) < 1 for d in self.dilations):
            raise ConfigError(f"ConfidenceConfig.dilations must be ints >= 1: {self.dilations}")
        if self.norm not in ("batch", "none"):
            raise ConfigError(f"ConfidenceConfig.norm must be 'batch' or 'none': {self.norm!r}")

    @classmethod
    def shared_trunk(
        cls, pnet: PNetConfig, dilations: tuple[int, ...] = (4, 8, 16)
    ) -> ConfidenceConfig:
        """Head-only variant on top of an :class:`~mecca.nets.pnet.ActorCritic` trunk:
        input = its ``width`` trunk features + the action map; with the trunk's three
        blocks the path is six blocks deep, as in the full network."""
        return cls(
            in_channels=pnet.width + 1,
            width=pnet.width,
            dilations=dilations,
            convs_per_block=pnet.convs_per_block,
            norm=pnet.norm,
            channels_last=pnet.channels_last,
        )


class ConfidenceNet(nn.Module):
    """Per-voxel action confidence C(s, a) in [0, 1] (MECCA Fig. 4).

    ``forward(state, action_values)``: state (B, in_channels - 1, I, J, K) float32 (or trunk
    features for the shared-trunk variant), action_values (B, 1, I, J, K) float32 (the
    chosen action's value per voxel) -> confidence (B, 1, I, J, K) float32 in [0, 1].
    """

    def __init__(self, config: ConfidenceConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ConfidenceConfig()
        self.blocks = conv_stack(
            config.in_channels, config.width, config.dilations, config.convs_per_block, config.norm
        )
        self.out = nn.Conv3d(config.width, 1, kernel_size=1)
        xavier_init(self)
        set_layout(self, config.channels_last)

    def logits(self, state: torch.Tensor, action_values: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid confidence (B, 1, I, J, K), for a numerically stable BCE."""
        check_input(state, self.config.in_channels - 1)
        check_input(action_values, 1, "action map")
        if action_values.shape[0] != state.shape[0] or action_values.shape[2:] != state.shape[2:]:
            raise ConfigError(
                f"action map {tuple(action_values.shape)} does not match state "
                f"{tuple(state.shape)} (need (B, 1, I, J, K) on the state's grid)"
            )
        x = torch.cat([state, action_values.to(state.dtype)], dim=1)
        return self.out(self.blocks(as_layout(x, self.config.channels_last))).contiguous()

    def forward(
        self, state: torch.Tensor, action_values: torch.Tensor, *, logits: bool = False
    ) -> torch.Tensor:
        """Confidence in [0, 1] (B, 1, I, J, K); ``logits=True`` gives the pre-sigmoid values
        through ``forward``, so that a DistributedDataParallel wrapper sees the call."""
        out = self.logits(state, action_values)
        return out if logits else torch.sigmoid(out)


def action_confidence(
    net: nn.Module, state: torch.Tensor, action_values: torch.Tensor
) -> torch.Tensor:
    """Confidence (B, 1, I, J, K) of the actions taken, normalised as in training.

    :func:`confidence_loss` forwards ``(s, a)`` and ``(s, -a)`` as one batch, so with batch
    statistics (:func:`mecca.nets.pnet.batch_statistics`, how rollouts and inference run)
    the action channel is normalised over maps of zero mean. Forwarded alone, ``(s, a)``
    would have its mean action subtracted, and with it the direction the confidence is
    about: the simulated labels of a hippocampus run were then right on 50 % of the voxels
    (chance) instead of 92 %. So the symmetric pair is forwarded here too (twice the work of
    one pass) and the first half returned.
    """
    c = net(torch.cat([state, state]), torch.cat([action_values, -action_values]))
    return c[: state.shape[0]]


def action_agreement(action_values: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Target g of Eq. 7: 1.0 where the action's direction agrees with the label (a > 0 and
    y = 1, or a < 0 and y = 0), else 0.0. A zero action never agrees. Same shape, float32."""
    fg = label > 0.5
    agree = ((action_values > 0) & fg) | ((action_values < 0) & ~fg)
    return agree.to(torch.float32)


def confidence_loss(
    net: nn.Module,
    state: torch.Tensor,
    action_values: torch.Tensor,
    label: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 6 with symmetric samples: ``BCE(C(s, a), g) + BCE(C(s, -a), 1 - g)``.

    ``net`` is a :class:`ConfidenceNet` or a DDP wrapper of one. Both passes run as one
    forward of batch 2B. state (B, C, I, J, K); action_values, label
    and the optional mask (B, 1, I, J, K); label in {0, 1} (bool or float). Each BCE is the
    mean over voxels, or over the voxels where ``mask`` is set (the gradient mask of Eq. 11
    for simulated labels), so masked voxels get zero gradient; an all-false mask gives 0.
    Returns a scalar float32 tensor.
    """
    if label.shape != action_values.shape or (mask is not None and mask.shape != label.shape):
        raise ConfigError(
            f"label {tuple(label.shape)} and mask must have the action map's shape "
            f"{tuple(action_values.shape)}"
        )
    logits = net(torch.cat([state, state]), torch.cat([action_values, -action_values]), logits=True)
    g = action_agreement(action_values, label)
    target = torch.cat([g, 1.0 - g])
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    pos, neg = bce.chunk(2, dim=0)
    if mask is None:
        return pos.mean() + neg.mean()
    m = mask.to(bce.dtype)
    denom = m.sum().clamp_min(1.0)
    return ((pos + neg) * m).sum() / denom
