"""Scribble-constrained test-time adaptation: any segmentation network made interactive.

Sambaturu et al., "Efficient and Generic Interactive Segmentation Framework to Correct
Mispredictions during Clinical Evaluation of Medical Images" (MICCAI 2021), Algorithm 1;
SPEC Sec. 5. For one test volume and the user's scribbles (each voxel with a class label,
several classes at once), only the weights ``W_l`` of the network's last ``l`` layers are
fine-tuned by SGD on the cross-entropy at the scribbled voxels plus
``alpha * ||W_l - W_l_original||`` until every scribbled voxel is predicted as its label
or ``M`` iterations have run. No training on interactions is needed: any pretrained network
mapping an image (B, 1, I, J, K) to logits (B, C, I, J, K) on the same grid works.

Choices where the paper is open (written down once, here):

* **Layers**: a *layer* is a module that directly owns parameters (convolutions, linear
  layers, normalisation layers with affine weights, PReLU, ...), in the order of
  ``named_modules()`` (registration order, which is the forward order of ``nn.Sequential``
  networks, of the project's P-Net and of MONAI's U-Net). The last ``l`` of them adapt,
  all their own parameters; e.g. for the P-Net, ``l = 3`` is the 1x1x1 output convolution,
  the last batch norm and the last 3x3x3 convolution.
* **Mode**: adaptation and prediction run the network in ``eval()`` mode (batch norm with
  its running statistics, dropout off), on a private deep copy; running statistics are
  never updated, and the caller's network is never modified.
* **Loss**: cross-entropy at the scribbled voxels, the mean per label averaged over the
  labels present (``class_balanced``, so a large background scribble from a box does not
  drown a small foreground one), plus ``alpha`` times the sum over adapted tensors of
  ``||W - W_original||_2`` (not squared, as in the paper's Eq. 2; computed as
  ``sqrt(sum d^2 + 1e-12)`` so that its gradient is 0, not NaN, at the start).
  C == 1 output channel: a foreground logit, sigmoid binary cross-entropy, labels 0 / 1;
  C >= 2: softmax cross-entropy over labels 0..C-1.
* **Stop rule**: before each update the prediction is checked; adaptation stops when the
  share of scribbled voxels predicted with a label other than theirs is at most
  ``tolerance`` (0: every one is right), so an already satisfied input takes 0 updates.
* **Scribbles**: an integer label volume on the network grid, ``-1`` = unlabeled
  (:data:`UNLABELED`), ``0..C-1`` = class labels (0 = background). A point click becomes
  its voxel (a ball with ``click_radius``), a box marks everything outside it as
  background; region growing (``grow_threshold``) then enlarges all scribbles so far.
* **Optimiser**: SGD with momentum 0.9 and the gradient clipped to norm 1 (the paper says
  only SGD; see ``TTAConfig.momentum`` and ``max_grad_norm`` for why).
* **Within one image**, each step re-adapts from the weights of the previous step
  (``warm_start``, default) with the regulariser still anchored at the original weights;
  a new image (``start``) always begins from the original weights (Algorithm 1's reset).
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from mecca import bundle
from mecca.data.roi import Box, Crop
from mecca.errors import ConfigError, GeometryError, InputError
from mecca.interaction.clicks import Click, InteractionKind
from mecca.interface import FG_BG, MethodState, StepResult
from mecca.methods.spec import MethodSpec
from mecca.methods.supervised.bundle import load_supervised
from mecca.methods.supervised.method import SegmenterMethod
from mecca.runtime import resolve_device

logger = logging.getLogger(__name__)

UNLABELED = -1
"""Scribble value of a voxel the user said nothing about."""

STRUCTURE_6 = ndimage.generate_binary_structure(3, 1)
"""Face neighbours (6-connectivity): region growing does not leak through corners."""

_NORM_EPS = 1e-12

Params = dict[str, torch.Tensor]
"""Adapted parameters by their ``named_parameters()`` name (detached tensors)."""


@dataclass(frozen=True)
class TTAConfig:
    """Settings of scribble-constrained test-time adaptation (Sambaturu et al. 2021)."""

    layers: int = 4
    """``l``: how many of the network's last parameterised layers adapt (modules that own
    parameters, in registration order; see the module docstring). The paper's ablation
    found 3-6 best depending on the network."""
    iterations: int = 100
    """``M``: most SGD updates per adaptation (the paper's ablation: 80-140)."""
    alpha: float = 3.0
    """Weight of ``sum_t ||W_t - W_t_original||_2`` over the adapted tensors. The norm is
    not squared, so its pull has length ``alpha`` per tensor however close the weights
    are: a weight moves only where the scribbles pull harder. 3.0 was the best of 0.01 /
    1 / 3 with the shipped P-Net on the hippocampus val split
    (``benchmarks/tta_settings.py``, docs/tta.md); 0.01 let one-label strokes shift the
    whole prediction. The best value depends on the network's weight scale."""
    lr: float = 0.01
    """SGD learning rate ``eta``."""
    momentum: float = 0.9
    """SGD momentum. The paper only says SGD; plain SGD (0) needs many more iterations on
    small networks, so heavy-ball momentum 0.9 is the default (0 reproduces plain SGD).
    The momentum buffer starts at zero for every adaptation."""
    max_grad_norm: float | None = 1.0
    """Clip the gradient of the adapted weights to this L2 norm before each update (None:
    no clipping). Not in the paper: a network that never saw a label gives that label
    logits far below the others, and the first unclipped steps then wreck the weights."""
    class_balanced: bool = True
    """Average the cross-entropy per label, then over labels (else over all voxels)."""
    tolerance: float = 0.0
    """Stop once at most this share of scribbled voxels is predicted wrongly (0 = all right)."""
    grow_threshold: float | None = 0.5
    """Region growing ``T``: a voxel joins a scribble when its intensity differs from the
    mean intensity of that scribble (its connected component of one label) by less than
    this, in the crop's normalised units (z-score); None switches growing off."""
    grow_radius: float = 3.0
    """Region growing reaches at most this Euclidean distance (voxels) from the scribble."""
    click_radius: int = 0
    """A point click scribbles a ball of this radius (voxels; 0 = the single voxel). 0 by
    default: region growing enlarges a click within similar intensities instead, while a
    ball ignores edges (a click next to the boundary would scribble across it), and a
    stroke given as one click per voxel (:class:`~mecca.interaction.scribbles.ScribbleUser`)
    stays as thin as drawn."""
    border_background: bool = True
    """The crop's outer voxel layer is background from the start (a constraint of every
    adaptation), as for the classical methods: the crop is the user's ROI box, and a box
    says nothing outside it is the object. Without it a first stroke of one label is the
    only constraint, and the cheapest way to satisfy it is to shift that label's logit
    everywhere (measured on the hippocampus val split: see docs/tta.md)."""
    foreground_label: int = 1
    """Label of FOREGROUND clicks (BACKGROUND clicks and outside-the-box are label 0)."""
    warm_start: bool = True
    """Within one image, start each step from the previous step's adapted weights (False:
    from the original weights every step, so a result depends only on the scribble set)."""
    batch_voxels: int | None = None
    """When set, each update uses a random subset of this many scribbled voxels (drawn from
    the step's ``rng``: stochastic gradients for very large scribbles); the stop rule
    always checks every scribbled voxel. None: all voxels, deterministic."""

    def __post_init__(self) -> None:
        _at_least(layers=(self.layers, 1), iterations=(self.iterations, 0))
        _at_least(click_radius=(self.click_radius, 0), foreground_label=(self.foreground_label, 1))
        if self.batch_voxels is not None:
            _at_least(batch_voxels=(self.batch_voxels, 1))
        if self.alpha < 0 or self.lr <= 0:
            raise ConfigError(f"TTAConfig needs alpha >= 0 and lr > 0, got {self.alpha}, {self.lr}")
        if not 0 <= self.momentum < 1 or not 0 <= self.tolerance < 1:
            raise ConfigError("TTAConfig.momentum and tolerance must lie in [0, 1)")
        if self.grow_threshold is not None and self.grow_threshold <= 0:
            raise ConfigError(
                f"TTAConfig.grow_threshold must be > 0, got {self.grow_threshold}",
                hint="use None to switch region growing off",
            )
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ConfigError(f"TTAConfig.max_grad_norm must be > 0, got {self.max_grad_norm}")
        if self.grow_radius < 0:
            raise ConfigError(f"TTAConfig.grow_radius must be >= 0, got {self.grow_radius}")


def _at_least(**values: tuple[int, int]) -> None:
    """Raise ConfigError unless each ``value >= minimum``."""
    for key, (value, minimum) in values.items():
        if int(value) < minimum:
            raise ConfigError(f"TTAConfig.{key} must be >= {minimum}, got {value}")


# --------------------------------------------------------------------------- layers


def weighted_layers(net: nn.Module) -> list[str]:
    """Names of the modules that directly own parameters, in registration order."""
    return [name for name, module in net.named_modules() if _owns_parameters(module)]


def _owns_parameters(module: nn.Module) -> bool:
    return next(iter(module.parameters(recurse=False)), None) is not None


def adapted_parameter_names(net: nn.Module, layers: int) -> list[str]:
    """``named_parameters()`` names of the last ``layers`` parameterised layers.

    Raises:
        ConfigError: the network has fewer parameterised layers than ``layers``.
    """
    names = weighted_layers(net)
    if layers > len(names):
        raise ConfigError(
            f"cannot adapt the last {layers} layers: the network has only {len(names)} "
            "layers with weights",
            hint=f"set TTAConfig.layers to at most {len(names)}",
        )
    chosen = set(names[len(names) - layers :])
    out = []
    for name, module in net.named_modules():
        if name in chosen:
            out += [_join(name, p) for p, _ in module.named_parameters(recurse=False)]
    return out


def _join(module: str, param: str) -> str:
    return f"{module}.{param}" if module else param


def adapted_network(net: nn.Module, params: Params | None = None) -> nn.Module:
    """A private copy of ``net`` in eval mode, with ``params`` (adapted weights) loaded.

    Every parameter of the copy has ``requires_grad=False``. Copied under ``no_grad``:
    a TorchScript module's deep copy otherwise gives non-leaf parameters.
    """
    with torch.no_grad():
        work = copy.deepcopy(net)
        own = dict(work.named_parameters())
        for name, value in (params or {}).items():
            if name not in own:
                raise ConfigError(f"adapted parameter {name!r} is not a parameter of the network")
            own[name].copy_(value)
    for p in work.parameters():
        p.requires_grad_(False)
    return work.eval()


# --------------------------------------------------------------------------- scribbles


def clicks_to_scribbles(
    clicks: Sequence[Click], shape: Sequence[int], *, radius: int = 0, foreground_label: int = 1
) -> np.ndarray:
    """Int16 ``shape`` scribble volume from fg/bg point clicks (-1 = unlabeled).

    A FOREGROUND click labels a Euclidean ball of ``radius`` voxels with
    ``foreground_label``, a BACKGROUND click with 0; a later click wins where balls overlap.

    Raises:
        InputError: a click of another kind; GeometryError: a click outside the grid.
    """
    shp = tuple(int(s) for s in shape)
    out = np.full(shp, UNLABELED, np.int16)
    offsets = np.argwhere(np.ones((2 * radius + 1,) * 3, bool)) - radius
    offsets = offsets[(offsets**2).sum(axis=1) <= radius**2]
    for click in clicks:
        if click.kind not in FG_BG:
            raise InputError(
                f"test-time adaptation takes foreground/background clicks, got {click.kind.value}"
            )
        centre = np.asarray(click.position)
        if np.any(centre < 0) or np.any(centre >= np.asarray(shp)):
            raise GeometryError(f"click {click.position} lies outside the grid {shp}")
        pts = centre + offsets
        pts = pts[np.all((pts >= 0) & (pts < np.asarray(shp)), axis=1)]
        fg = click.kind is InteractionKind.FOREGROUND
        out[tuple(pts.T)] = foreground_label if fg else 0
    return out


def box_to_scribbles(box: Box | Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Int16 ``shape`` volume: background (0) outside the box, unlabeled (-1) inside.

    ``box`` is a :class:`~mecca.data.roi.Box` or ``(i0, j0, k0, i1, j1, k1)``, half-open,
    on the network grid: a user drawing a box says nothing outside belongs to the object
    (the inside stays for the network to decide).
    """
    if not isinstance(box, Box):
        values = [int(v) for v in box]
        if len(values) != 6:
            raise InputError(f"a box needs 6 values (i0, j0, k0, i1, j1, k1), got {len(values)}")
        box = Box((values[0], values[1], values[2]), (values[3], values[4], values[5]))
    out = np.zeros(tuple(int(s) for s in shape), np.int16)
    out[box.clip(out.shape).slices] = UNLABELED
    return out


def border_scribbles(shape: Sequence[int]) -> np.ndarray:
    """Int16 ``shape`` volume: background (0) on the outer voxel layer, unlabeled inside."""
    out = np.zeros(tuple(int(s) for s in shape), np.int16)
    out[1:-1, 1:-1, 1:-1] = UNLABELED
    return out


def merge_scribbles(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """New scribble volume: ``new``'s labels where it has one, else ``old``'s (a new array)."""
    if old.shape != new.shape:
        raise GeometryError(f"scribble volumes {old.shape} and {new.shape} differ in shape")
    return np.where(new != UNLABELED, new, old).astype(np.int16)


def check_scribbles(scribbles: np.ndarray, shape: Sequence[int], n_labels: int) -> np.ndarray:
    """``scribbles`` as int64, checked against the image grid and the number of labels.

    Raises:
        GeometryError: wrong shape. InputError: non-integer values, labels outside
        ``-1..n_labels-1``, or no scribbled voxel at all.
    """
    arr = np.asarray(scribbles)
    if arr.shape != tuple(shape):
        raise GeometryError(
            f"scribbles {arr.shape} are not on the image grid {tuple(shape)}",
            hint="draw scribbles on the crop's network grid",
        )
    if arr.dtype.kind not in "iu":
        raise InputError(f"scribbles must be an integer label volume, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < UNLABELED or hi >= n_labels:
        raise InputError(
            f"scribble labels must lie in -1..{n_labels - 1} (-1 = unlabeled), "
            f"got values {lo}..{hi}",
            hint="the network predicts only labels 0..C-1 (0 / 1 for a one-channel output)",
        )
    if hi == UNLABELED:
        raise InputError("no scribbled voxel: every value is -1 (unlabeled)")
    return arr


def grow_scribbles(
    image: np.ndarray, scribbles: np.ndarray, *, threshold: float, radius: float
) -> np.ndarray:
    """Scribble region growing (Sambaturu et al. 2021, Sec. 3), vectorised.

    A scribble is a 6-connected component of one label. An unlabeled voxel takes the label
    of its nearest scribbled voxel (Euclidean) when (a) that distance is at most ``radius``,
    (b) its intensity differs from the mean intensity of that voxel's scribble by less than
    ``threshold``, and (c) it is 6-connected to that scribble through voxels meeting
    (a) and (b) for the same label. The paper compares with the neighbour the region grows
    from; comparing with the scribble's mean does not drift along a slow gradient.
    Scribbled voxels keep their labels.

    Args:
        image: float (I, J, K) intensities (the crop's normalised image).
        scribbles: int (I, J, K), -1 unlabeled, labels >= 0.
        threshold: intensity tolerance, in the image's units.
        radius: largest growth distance, voxels.

    Returns:
        int16 (I, J, K) grown scribbles.
    """
    seeds = scribbles != UNLABELED
    if not seeds.any() or seeds.all():
        return scribbles.astype(np.int16)
    comp = _scribble_components(scribbles, seeds)
    means = np.asarray(ndimage.mean(image, comp, np.arange(1, comp.max() + 1)), np.float64)
    dist, nearest = ndimage.distance_transform_edt(~seeds, return_indices=True)
    near_comp = comp[tuple(nearest)]
    near_label = scribbles[tuple(nearest)]
    ok = (dist <= radius) & (np.abs(image - means[near_comp - 1]) < threshold)
    out = scribbles.astype(np.int16)
    for label in np.unique(scribbles[seeds]):
        region = (ok & (near_label == label)) | (scribbles == label)
        parts, _ = ndimage.label(region, structure=STRUCTURE_6)
        keep = np.unique(parts[scribbles == label])
        grown = np.isin(parts, keep[keep > 0]) & ~seeds
        out[grown] = label
    logger.debug("region growing: %d -> %d scribbled voxels", seeds.sum(), (out >= 0).sum())
    return out


def _scribble_components(scribbles: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Int64 map numbering the 6-connected components of each label 1..n (0 = unlabeled)."""
    out = np.zeros(scribbles.shape, np.int64)
    count = 0
    for label in np.unique(scribbles[seeds]):
        comp, n = ndimage.label(scribbles == label, structure=STRUCTURE_6)
        out[comp > 0] = comp[comp > 0] + count
        count += n
    return out


# --------------------------------------------------------------------------- adaptation


class Adaptation(NamedTuple):
    """What :func:`adapt` returns."""

    params: Params
    """The adapted parameters only, by ``named_parameters()`` name (detached clones)."""
    iterations: int
    """SGD updates done (0 when the scribbles were satisfied from the start)."""
    seconds: float
    """Wall time of the adaptation."""


def image_tensor(image: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """(1, C_in, I, J, K) float32 network input from an (I, J, K) or (C_in, I, J, K) array."""
    x = torch.as_tensor(np.asarray(image) if not torch.is_tensor(image) else image)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise InputError(f"the image must be (I, J, K) or (C, I, J, K), got shape {tuple(x.shape)}")
    return x[None].to(device=device, dtype=torch.float32)


def forward_logits(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The network's (1, C, I, J, K) logits for ``x``, checked to be on the input grid."""
    out = net(x)
    if isinstance(out, (tuple, list)):
        out = out[0]  # deep-supervision networks: the full-resolution output comes first
    if not torch.is_tensor(out) or out.ndim != 5 or out.shape[-3:] != x.shape[-3:]:
        shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise InputError(
            f"the network must return (B, C, I, J, K) logits on its input grid "
            f"{tuple(x.shape[-3:])}, got {shape}"
        )
    return out


def n_labels(channels: int) -> int:
    """Labels a network with ``channels`` output channels predicts (2 for a sigmoid output)."""
    return max(int(channels), 2)


def predicted_labels(logits: torch.Tensor) -> torch.Tensor:
    """Int64 labels from (..., C, N) or (1, C, I, J, K) logits: sigmoid > 0.5 or argmax."""
    if logits.shape[1 if logits.ndim == 5 else 0] == 1:
        return (logits > 0).long().squeeze(1 if logits.ndim == 5 else 0)
    return logits.argmax(dim=1 if logits.ndim == 5 else 0)


@dataclass
class _Problem:
    """The scribble constraints on a flattened grid: voxel indices and their labels."""

    index: torch.Tensor  # int64 (N,) flat voxel indices
    target: torch.Tensor  # int64 (N,) labels

    @classmethod
    def build(cls, scribbles: np.ndarray, device: torch.device) -> _Problem:
        flat = scribbles.reshape(-1).astype(np.int64)
        idx = np.flatnonzero(flat != UNLABELED)
        return cls(torch.as_tensor(idx, device=device), torch.as_tensor(flat[idx], device=device))

    def wrong_share(self, logits: torch.Tensor) -> float:
        """Share of scribbled voxels predicted with another label."""
        picked = logits.flatten(2)[0][:, self.index]
        return float((predicted_labels(picked) != self.target).float().mean())


def scribble_loss(
    logits: torch.Tensor, index: torch.Tensor, target: torch.Tensor, *, balanced: bool
) -> torch.Tensor:
    """Cross-entropy of (1, C, I, J, K) logits at flat voxels ``index`` with labels ``target``.

    C == 1: binary cross-entropy of the foreground logit; C >= 2: softmax cross-entropy.
    ``balanced``: the mean per label, averaged over the labels present.
    """
    picked = logits.flatten(2)[0][:, index]  # (C, N)
    if picked.shape[0] == 1:
        per = F.binary_cross_entropy_with_logits(
            picked[0], target.to(picked.dtype), reduction="none"
        )
    else:
        per = F.cross_entropy(picked.T, target, reduction="none")
    if not balanced:
        return per.mean()
    labels, inverse, counts = torch.unique(target, return_inverse=True, return_counts=True)
    weights = 1.0 / (counts[inverse].to(per.dtype) * len(labels))
    return (per * weights).sum()


def weight_distance(
    params: Sequence[torch.Tensor], originals: Sequence[torch.Tensor]
) -> torch.Tensor:
    """``sum_t ||W_t - W_t0||_2`` with a zero (not NaN) gradient at ``W = W0``."""
    pairs = zip(params, originals, strict=True)
    terms = [torch.sqrt(((p - p0) ** 2).sum() + _NORM_EPS) for p, p0 in pairs]
    return torch.stack(terms).sum() - len(terms) * _NORM_EPS**0.5


def _subsample(
    problem: _Problem, size: int | None, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """All scribbled voxels, or ``size`` of them drawn without replacement."""
    n = problem.index.numel()
    if size is None or size >= n:
        return problem.index, problem.target
    pick = torch.as_tensor(rng.choice(n, size=size, replace=False), device=problem.index.device)
    return problem.index[pick], problem.target[pick]


def _run(
    work: nn.Module,
    x: torch.Tensor,
    first: torch.Tensor,
    problem: _Problem,
    params: Sequence[torch.Tensor],
    originals: Sequence[torch.Tensor],
    config: TTAConfig,
    rng: np.random.Generator,
) -> tuple[int, torch.Tensor]:
    """Algorithm 1's loop on ``work`` (adapted in place), from its logits ``first`` for
    ``x``: the updates done and the final logits (those of the returned weights)."""
    opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum)
    logits, done = first, 0
    while problem.wrong_share(logits.detach()) > config.tolerance and done < config.iterations:
        index, target = _subsample(problem, config.batch_voxels, rng)
        loss = scribble_loss(logits, index, target, balanced=config.class_balanced)
        loss = loss + config.alpha * weight_distance(params, originals)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        opt.step()
        done += 1
        logits = forward_logits(work, x)
    return done, logits.detach()


@dataclass(frozen=True)
class AdaptRun:
    """:func:`adapt_run`'s result: the adaptation and what it produced."""

    adaptation: Adaptation
    """Adapted parameters, iterations, seconds."""
    logits: torch.Tensor
    """(1, C, I, J, K) logits of the network with the adapted weights (detached)."""
    constraints: np.ndarray
    """Int16 (I, J, K) scribbles after region growing: the voxels the loss constrained."""


def adapt_run(
    net: nn.Module,
    image: np.ndarray | torch.Tensor,
    scribbles: np.ndarray,
    config: TTAConfig,
    *,
    rng: np.random.Generator,
    init: Params | None = None,
    device: torch.device | None = None,
) -> AdaptRun:
    """:func:`adapt`, also returning the adapted logits and the grown scribbles."""
    t0 = time.perf_counter()
    dev = device if device is not None else _device_of(net)
    x = image_tensor(image, dev)
    names = adapted_parameter_names(net, config.layers)
    original = dict(net.named_parameters())
    originals = [original[n].detach().to(dev) for n in names]
    work = adapted_network(net, init).to(dev)
    own = dict(work.named_parameters())
    params = [own[n].requires_grad_(True) for n in names]
    first = forward_logits(work, x)
    grown = check_scribbles(scribbles, x.shape[-3:], n_labels(first.shape[1]))
    if config.grow_threshold is not None:
        img = x[0, 0].cpu().numpy()
        grown = grow_scribbles(
            img, grown, threshold=config.grow_threshold, radius=config.grow_radius
        )
    problem = _Problem.build(grown, dev)
    done, logits = _run(work, x, first, problem, params, originals, config, rng)
    adapted = {n: p.detach().clone() for n, p in zip(names, params, strict=True)}
    seconds = time.perf_counter() - t0
    logger.debug("adapted %d tensors in %d iterations, %.3f s", len(names), done, seconds)
    return AdaptRun(Adaptation(adapted, done, seconds), logits, grown.astype(np.int16))


def adapt(
    net: nn.Module,
    image: np.ndarray | torch.Tensor,
    scribbles: np.ndarray,
    config: TTAConfig,
    *,
    rng: np.random.Generator,
    init: Params | None = None,
    device: torch.device | None = None,
) -> Adaptation:
    """Algorithm 1 of Sambaturu et al. (2021): fit the last layers to the scribbles.

    Works on a private copy of ``net`` (the caller's network and its flags are never
    touched), starting from the original weights, or from ``init`` (a previous
    :class:`Adaptation`'s ``params``) when given. The regulariser always pulls towards
    ``net``'s own weights. Region growing (``config.grow_threshold``) is applied first.

    Args:
        net: (B, C_in, I, J, K) -> (B, C, I, J, K) logits; C == 1 is a foreground logit.
        image: float (I, J, K) or (C_in, I, J, K), the network's input (no batch axis).
        scribbles: int (I, J, K), -1 unlabeled, else a label in 0..max(C, 2)-1.
        config: the adaptation settings.
        rng: draws the voxel subsets of ``config.batch_voxels`` (unused otherwise).
        init: parameters to start from (warm start), else the network's own.
        device: where to run; default the device of ``net``'s parameters.

    Returns:
        ``Adaptation(params, iterations, seconds)``.

    Raises:
        GeometryError, InputError: scribbles off the grid, bad labels, none at all.
        ConfigError: ``config.layers`` exceeds the network's parameterised layers.
    """
    run = adapt_run(net, image, scribbles, config, rng=rng, init=init, device=device)
    return run.adaptation


def _device_of(net: nn.Module) -> torch.device:
    first = next(iter(net.parameters()), None)
    if first is None:
        raise ConfigError("the network has no parameters to adapt")
    return first.device


def probabilities(logits: torch.Tensor) -> np.ndarray:
    """Float32 (L, I, J, K) per-label probabilities from (1, C, I, J, K) logits.

    C == 1: ``[1 - sigmoid, sigmoid]`` (L = 2); C >= 2: softmax (L = C).
    """
    if logits.shape[1] == 1:
        fg = torch.sigmoid(logits[0, 0])
        probs = torch.stack([1 - fg, fg])
    else:
        probs = torch.softmax(logits[0], dim=0)
    return probs.float().cpu().numpy()


# --------------------------------------------------------------------------- method


@dataclass
class TTAMethod:
    """Any segmentation network made interactive by test-time adaptation (SPEC Sec. 5).

    ``start`` runs the original network; each ``step`` adds the new clicks' scribbles to
    all earlier ones (``state.extra["scribbles"]``, int16, -1 unlabeled), re-adapts (see
    ``TTAConfig.warm_start``) and returns the foreground probability: the sigmoid for a
    one-channel network, ``1 - P(label 0)`` (anything but background) for C >= 2.
    ``state.extra`` also holds ``constraints`` (the scribbles after region growing, what
    the adaptation fitted), ``params`` (the adapted weights, None before any step),
    ``probs`` (float32 (L, I, J, K) per-label probabilities), ``iterations`` and
    ``start_seconds``. The shared network is put in ``eval()`` mode once and its weights
    are never modified (each step adapts a private copy), so one loaded network serves
    many sessions. :meth:`step_scribbles` and :meth:`step_box` take label volumes and
    boxes directly. ``init_prob`` of ``start`` is ignored: the output is the network's own.

    Attributes:
        net: (B, 1, I, J, K) image -> (B, C, I, J, K) logits.
        config: the adaptation settings.
        name: the method's registry name.
        grid: the network grid callers crop to.
        device: where the network runs.
    """

    net: nn.Module
    config: TTAConfig = field(default_factory=TTAConfig)
    name: str = "tta"
    grid: tuple[int, int, int] = (55, 55, 30)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self) -> None:
        self.net = self.net.to(self.device).eval()
        adapted_parameter_names(self.net, self.config.layers)  # fail early on a bad `layers`

    @property
    def accepts(self) -> frozenset[InteractionKind]:
        return FG_BG

    @classmethod
    def from_module(
        cls,
        net: nn.Module,
        config: TTAConfig | None = None,
        *,
        device: str | torch.device = "cpu",
        grid: Sequence[int] = (55, 55, 30),
    ) -> TTAMethod:
        """Wrap any ``nn.Module`` (the project's nets, a MONAI network, a user's own).

        A pickled whole-module checkpoint loads with ``torch.load(path, weights_only=False)``
        (only for files you trust: unpickling runs code) and is then passed here.
        """
        return cls(net, config or TTAConfig(), grid=_grid(grid), device=_resolve(device))

    @classmethod
    def from_torchscript(
        cls,
        path: str | Path,
        config: TTAConfig | None = None,
        *,
        device: str | torch.device = "cpu",
        grid: Sequence[int] = (55, 55, 30),
    ) -> TTAMethod:
        """Load a TorchScript file (``torch.jit.save``) and wrap it."""
        dev = _resolve(device)
        try:
            with warnings.catch_warnings():  # torch 2.9+ deprecates TorchScript; files remain
                warnings.filterwarnings("ignore", "`torch.jit", DeprecationWarning)
                net = torch.jit.load(str(path), map_location=dev)
        except (RuntimeError, ValueError, OSError) as exc:
            raise InputError(
                f"cannot load a TorchScript module: {exc}".splitlines()[0],
                path=path,
                hint="save the network with torch.jit.save(torch.jit.script(net), path)",
            ) from exc
        return cls(net, config or TTAConfig(), grid=_grid(grid), device=dev)

    @classmethod
    def from_supervised(
        cls, model: str | Path, config: TTAConfig | None = None, *, device: str = "cpu"
    ) -> TTAMethod:
        """The trained P-Net or U-Net of a run folder, checkpoint or bundle (its grid too)."""
        seg = load_supervised(model, device=device)
        if not isinstance(seg, SegmenterMethod):
            raise ConfigError(
                f"{model} holds a {seg.name} model; test-time adaptation wraps an image-only "
                "segmenter",
                hint="use a pnet or unet model",
            )
        return cls(seg.net, config or TTAConfig(), grid=seg.grid, device=seg.device)

    def start(self, crop: Crop, *, init_prob: np.ndarray | None = None) -> MethodState:
        t0 = time.perf_counter()
        with torch.inference_mode():
            logits = forward_logits(self.net, image_tensor(crop.image, self.device))
        probs = probabilities(logits)
        scribbles = np.full(crop.grid, UNLABELED, np.int16)
        if self.config.border_background:
            scribbles = merge_scribbles(scribbles, border_scribbles(crop.grid))
        extra = {
            "scribbles": scribbles,
            "constraints": np.full(crop.grid, UNLABELED, np.int16),
            "params": None,
            "probs": probs,
            "iterations": 0,
            "start_seconds": time.perf_counter() - t0,
        }
        return MethodState(crop, prob=_foreground(probs), extra=extra)

    def step(
        self, state: MethodState, new: Sequence[Click], *, rng: np.random.Generator
    ) -> tuple[MethodState, StepResult]:
        if not new:
            assert state.prob is not None
            return state, StepResult(state.prob)
        scribbles = clicks_to_scribbles(
            new,
            state.crop.grid,
            radius=self.config.click_radius,
            foreground_label=self.config.foreground_label,
        )
        return self._adapt_step(state, scribbles, tuple(new), rng)

    def step_scribbles(
        self, state: MethodState, scribbles: np.ndarray, *, rng: np.random.Generator
    ) -> tuple[MethodState, StepResult]:
        """A step with a scribble label volume (int (I, J, K) on the grid, -1 unlabeled)."""
        arr = np.asarray(scribbles)
        if arr.shape != state.crop.grid:
            raise GeometryError(f"scribbles {arr.shape} are not on the crop grid {state.crop.grid}")
        if arr.dtype.kind not in "iu" or (arr.size and arr.min() < UNLABELED):
            raise InputError("scribbles must be integer labels >= 0, or -1 for unlabeled voxels")
        return self._adapt_step(state, arr.astype(np.int16), (), rng)

    def step_box(
        self, state: MethodState, box: Box | Sequence[int], *, rng: np.random.Generator
    ) -> tuple[MethodState, StepResult]:
        """A step with a box on the grid: everything outside it is background."""
        return self._adapt_step(state, box_to_scribbles(box, state.crop.grid), (), rng)

    def _adapt_step(
        self,
        state: MethodState,
        scribbles: np.ndarray,
        clicks: tuple[Click, ...],
        rng: np.random.Generator,
    ) -> tuple[MethodState, StepResult]:
        merged = merge_scribbles(state.extra["scribbles"], scribbles)
        init = state.extra.get("params") if self.config.warm_start else None
        run = adapt_run(
            self.net, state.crop.image, merged, self.config, rng=rng, init=init, device=self.device
        )
        probs = probabilities(run.logits)
        prob = _foreground(probs)
        extra = {
            **state.extra,
            "scribbles": merged,
            "constraints": run.constraints,
            "params": run.adaptation.params,
            "probs": probs,
            "iterations": run.adaptation.iterations,
        }
        new_state = MethodState(state.crop, state.clicks + clicks, prob, extra)
        return new_state, StepResult(prob, seconds=run.adaptation.seconds)


def _foreground(probs: np.ndarray) -> np.ndarray:
    """Float32 (I, J, K) probability of any label but background (label 0)."""
    return np.clip(1.0 - probs[0], 0.0, 1.0).astype(np.float32)


def _grid(grid: Sequence[int]) -> tuple[int, int, int]:
    values = [int(g) for g in grid]
    if len(values) != 3 or min(values) < 1:
        raise ConfigError(f"grid needs 3 positive sizes (i, j, k), got {list(grid)}")
    return (values[0], values[1], values[2])


def _resolve(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    return resolve_device(device)


def tta_factory(
    model: str | None = None,
    device: str = "cpu",
    torchscript: str | None = None,
    dataset: str | None = None,
    **settings: Any,
) -> TTAMethod:
    """Registry factory (``methods.get("tta", ...)``): a trained P-Net / U-Net (``model``:
    run folder, checkpoint or bundle; default the shipped P-Net for ``dataset`` when there
    is one) or a TorchScript file, with ``TTAConfig`` settings as keyword options."""
    try:
        config = TTAConfig(**settings)
    except TypeError as exc:
        raise ConfigError(f"bad option for method tta: {exc}") from exc
    if torchscript is not None:
        return TTAMethod.from_torchscript(torchscript, config, device=device)
    if model is None:
        model = bundle.default_bundle("pnet", dataset)
        if model not in bundle.shipped_bundles():
            raise ConfigError(
                "method tta adapts a trained segmentation network, and none is shipped",
                hint="give model=<pnet / unet run folder, checkpoint or bundle> "
                "or torchscript=<file>",
            )
    return TTAMethod.from_supervised(model, config, device=device)


SPECS: tuple[MethodSpec, ...] = (MethodSpec("tta", tta_factory, learned=True, backbone="pnet"),)
"""Test-time adaptation, as the registry offers it (it adapts a shipped P-Net by default)."""
