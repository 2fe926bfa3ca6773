"""Conditional VAE for probabilistic partial segmentation (Wong, Guttag, Dalca, NeurIPS 2022
workshop, "Probabilistic Interactive Segmentation for Medical Images", seed 003).

Notation of the paper: ``x = {x0, x_m, x_s}`` is the input (image, partialness mask = the
voxels already decided, partial segmentation = decided foreground), ``y = {y_m, y_s}`` a
*larger* partial segmentation. The encoder models ``q(z | x, y) = N(mu, sigma^2)``, the
prior is ``N(0, I)``, and the decoder ``g(z, x)`` predicts ``(y^_m, y^_s)``.

One class serves 2D and 3D (``CVAEConfig.dims``); tensors are (B, C, *grid) with grid =
(I, J) or (I, J, K). Every spatial size works (odd sizes included): the encoder ends in an
adaptive pooling to a fixed ``latent_grid`` cells per axis, and the decoder's up-sampled
path is cropped back to the input grid.

Layout (the paper's Sec. 3, generalised; widths are settings):

- Encoder: input (B, 5, *grid) = [x0, x_m, x_s, y_m, y_s]; per entry of ``enc_widths`` a
  3^d conv + ReLU + 2x max pooling (the paper: channels 5 -> 32 -> 16); adaptive average
  pooling to ``latent_grid`` cells per axis; a linear layer to ``mu`` and ``log sigma^2``
  (each (B, latent_size)).
- Decoder: the paper's "initial up-sampling layer to resize z to the spatial size of x":
  a linear map of z to a (``z_channels``, latent_grid^d) map, linearly interpolated to the
  input grid, so the latent code can differ from place to place (which disk to add);
  concatenated with [x0, x_m, x_s]; conv + ReLU at full resolution; 2x max pooling; one
  conv + ReLU per entry of ``dec_dilations`` at half resolution (dilated, for a receptive
  field that spans the image); a 2x transposed conv back to full resolution, added to the
  full-resolution features; conv + ReLU; a 1x1 conv to two logits (mask, segmentation).

The guarantees are *built into the output*, not learned (paper Sec. 3, "we enforce that the
input partial segmentation is preserved ... and y^_s only where y^_m"):
``y^_m = x_m + (1 - x_m) sigmoid(l_m)`` (1 wherever x_m is) and
``y^_s = x_m x_s + (1 - x_m) y^_m sigmoid(l_s)`` (equal to x_s inside x_m, and <= y^_m
everywhere, so ``y^_s`` reads as P(decided and foreground)). See :func:`enforce`.

Convolutions use :class:`~mecca.nets.blocks.DilatedConv3d` in 3D (oneDNN's kernel for small
CPU batches) and ``nn.Conv2d`` in 2D (measured on this CPU: no slow path in 2D). Weights
use Xavier/Glorot uniform init with zero biases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import EllipsisType
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mecca.errors import ConfigError
from mecca.nets.blocks import DilatedConv3d, xavier_init

#: Input channels of the decoder's condition x: image, partialness mask, partial segmentation.
X_CHANNELS = 3
#: Extra encoder channels: the target's partialness mask and segmentation.
Y_CHANNELS = 2
#: log sigma^2 is clamped to this range (numerical safety of exp).
LOGVAR_RANGE = (-10.0, 10.0)


@dataclass(frozen=True)
class CVAEConfig:
    """Shape of :class:`PartialCVAE`."""

    dims: Literal[2, 3] = 3
    """Spatial dimensions: 2 for (I, J) images, 3 for (I, J, K) crops."""
    enc_widths: tuple[int, ...] = (32, 16)
    """Channels of the encoder's conv + pool layers (the paper: 32, 16)."""
    dec_width: int = 32
    """Channels of every decoder conv (the paper: 64; 32 is ~4x cheaper on the CPU)."""
    dec_dilations: tuple[int, ...] = (1, 2, 4)
    """Dilation of each half-resolution decoder conv; the sum sets the receptive field."""
    latent_size: int = 16
    """Dimension of z (the paper does not state it)."""
    latent_grid: int = 4
    """Cells per axis of the encoder's pooled features and of the decoder's latent map."""
    z_channels: int = 8
    """Channels of the latent map that the decoder concatenates with x."""

    def __post_init__(self) -> None:
        if self.dims not in (2, 3):
            raise ConfigError(f"CVAEConfig.dims must be 2 or 3, got {self.dims!r}")
        for name in ("dec_width", "latent_size", "latent_grid", "z_channels"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"CVAEConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("enc_widths", "dec_dilations"):
            values = getattr(self, name)
            if len(values) == 0 or any(int(v) < 1 for v in values):
                raise ConfigError(
                    f"CVAEConfig.{name} must be a non-empty list of ints >= 1, got {values}"
                )


def _conv(dims: int, c_in: int, c_out: int, kernel: int = 3, dilation: int = 1) -> nn.Module:
    pad = dilation * (kernel // 2)
    if dims == 3:
        return DilatedConv3d(c_in, c_out, kernel, padding=pad, dilation=dilation)
    return nn.Conv2d(c_in, c_out, kernel, padding=pad, dilation=dilation)


def _max_pool(x: torch.Tensor) -> torch.Tensor:
    """2x max pooling that keeps odd edges (ceil mode): (B, C, *S) -> (B, C, *ceil(S/2))."""
    pool = F.max_pool3d if x.ndim == 5 else F.max_pool2d
    return pool(x, kernel_size=2, ceil_mode=True)


def _fit(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop (or zero-pad at the far end) the spatial axes of ``x`` to ``size``."""
    index: tuple[EllipsisType | slice, ...] = (..., *(slice(0, int(n)) for n in size))
    x = x[index]
    pad: list[int] = []
    for have, want in zip(reversed(x.shape[2:]), reversed(list(size)), strict=True):
        pad += [0, int(want) - int(have)]
    return F.pad(x, pad) if any(pad) else x


def enforce(
    logits: torch.Tensor, x_m: torch.Tensor, x_s: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities that keep the input partial segmentation, by construction.

    Args:
        logits: (B, 2, *grid) float: mask logit, segmentation logit.
        x_m: (B, 1, *grid) float in {0, 1}: input partialness mask.
        x_s: (B, 1, *grid) float in {0, 1}: input partial segmentation (0 outside x_m).

    Returns:
        ``(y_m, y_s)``, each (B, 1, *grid) in [0, 1]: ``y_m = 1`` where ``x_m = 1``;
        ``y_s = x_s`` where ``x_m = 1``; ``y_s <= y_m`` everywhere.
    """
    free = 1.0 - x_m
    m = x_m + free * torch.sigmoid(logits[:, 0:1])
    s = x_m * x_s + free * m * torch.sigmoid(logits[:, 1:2])
    return m, s


class PartialCVAE(nn.Module):
    """Encoder ``q(z | x, y)`` and decoder ``g(z, x)`` of the partial-segmentation cVAE.

    ``forward(x, y, eps)``: x (B, 3, *grid) = [image, x_m, x_s], y (B, 2, *grid) =
    [y_m, y_s], eps (B, latent_size) standard normal -> (y^_m, y^_s, mu, logvar); the first
    two (B, 1, *grid) probabilities with the guarantees of :func:`enforce`, the last two
    (B, latent_size). ``decode(x, z)`` is the inference path (z from the prior).
    """

    def __init__(self, config: CVAEConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or CVAEConfig()
        d, w = cfg.dims, cfg.dec_width
        enc: list[nn.Module] = []
        c_in = X_CHANNELS + Y_CHANNELS
        for width in cfg.enc_widths:
            enc.append(_conv(d, c_in, int(width)))
            c_in = int(width)
        self.enc_convs = nn.ModuleList(enc)
        cells = cfg.latent_grid**d
        self.enc_head = nn.Linear(c_in * cells, 2 * cfg.latent_size)
        self.z_map = nn.Linear(cfg.latent_size, cfg.z_channels * cells)
        self.dec_in = _conv(d, X_CHANNELS + cfg.z_channels, w)
        self.dec_mid = nn.ModuleList([_conv(d, w, w, dilation=int(r)) for r in cfg.dec_dilations])
        up = nn.ConvTranspose3d if d == 3 else nn.ConvTranspose2d
        self.dec_up = up(w, w, kernel_size=2, stride=2)
        self.dec_out = _conv(d, w, w)
        self.head = _conv(d, w, 2, kernel=1)
        xavier_init(self)

    def _check(self, t: torch.Tensor, channels: int, what: str) -> None:
        if t.ndim != self.config.dims + 2 or t.shape[1] != channels:
            axes = "I, J, K" if self.config.dims == 3 else "I, J"
            raise ConfigError(
                f"expected a (B, {channels}, {axes}) {what} tensor, got {tuple(t.shape)}",
                hint=f"this network was built with dims={self.config.dims}",
            )

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior ``q(z | x, y)``: x (B, 3, *grid), y (B, 2, *grid) -> mu, logvar, each
        (B, latent_size)."""
        self._check(x, X_CHANNELS, "condition x")
        self._check(y, Y_CHANNELS, "target y")
        h = torch.cat([x, y], dim=1)
        for conv in self.enc_convs:
            h = _max_pool(F.relu(conv(h)))
        pool = F.adaptive_avg_pool3d if self.config.dims == 3 else F.adaptive_avg_pool2d
        h = pool(h, self.config.latent_grid).flatten(1)
        mu, logvar = self.enc_head(h).chunk(2, dim=1)
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def decode_logits(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Decoder ``g(z, x)`` before the guarantees: (B, 3, *grid), (B, L) -> (B, 2, *grid)."""
        self._check(x, X_CHANNELS, "condition x")
        cfg = self.config
        if z.ndim != 2 or z.shape != (x.shape[0], cfg.latent_size):
            raise ConfigError(
                f"expected z of shape ({x.shape[0]}, {cfg.latent_size}), got {tuple(z.shape)}"
            )
        grid = tuple(x.shape[2:])
        zmap = self.z_map(z).view(z.shape[0], cfg.z_channels, *([cfg.latent_grid] * cfg.dims))
        mode = "trilinear" if cfg.dims == 3 else "bilinear"
        zmap = F.interpolate(zmap, size=grid, mode=mode, align_corners=False)
        full = F.relu(self.dec_in(torch.cat([x, zmap], dim=1)))
        h = _max_pool(full)
        for conv in self.dec_mid:
            h = F.relu(conv(h))
        h = F.relu(full + _fit(self.dec_up(h), grid))
        return self.head(F.relu(self.dec_out(h)))

    def decode(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y^_m, y^_s)`` for x (B, 3, *grid) and z (B, L), guarantees enforced."""
        return enforce(self.decode_logits(x, z), x[:, 1:2], x[:, 2:3])

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x, y)
        z = mu + torch.exp(0.5 * logvar) * eps
        m, s = self.decode(x, z)
        return m, s, mu, logvar
