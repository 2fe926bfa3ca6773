"""Supervised segmentation networks of the baselines: P-Net (and R-Net) and MONAI's U-Net.

Both map a (B, C, I, J, K) float32 input to (B, 1, I, J, K) foreground logits on the same
grid.

* :class:`PNetSeg`: P-Net (Wang et al. 2019, DeepIGeoS) in the layout of the project's
  actor-critic (:mod:`mecca.nets.pnet`): a trunk of dilated blocks (dilations 1, 2, 4),
  one head of dilated blocks (8, 16), then a 1x1x1 convolution to one logit. The grid is
  never downsampled, so any spatial size works. With 1 input channel it is the
  non-interactive P-Net; with 4 (image, previous prediction, fg and bg hint maps) it is
  DeepIGeoS's R-Net or the InterCNN backbone (the same backbone for every baseline, as
  SPEC Sec. 6 asks). Not built: P-Net's concatenation of every block's features before
  the classifier (the papers' multi-scale fusion); the dilated blocks are the same.
* :class:`UNetSeg`: ``monai.networks.nets.UNet`` (3D, channels ``(w, 2w, 4w, 8w)``,
  strides ``(2, 2, 2)``, two residual units per level, batch norm). Three stride-2 levels
  need every spatial size divisible by 8: the input is padded at both ends (edge values
  replicated, the odd voxel at the far end) to the next multiple of 8 and the logits are
  cropped back, so the output grid equals the input grid for any size (55 x 55 x 30 runs
  as 56 x 56 x 32). MONAI is imported only when a U-Net is built.

Networks are built from plain dicts (:func:`build_segnet`), so a checkpoint that stores
them loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mecca.errors import ConfigError
from mecca.nets.blocks import Norm, as_layout, check_input, conv_stack, set_layout, xavier_init


@dataclass(frozen=True)
class SegNetConfig:
    """Shape of :class:`PNetSeg` (``arch="pnet"``) or :class:`UNetSeg` (``arch="unet"``)."""

    arch: str = "pnet"
    """``pnet`` (dilated, full resolution) or ``unet`` (MONAI U-Net)."""
    in_channels: int = 1
    """Input channels: 1 (image) for P-Net / U-Net, 4 for R-Net and InterCNN."""
    width: int = 8
    """P-Net: feature channels of every block; U-Net: channels of the first level."""
    trunk_dilations: tuple[int, ...] = (1, 2, 4)
    """P-Net trunk blocks (one per dilation)."""
    head_dilations: tuple[int, ...] = (8, 16)
    """P-Net head blocks (one per dilation)."""
    convs_per_block: int = 2
    """3x3x3 convolutions per P-Net block."""
    norm: Norm = "batch"
    """P-Net normalisation: ``batch`` or ``none``."""
    channels_last: bool = True
    """Run the convolutions in ``channels_last_3d`` (faster on CPU, same numbers)."""

    def __post_init__(self) -> None:
        if self.arch not in ("pnet", "unet"):
            raise ConfigError(f"unknown segmentation network {self.arch!r}", hint="pnet or unet")
        for name in ("in_channels", "width", "convs_per_block"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"SegNetConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("trunk_dilations", "head_dilations"):
            dil = getattr(self, name)
            if len(dil) == 0 or any(int(d) < 1 for d in dil):
                raise ConfigError(f"{name} must be a non-empty sequence of ints >= 1, got {dil}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (tuples as lists), loadable with ``weights_only=True``."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegNetConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown SegNetConfig settings: {', '.join(unknown)}")
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        return cls(**values)


class PNetSeg(nn.Module):
    """P-Net trunk + one dilated head + 1x1x1 conv: (B, C, I, J, K) -> (B, 1, I, J, K) logits."""

    def __init__(self, config: SegNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or SegNetConfig()
        w = config.width
        self.trunk = conv_stack(
            config.in_channels, w, config.trunk_dilations, config.convs_per_block, config.norm
        )
        self.head = conv_stack(w, w, config.head_dilations, config.convs_per_block, config.norm)
        self.out = nn.Conv3d(w, 1, kernel_size=1)
        xavier_init(self)
        set_layout(self, config.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.config.in_channels, "input")
        x = as_layout(x, self.config.channels_last)
        return self.out(self.head(self.trunk(x))).contiguous()


UNET_FACTOR = 8
"""Spatial sizes the U-Net needs to be divisible by (three stride-2 levels)."""


def pad_to_multiple(x: torch.Tensor, factor: int) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Replicate-pad the last three axes of ``x`` to multiples of ``factor``.

    Returns the padded tensor and the slices that cut the original grid back out of it.
    Half of each axis's padding goes before the data, the rest (the odd voxel) after.
    """
    pads: list[int] = []
    keep: list[slice] = []
    for n in reversed(x.shape[-3:]):
        total = (-n) % factor
        lo = total // 2
        pads += [lo, total - lo]
        keep.insert(0, slice(lo, lo + n))
    if not any(pads):
        return x, tuple(keep)
    return F.pad(x, pads, mode="replicate"), tuple(keep)


class UNetSeg(nn.Module):
    """MONAI 3D U-Net with padding to multiples of 8: (B, C, I, J, K) -> (B, 1, I, J, K)."""

    def __init__(self, config: SegNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or SegNetConfig(arch="unet")
        try:
            from monai.networks.nets import UNet
        except ImportError as err:  # monai is an optional dependency
            raise ConfigError(
                "the unet baseline needs MONAI", hint="pip install 'monai>=1.3,<2'"
            ) from err
        w = config.width
        self.unet = UNet(
            spatial_dims=3,
            in_channels=config.in_channels,
            out_channels=1,
            channels=(w, 2 * w, 4 * w, 8 * w),
            strides=(2, 2, 2),
            num_res_units=2,
            norm="batch",
        )
        if config.channels_last:
            self.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.config.in_channels, "input")
        padded, keep = pad_to_multiple(x, UNET_FACTOR)
        out = self.unet(as_layout(padded, self.config.channels_last))
        return out[(..., *keep)].contiguous()


def build_segnet(config: SegNetConfig | dict[str, Any]) -> nn.Module:
    """The network a config (or its plain-dict form) describes."""
    cfg = config if isinstance(config, SegNetConfig) else SegNetConfig.from_dict(dict(config))
    return UNetSeg(cfg) if cfg.arch == "unet" else PNetSeg(cfg)
