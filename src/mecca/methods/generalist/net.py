"""The generalist's network: a small residual 3D U-Net on the crop's grid.

Input ``(B, 5, I, J, K)``: image, previous probability, foreground map, background map,
box map (:mod:`mecca.methods.generalist.prompts` builds them); output ``(B, 1, I, J, K)``
foreground logits on the same grid.

Layout: a strided 3x3x3 stem takes the input to half resolution (a full-resolution
convolution with 16 channels costs ~35 ms on a 64 x 64 x 48 grid, the whole budget);
residual blocks (conv-norm-act-conv-norm + skip) at every level, stride-2 residual
blocks down; up, a learned 2x upsampling, a 1x1x1 fusion with the skip and one residual
3x3x3 convolution per level; a light full-resolution head: the half-resolution features
upsampled to ``fine`` channels, concatenated with the raw input (so clicks, box and image
edges act at full resolution), one convolution and a 1x1x1 to the logit. Instance norm
(per sample and channel) rather than batch norm: crops of CT, MR and phantoms differ, and
the network must behave the same whatever else is in the batch.

CPU speed (one thread, AVX2, float32, ``channels_last_3d``) needed three fixes, each
measured: (1) PyTorch runs its slow reference convolution for a batch of one when
``N * C * I * J <= 20480`` (every layer here): :class:`Conv3d` calls oneDNN directly,
8-12x faster per layer, same numbers; (2) ``ConvTranspose3d`` has no oneDNN kernel on the
CPU: :class:`Up2` does the same map as a 1x1x1 convolution plus depth-to-space; (3)
``nn.InstanceNorm3d`` and ``var_mean`` over the spatial axes of channels-last tensors
copy or crawl: :class:`InstanceNorm` reduces over contiguous rows (10x faster).

Forward time of one crop, 1 thread, on the shared 2-core machine (2026-12-06,
``python -m mecca.methods.generalist.net`` prints a fresh table): minimum and median of
15 interleaved runs while other jobs kept the load average at ~4.5, so the minimum is
the closer to an idle machine. Earlier, at load ~2, the chosen 48 x 48 x 32 network (then
with one block at level 1) ran in 22 ms and the 64 x 64 x 48 ones in 52-65 ms.

| grid | widths | blocks | fine kernel | parameters | min ms | median ms |
|---|---|---|---|---|---|---|
| 48 x 48 x 32 (chosen) | 16-32-64-128 | 1, 2, 2, 2 | 3 | 2.31 M | 35 | 101 |
| 64 x 64 x 32 | 16-32-64-128 | 1, 2, 2, 2 | 3 | 2.31 M | 102 | 162 |
| 64 x 64 x 48 | 16-32-64-128 | 1, 2, 2, 2 | 3 | 2.31 M | 103 | 241 |
| 64 x 64 x 48 | 16-32-64-128 | 1, 2, 2, 2 | 1 | 2.31 M | 84 | 240 |
| 64 x 64 x 48 | 24-48-96-192 | 1, 2, 2, 2 | 1 | 5.18 M | 175 | 357 |
| 48 x 48 x 32 | 24-48-96-192 | 1, 2, 2, 2 | 1 | 5.18 M | 43 | 156 |

A training step (batch 4, forward + backward + AdamW) took 0.31 s at 48 x 48 x 32 against
0.89 s at 64 x 64 x 48, so the CPU run trains the 48 x 48 x 32 grid: ~3x the samples in
the same hours, for a resampling ceiling that stays high when the network predicts the
soft (partial-volume) truth (:mod:`.data`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mecca.errors import ConfigError

IN_CHANNELS = 5
"""image, previous probability, foreground clicks, background clicks, box."""


@dataclass(frozen=True)
class GeneralistNetConfig:
    """Shape of :class:`GeneralistNet`."""

    widths: tuple[int, ...] = (16, 32, 64, 128)
    """Channels per level, half resolution first (level i runs at 1 / 2^(i + 1))."""
    blocks: tuple[int, ...] = (1, 1, 2, 2)
    """Residual blocks per encoder level (the decoder has one per level)."""
    fine: int = 8
    """Channels of the full-resolution head."""
    fine_kernel: int = 1
    """Kernel of the full-resolution convolution (1: ~0.1 GFLOP on 64 x 64 x 48; 3: 1.1)."""
    in_channels: int = IN_CHANNELS
    norm: str = "instance"
    """``instance`` or ``batch``."""

    def __post_init__(self) -> None:
        if len(self.widths) < 2 or len(self.blocks) != len(self.widths):
            raise ConfigError("widths and blocks need the same length, at least 2")
        if min(self.widths) < 1 or min(self.blocks) < 1 or self.fine < 1:
            raise ConfigError("widths, blocks and fine must be positive")
        if self.fine_kernel not in (1, 3):
            raise ConfigError(f"fine_kernel must be 1 or 3, got {self.fine_kernel}")
        if self.norm not in ("instance", "batch"):
            raise ConfigError(f"unknown norm {self.norm!r}", hint="instance or batch")

    @property
    def factor(self) -> int:
        """Every grid size must be divisible by this (stem stride times the levels)."""
        return 2 ** len(self.widths)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists), loadable with ``weights_only=True``."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeneralistNetConfig:
        """Inverse of :meth:`to_dict`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown network settings: {', '.join(unknown)}")
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        return cls(**values)


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that always takes oneDNN's convolution on the CPU.

    PyTorch picks its slow reference kernel for a batch of one when ``N * C * I * J <=
    20480`` (every layer of this network at inference); calling oneDNN directly gives the
    same numbers 8-12x faster (16 -> 16 channels on 32 x 32 x 24: 8 ms instead of 100 ms).
    Gradients flow through it as through the ordinary convolution.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dtype != torch.float32 or self.padding_mode != "zeros":
            return super().forward(x)
        pad = self.padding if isinstance(self.padding, tuple) else (0, 0, 0)
        return torch.mkldnn_convolution(
            x, self.weight, self.bias, pad, self.stride, self.dilation, self.groups
        )


class Up2(nn.Module):
    """Learned 2x upsampling: a 1x1x1 convolution to 8 sub-voxel outputs per channel, then
    depth-to-space. The same map as ``ConvTranspose3d(kernel 2, stride 2)``, whose CPU
    kernel has no oneDNN path and is several times slower."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.cout = cout
        self.conv = Conv3d(cin, 8 * cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, i, j, k = x.shape
        y = self.conv(x).view(b, self.cout, 2, 2, 2, i, j, k)
        y = y.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, self.cout, 2 * i, 2 * j, 2 * k)
        return y.contiguous(memory_format=torch.channels_last_3d)


class InstanceNorm(nn.Module):
    """Instance norm written with reductions, so it keeps ``channels_last_3d`` tensors in
    that layout (``nn.InstanceNorm3d`` copies them to the default layout and back) and
    reduces over the contiguous voxel rows (``var_mean`` over the spatial axes of a
    channels-last tensor is ~10x slower: a fifth of the forward time)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        flat = x.permute(0, 2, 3, 4, 1).reshape(b, -1, c)  # a view for channels-last input
        mean = flat.mean(dim=1)
        var = ((flat * flat).mean(dim=1) - mean * mean).clamp_min(0.0)
        scale = self.weight * torch.rsqrt(var + self.eps).view(b, c, 1, 1, 1)
        return x * scale + (self.bias - mean.view(b, c, 1, 1, 1) * scale)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    return InstanceNorm(channels)


class ResBlock(nn.Module):
    """Two 3x3x3 convolutions with norm and leaky ReLU, plus an identity or 1x1x1 skip."""

    def __init__(self, cin: int, cout: int, norm: str, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = Conv3d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = _norm(norm, cout)
        self.conv2 = Conv3d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = _norm(norm, cout)
        self.skip: nn.Module = nn.Identity()
        if cin != cout or stride != 1:
            self.skip = nn.Sequential(Conv3d(cin, cout, 1, stride, bias=False), _norm(norm, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.norm1(self.conv1(x)), 0.01)
        y = self.norm2(self.conv2(y))
        return F.leaky_relu(y + self.skip(x), 0.01)


class UpBlock(nn.Module):
    """Decoder level: 1x1x1 fusion of the upsampled features and the skip, then one
    3x3x3 convolution with a residual connection (half the cost of a residual block on
    the concatenation, where the decoder spends most of its time)."""

    def __init__(self, cin: int, cout: int, norm: str) -> None:
        super().__init__()
        self.fuse = Conv3d(cin, cout, 1, bias=False)
        self.norm1 = _norm(norm, cout)
        self.conv = Conv3d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = _norm(norm, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.norm1(self.fuse(x)), 0.01)
        return F.leaky_relu(y + self.norm2(self.conv(y)), 0.01)


class GeneralistNet(nn.Module):
    """Residual U-Net with a strided stem and a full-resolution head (module docstring)."""

    def __init__(self, config: GeneralistNetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or GeneralistNetConfig()
        w = cfg.widths
        self.stem = nn.Sequential(
            Conv3d(cfg.in_channels, w[0], 3, 2, 1, bias=False),
            _norm(cfg.norm, w[0]),
            nn.LeakyReLU(0.01),
        )
        self.encoder = nn.ModuleList()
        for i, n in enumerate(cfg.blocks):
            first = ResBlock(w[max(i - 1, 0)], w[i], cfg.norm, stride=1 if i == 0 else 2)
            rest = [ResBlock(w[i], w[i], cfg.norm) for _ in range(n - 1)]
            self.encoder.append(nn.Sequential(first, *rest))
        self.up = nn.ModuleList(Up2(w[i], w[i - 1]) for i in range(len(w) - 1, 0, -1))
        self.decoder = nn.ModuleList(
            UpBlock(2 * w[i - 1], w[i - 1], cfg.norm) for i in range(len(w) - 1, 0, -1)
        )
        self.to_full = Up2(w[0], cfg.fine)
        self.fine = Conv3d(
            cfg.fine + cfg.in_channels, cfg.fine, cfg.fine_kernel, 1, cfg.fine_kernel // 2
        )
        self.head = Conv3d(cfg.fine, 1, 1)
        self.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, I, J, K) -> (B, 1, I, J, K) logits; I, J, K divisible by ``config.factor``."""
        if x.ndim != 5 or x.shape[1] != self.config.in_channels:
            raise ConfigError(
                f"input must be (B, {self.config.in_channels}, I, J, K), got {tuple(x.shape)}"
            )
        if any(n % self.config.factor for n in x.shape[2:]):
            raise ConfigError(f"grid {tuple(x.shape[2:])} is not divisible by {self.config.factor}")
        x = x.contiguous(memory_format=torch.channels_last_3d)
        h = self.stem(x)
        skips = []
        for level in self.encoder:
            h = level(h)
            skips.append(h)
        skips.pop()
        for up, dec in zip(self.up, self.decoder, strict=True):
            h = dec(torch.cat([up(h), skips.pop()], dim=1))
        h = F.leaky_relu(self.to_full(h), 0.01)
        h = F.leaky_relu(self.fine(torch.cat([h, x], dim=1)), 0.01)
        return self.head(h).contiguous()


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def time_forward(
    config: GeneralistNetConfig, grid: tuple[int, int, int], repeats: int = 9
) -> float:
    """Median seconds of one batch-of-one forward pass (inference mode, current threads)."""
    import time

    net = GeneralistNet(config).eval()
    x = torch.randn(1, config.in_channels, *grid)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 2):
            t0 = time.perf_counter()
            net(x)
            if i >= 2:
                times.append(time.perf_counter() - t0)
    return float(sorted(times)[len(times) // 2])


def main() -> None:
    """Print the forward-time table of the candidate grids and widths (1 thread)."""
    torch.set_num_threads(1)
    candidates = [
        ((48, 48, 32), GeneralistNetConfig(blocks=(1, 2, 2, 2), fine_kernel=3)),
        ((64, 64, 32), GeneralistNetConfig(blocks=(1, 2, 2, 2), fine_kernel=3)),
        ((64, 64, 48), GeneralistNetConfig(blocks=(1, 2, 2, 2), fine_kernel=3)),
        ((64, 64, 48), GeneralistNetConfig(blocks=(1, 2, 2, 2), fine_kernel=1)),
        ((64, 64, 48), GeneralistNetConfig(widths=(24, 48, 96, 192), blocks=(1, 2, 2, 2))),
        ((48, 48, 32), GeneralistNetConfig(widths=(24, 48, 96, 192), blocks=(1, 2, 2, 2))),
    ]
    print("| grid | widths | blocks | fine kernel | parameters | forward ms |")
    print("|---|---|---|---|---|---|")
    for grid, cfg in candidates:
        ms = 1000 * time_forward(cfg, grid)
        n = count_parameters(GeneralistNet(cfg)) / 1e6
        print(
            f"| {grid} | {cfg.widths} | {cfg.blocks} | {cfg.fine_kernel} | {n:.2f} M | {ms:.0f} |"
        )


if __name__ == "__main__":
    main()
