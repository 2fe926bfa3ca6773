"""Probabilistic partial segmentation: a conditional VAE proposes larger partial
segmentations for the user to choose from (Wong, Guttag, Dalca 2022, seed 003; SPEC Sec. 4).

Terms (the paper's): a *partial segmentation* is a pair (mask, seg) of boolean arrays on
the network grid: ``mask`` (the partialness mask, x_m or y_m) marks the voxels already
decided, foreground or background; ``seg`` (x_s or y_s) marks the decided foreground and
is False wherever ``mask`` is. Given an image and an input (x_m, x_s), the
:class:`PartialProposer` samples K *larger* partial segmentations (y_m, y_s); the user (or
a simulated user, :func:`mecca.episode.pick_closest`) chooses one, corrects it, and asks again.

Guarantees, enforced in code for any weights (trained or not): every proposal keeps the
input (``y_m ⊇ x_m`` and ``y_s == x_s`` inside x_m) and has foreground only where it is
decided (``y_s ⊆ y_m``). They hold twice: in the network's output probabilities
(:func:`mecca.nets.cvae.enforce`) and again on the thresholded masks.

Loss (paper Eq. 3): ``WDL(y_s, y^_s, y_m - x_m) + beta0 DL(y_m, y^_m) + beta1 KL(q || N(0, I))``
with beta0 = 1, beta1 = 1e-3; DL is the soft Dice loss of V-Net (Milletari et al. 2016,
the paper's ref. [7]: squared terms in the denominator, ``1 - (2 sum(w t p) + e) /
(sum(w t^2) + sum(w p^2) + e)``, smoothing e = ``dice_smooth``), computed per sample and
averaged over the batch; WDL is the same with per-voxel weights ``w = y_m - x_m`` (only the
newly decided voxels count). KL is summed over latent dimensions, averaged over the batch.

Training pairs (paper Sec. 3, "intersection of the ground truth with synthetic images of
random shapes", after SynthMorph): :func:`random_shapes` draws a label map of random blobs
(argmax over ``n_shapes`` smoothed Gaussian noise fields, SynthMorph's label synthesis
without its deformation); the shapes present are put in a random order; the input region is
the union of the first ``a`` shapes (``a`` uniform in 0 .. n-1, so the input may be empty),
the target region the union of the first ``b`` shapes, ``b = a + U{1, max_added_shapes}``
(capped at n), so the target region strictly contains the input region; both are
intersected with the ground truth (:func:`make_pair`). Images and labels get random flips
per axis (``flip``) and per-image z-scoring (``normalise``), the same as at proposal time.

Training: :mod:`mecca.methods.partial.train`; the interactive method:
:mod:`mecca.methods.partial.method`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from mecca.checkpoint import checkpoint_method, load_checkpoint
from mecca.config import build_config
from mecca.errors import ConfigError, InputError
from mecca.interface import Proposal
from mecca.nets.cvae import CVAEConfig, PartialCVAE

#: Largest number of proposals decoded in one forward pass (bounds memory for 3D crops).
MAX_DECODE_BATCH = 8


@dataclass(frozen=True)
class PartialConfig:
    """Everything that defines a partial-segmentation cVAE run (network, loss, data, schedule).

    The defaults suit 3D crops on the SPEC's 55 x 55 x 30 grid on a CPU;
    ``benchmarks/partial_disks.py`` shows the 2D settings of the paper's disk experiment.
    """

    dims: Literal[2, 3] = 3
    """Spatial dimensions of images and masks: 2 (slices) or 3 (crops)."""
    grid: tuple[int, ...] = (55, 55, 30)
    """Network grid (one entry per dimension); every training image has this shape."""
    enc_widths: tuple[int, ...] = (32, 16)
    """Encoder conv + pool channels (the paper's 32, 16)."""
    dec_width: int = 16
    """Decoder channels (the paper: 64). 16 for 3D crops on a CPU: one training step of
    batch 2 at 55 x 55 x 30 takes ~0.9 s, decoding 2 proposals ~0.2 s (32: 2.0 s, 0.45 s)."""
    dec_dilations: tuple[int, ...] = (1, 2, 4)
    """Dilations of the decoder's half-resolution convs (receptive field)."""
    latent_size: int = 16
    """Dimension of the latent z (not stated in the paper)."""
    latent_grid: int = 4
    """Cells per axis of the encoder's pooled features and of the decoder's latent map."""
    z_channels: int = 8
    """Channels of the latent map the decoder concatenates with the image and input."""
    beta0: float = 1.0
    """Weight of the partialness-mask Dice loss DL (paper: 1)."""
    beta1: float = 1e-3
    """Weight of the KL divergence to the N(0, I) prior (paper: 1e-3)."""
    dice_smooth: float = 1.0
    """Smoothing e added to numerator and denominator of every soft Dice (empty sets -> 0
    loss)."""
    lr: float = 1e-3
    """Adam learning rate (not stated in the paper)."""
    batch_size: int = 4
    """Training pairs per step."""
    steps: int = 10_000
    """Optimiser steps in all (a resumed run continues up to this number)."""
    seed: int = 0
    """Seeds the weights' init and the numpy generator of batches, pairs and latent noise."""
    n_shapes: int = 8
    """Random shapes (labels) per synthetic label map of the pair generator."""
    max_added_shapes: int = 2
    """The target region adds 1 to this many shapes to the input region."""
    shape_sigma: tuple[float, float] = (0.05, 0.15)
    """Range of the noise-smoothing sigma, as a fraction of the grid's smallest side (larger
    = bigger, rounder shapes); drawn uniformly per pair."""
    flip: bool = True
    """Random flips along every axis during training."""
    normalise: Literal["zscore", "none"] = "zscore"
    """Intensity normalisation per image, applied in training and by the proposer alike."""
    log_every: int = 50
    """Steps per ``train`` line of log.jsonl (mean losses over those steps)."""
    checkpoint_every: int = 500
    """Steps between writes of last.pt (also written at the end and on interruption)."""

    def __post_init__(self) -> None:
        _check_geometry(self)
        for name in ("dec_width", "latent_size", "latent_grid", "z_channels", "batch_size"):
            _at_least(self, name, 1)
        for name in ("log_every", "checkpoint_every", "steps"):
            _at_least(self, name, 0 if name == "steps" else 1)
        _at_least(self, "n_shapes", 2)
        if not 1 <= self.max_added_shapes <= self.n_shapes:
            raise ConfigError(
                f"PartialConfig.max_added_shapes must be in 1..n_shapes={self.n_shapes}, "
                f"got {self.max_added_shapes}"
            )
        _check_numbers(self)

    def network_config(self) -> CVAEConfig:
        """The :class:`CVAEConfig` these settings describe."""
        return CVAEConfig(
            dims=self.dims,
            enc_widths=self.enc_widths,
            dec_width=self.dec_width,
            dec_dilations=self.dec_dilations,
            latent_size=self.latent_size,
            latent_grid=self.latent_grid,
            z_channels=self.z_channels,
        )


def _at_least(cfg: PartialConfig, name: str, low: int) -> None:
    value = getattr(cfg, name)
    if not isinstance(value, int) or value < low:
        raise ConfigError(f"PartialConfig.{name} must be an int >= {low}, got {value!r}")


def _check_geometry(cfg: PartialConfig) -> None:
    if cfg.dims not in (2, 3):
        raise ConfigError(f"PartialConfig.dims must be 2 or 3, got {cfg.dims!r}")
    if len(cfg.grid) != cfg.dims or any(int(n) < 4 for n in cfg.grid):
        raise ConfigError(
            f"PartialConfig.grid must hold {cfg.dims} sizes >= 4, got {cfg.grid}",
            hint="e.g. grid=[32, 32] with dims=2, or [55, 55, 30] with dims=3",
        )
    cfg.network_config()  # checks widths, dilations and latent settings


def _check_numbers(cfg: PartialConfig) -> None:
    if cfg.beta0 < 0 or cfg.beta1 < 0 or cfg.dice_smooth <= 0 or cfg.lr <= 0:
        raise ConfigError(
            "PartialConfig needs beta0 >= 0, beta1 >= 0, dice_smooth > 0 and lr > 0, got "
            f"{cfg.beta0}, {cfg.beta1}, {cfg.dice_smooth}, {cfg.lr}"
        )
    low, high = cfg.shape_sigma
    if not 0 < low <= high:
        raise ConfigError(
            f"PartialConfig.shape_sigma must satisfy 0 < low <= high, got {low, high}"
        )
    if cfg.normalise not in ("zscore", "none"):
        raise ConfigError(
            f"PartialConfig.normalise must be 'zscore' or 'none', got {cfg.normalise!r}"
        )


# ----------------------------------------------------------------------------------------
# Inputs


def _binary(array: np.ndarray, what: str) -> np.ndarray:
    """``array`` as bool; InputError unless it holds only 0 and 1 (or is boolean)."""
    a = np.asarray(array)
    if a.dtype == bool:
        return a
    if not np.isin(a, (0, 1)).all():
        found = np.unique(a)[:6].tolist()
        raise InputError(
            f"{what} must be binary (0/1 or bool), found values {found}",
            hint="select one label first, e.g. label == 1",
        )
    return a.astype(bool)


def normalise_image(image: np.ndarray, how: str = "zscore") -> np.ndarray:
    """float32 copy of ``image``, z-scored over the whole array (``"zscore"``; a constant
    image becomes 0) or unchanged (``"none"``)."""
    out = np.asarray(image, dtype=np.float32)
    if how == "none":
        return out.copy()
    std = float(out.std())
    return ((out - float(out.mean())) / (std if std > 0 else 1.0)).astype(np.float32)


def check_partial(
    image: np.ndarray, partial_mask: np.ndarray, partial_seg: np.ndarray, dims: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated (image float32, x_m bool, x_s bool); :class:`InputError` on bad input."""
    image = np.asarray(image)
    if image.ndim != dims:
        raise InputError(
            f"image has shape {image.shape}, expected {dims} spatial axes",
            hint=f"this model works on {dims}D arrays without a channel axis",
        )
    if image.dtype == bool or not np.issubdtype(image.dtype, np.number):
        raise InputError(f"image must hold intensities, got dtype {image.dtype}")
    if not np.isfinite(image).all():
        raise InputError("image holds NaN or inf", hint="fill or mask them before proposing")
    x_m = _binary(partial_mask, "partial_mask")
    x_s = _binary(partial_seg, "partial_seg")
    for name, a in (("partial_mask", x_m), ("partial_seg", x_s)):
        if a.shape != image.shape:
            raise InputError(f"{name} has shape {a.shape}, the image {image.shape}")
    outside = int((x_s & ~x_m).sum())
    if outside:
        raise InputError(
            f"partial_seg marks {outside} voxels as foreground outside partial_mask",
            hint="foreground must be decided: set partial_mask wherever partial_seg is set",
        )
    return image.astype(np.float32), x_m, x_s


# ----------------------------------------------------------------------------------------
# Training pairs


@dataclass(frozen=True)
class PartialPair:
    """An input partial segmentation and a larger target one (bool arrays, same shape).

    Invariants: ``x_m ⊆ y_m``; ``x_s = truth ∧ x_m``; ``y_s = truth ∧ y_m`` (so
    ``x_s ⊆ y_s``, and both agree with the ground truth wherever they decide).
    """

    x_m: np.ndarray
    x_s: np.ndarray
    y_m: np.ndarray
    y_s: np.ndarray


def random_shapes(
    shape: Sequence[int], n_shapes: int, sigma: float, rng: np.random.Generator
) -> np.ndarray:
    """Label map of random blobs, int64 ``shape`` with values in [0, n_shapes).

    SynthMorph-style label synthesis (Hoffmann et al. 2022, the paper's ref. [2]): the
    argmax over ``n_shapes`` Gaussian white-noise fields smoothed with ``sigma`` voxels.
    The smoothing wraps around the borders, so shapes are equally likely everywhere (a
    shape may leave one side and come back on the opposite one).
    """
    noise = rng.standard_normal((n_shapes, *shape)).astype(np.float32)
    smooth = gaussian_filter(noise, sigma=(0.0,) + (float(sigma),) * len(shape), mode="wrap")
    return np.argmax(smooth, axis=0)


def make_pair(
    truth: np.ndarray,
    rng: np.random.Generator,
    *,
    n_shapes: int = 8,
    max_added_shapes: int = 2,
    shape_sigma: tuple[float, float] = (0.05, 0.15),
) -> PartialPair:
    """One training pair from a binary ground truth (2D or 3D), by intersecting it with
    random shapes (see the module docstring for the recipe).

    Args:
        truth: bool or 0/1 array (I, J) or (I, J, K).
        rng: the only source of randomness.
        n_shapes: shapes per random label map.
        max_added_shapes: the target region adds 1..this many shapes to the input region.
        shape_sigma: smoothing range, as fractions of ``min(truth.shape)``.

    Returns:
        A :class:`PartialPair`; ``y_m`` strictly contains ``x_m``.
    """
    gt = _binary(truth, "truth")
    if gt.ndim not in (2, 3):
        raise InputError(f"truth must be 2D or 3D, got shape {gt.shape}")
    sigma = rng.uniform(*shape_sigma) * min(gt.shape)
    labels = random_shapes(gt.shape, n_shapes, sigma, rng)
    order = rng.permutation(np.unique(labels))
    n = len(order)
    a = int(rng.integers(0, n))
    b = min(n, a + int(rng.integers(1, max_added_shapes + 1)))
    x_m = np.isin(labels, order[:a])
    y_m = np.isin(labels, order[:b])
    return PartialPair(x_m=x_m, x_s=gt & x_m, y_m=y_m, y_s=gt & y_m)


def _flip(arrays: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    axes = tuple(int(a) for a in np.flatnonzero(rng.random(arrays[0].ndim) < 0.5))
    return [np.flip(a, axis=axes) if axes else a for a in arrays]


def training_batch(
    images: np.ndarray, labels: np.ndarray, cfg: PartialConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A random batch of ``cfg.batch_size`` pairs from normalised images and bool labels
    (each (N, *grid)): x (B, 3, *grid) = [image, x_m, x_s] and y (B, 2, *grid) = [y_m, y_s],
    float32."""
    idx = rng.integers(0, len(images), size=cfg.batch_size)
    xs, ys = [], []
    for i in idx:
        image, truth = images[i], labels[i]
        if cfg.flip:
            image, truth = _flip([image, truth], rng)
        pair = make_pair(
            truth,
            rng,
            n_shapes=cfg.n_shapes,
            max_added_shapes=cfg.max_added_shapes,
            shape_sigma=cfg.shape_sigma,
        )
        xs.append(np.stack([image, pair.x_m, pair.x_s]))
        ys.append(np.stack([pair.y_m, pair.y_s]))
    return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.float32)


# ----------------------------------------------------------------------------------------
# Loss


@dataclass(frozen=True)
class PartialLoss:
    """The loss of one batch and its terms (paper Eq. 3); ``total`` carries the graph."""

    total: torch.Tensor
    wdl: float
    dl: float
    kl: float


def soft_dice_loss(
    target: torch.Tensor,
    pred: torch.Tensor,
    weight: torch.Tensor | None = None,
    smooth: float = 1.0,
) -> torch.Tensor:
    """V-Net soft Dice loss, optionally voxel-weighted, averaged over the batch.

    ``1 - (2 sum(w t p) + e) / (sum(w t^2) + sum(w p^2) + e)`` per sample, sums over every
    axis but the first. target, pred, weight: (B, ...) float; returns a scalar tensor.
    """
    w = torch.ones_like(target) if weight is None else weight
    axes = tuple(range(1, target.ndim))
    num = 2.0 * (w * target * pred).sum(axes) + smooth
    den = (w * target * target).sum(axes) + (w * pred * pred).sum(axes) + smooth
    return (1.0 - num / den).mean()


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over latent dims, mean over the batch."""
    return (-0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp())).sum(1).mean()


def partial_loss(
    pred_m: torch.Tensor,
    pred_s: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    x_m: torch.Tensor,
    y_m: torch.Tensor,
    y_s: torch.Tensor,
    *,
    beta0: float = 1.0,
    beta1: float = 1e-3,
    smooth: float = 1.0,
) -> PartialLoss:
    """``WDL(y_s, y^_s, y_m - x_m) + beta0 DL(y_m, y^_m) + beta1 KL`` (paper Eq. 3).

    pred_m, pred_s, x_m, y_m, y_s: (B, 1, *grid) float; mu, logvar: (B, L).
    """
    wdl = soft_dice_loss(y_s, pred_s, (y_m - x_m).clamp(min=0.0), smooth)
    dl = soft_dice_loss(y_m, pred_m, None, smooth)
    kl = kl_to_standard_normal(mu, logvar)
    total = wdl + beta0 * dl + beta1 * kl
    return PartialLoss(
        total=total, wdl=float(wdl.detach()), dl=float(dl.detach()), kl=float(kl.detach())
    )


def loss_on_batch(
    net: PartialCVAE, x: np.ndarray, y: np.ndarray, eps: np.ndarray, cfg: PartialConfig
) -> PartialLoss:
    """Forward pass and loss of one batch (x (B, 3, *grid), y (B, 2, *grid), eps (B, L))."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    m, s, mu, logvar = net(xt, yt, torch.from_numpy(eps))
    return partial_loss(
        m, s, mu, logvar, xt[:, 1:2], yt[:, 0:1], yt[:, 1:2],
        beta0=cfg.beta0, beta1=cfg.beta1, smooth=cfg.dice_smooth,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------
# Training


def build_network(cfg: PartialConfig) -> PartialCVAE:
    """Fresh network, Xavier init drawn from ``cfg.seed`` (torch's global RNG is restored)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return PartialCVAE(cfg.network_config())


def config_from_checkpoint(data: dict[str, Any]) -> PartialConfig:
    """The :class:`PartialConfig` stored in a checkpoint's plain-data ``config``."""
    if checkpoint_method(data) != "partial":
        raise InputError(
            f"checkpoint holds a {data.get('method', 'unknown')!r} model, not a partial-"
            "segmentation cVAE",
            hint="pass the last.pt of a train_partial run",
        )
    return build_config(PartialConfig, data["config"])


# ----------------------------------------------------------------------------------------
# Proposals


def _as_proposal(
    prob_m: np.ndarray, prob_s: np.ndarray, x_m: np.ndarray, x_s: np.ndarray
) -> Proposal:
    """Threshold at 0.5 and enforce the guarantees on the masks (whatever the numbers)."""
    mask = (prob_m > 0.5) | x_m
    seg = np.where(x_m, x_s, (prob_s > 0.5) & mask)
    new = mask & ~x_m
    fg = int((seg & new).sum())
    return Proposal(mask=mask, seg=seg, added_foreground=fg, added_background=int(new.sum()) - fg)


class PartialProposer:
    """Samples larger partial segmentations from a trained :class:`PartialCVAE`.

    Build it from a network (``PartialProposer(net)``) or a run's checkpoint
    (:meth:`from_checkpoint`). Stateless between calls: every random draw comes from the
    ``rng`` passed to :meth:`propose`.
    """

    def __init__(
        self, net: PartialCVAE, *, normalise: str = "zscore", device: str | torch.device = "cpu"
    ) -> None:
        if normalise not in ("zscore", "none"):
            raise ConfigError(f"normalise must be 'zscore' or 'none', got {normalise!r}")
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.normalise = normalise

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, *, device: str | torch.device = "cpu"
    ) -> PartialProposer:
        """The model of a :func:`train_partial` checkpoint (``last.pt``)."""
        data = load_checkpoint(Path(path))
        cfg = config_from_checkpoint(data)
        net = PartialCVAE(cfg.network_config())
        net.load_state_dict(data["net"])
        return cls(net, normalise=cfg.normalise, device=device)

    @property
    def dims(self) -> int:
        """Spatial dimensions the network works in (2 or 3)."""
        return int(self.net.config.dims)

    def propose(
        self,
        image: np.ndarray,
        partial_mask: np.ndarray,
        partial_seg: np.ndarray,
        k: int,
        rng: np.random.Generator,
    ) -> list[Proposal]:
        """``k`` proposals for one image and input partial segmentation.

        Args:
            image: (I, J) or (I, J, K) intensities on the network grid (any scale).
            partial_mask: x_m, bool or 0/1, same shape: voxels already decided.
            partial_seg: x_s, bool or 0/1, same shape: decided foreground (inside x_m).
            k: number of proposals (>= 1), one latent draw z ~ N(0, I) each.
            rng: source of the k latent draws (same rng state -> same proposals).

        Returns:
            ``k`` :class:`Proposal` s, largest ``added`` first (stable: ties keep draw
            order). Duplicates are kept, so the list always has ``k`` entries.
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ConfigError(f"k (the number of proposals) must be an int >= 1, got {k!r}")
        if not isinstance(rng, np.random.Generator):
            raise ConfigError(
                f"rng must be a numpy Generator, got {type(rng).__name__}",
                hint="pass np.random.default_rng(seed)",
            )
        img, x_m, x_s = check_partial(image, partial_mask, partial_seg, self.dims)
        z = rng.standard_normal((int(k), self.net.config.latent_size)).astype(np.float32)
        probs = self._decode(normalise_image(img, self.normalise), x_m, x_s, z)
        proposals = [_as_proposal(m, s, x_m, x_s) for m, s in probs]
        return sorted(proposals, key=lambda p: -p.added)

    @torch.inference_mode()
    def _decode(
        self, image: np.ndarray, x_m: np.ndarray, x_s: np.ndarray, z: np.ndarray
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(y^_m, y^_s) probabilities, one pair of (*grid) arrays per row of z."""
        x = torch.from_numpy(np.stack([image, x_m, x_s]).astype(np.float32))[None]
        out: list[tuple[np.ndarray, np.ndarray]] = []
        for start in range(0, len(z), MAX_DECODE_BATCH):
            zb = torch.from_numpy(z[start : start + MAX_DECODE_BATCH]).to(self.device)
            xb = x.to(self.device).expand(len(zb), *x.shape[1:])
            m, s = self.net.decode(xb, zb)
            m_np, s_np = m[:, 0].cpu().numpy(), s[:, 0].cpu().numpy()
            out += list(zip(m_np, s_np, strict=True))
        return out
