"""The supervised baselines at inference: P-Net, U-Net, InterCNN and DeepIGeoS.

Trained by :mod:`mecca.methods.supervised.train`; every array is on the crop's network grid, and the
networks run in ``eval()`` mode (batch norm with its running averages: these are
ordinary supervised networks, unlike the RL agents of :mod:`mecca.methods.agents.method`).

* :class:`SegmenterMethod` (``pnet``, ``unet``, ``uamt``: UA-MT's student network):
  non-interactive. ``start`` runs the
  network once and every ``step`` returns that same prediction, whatever the clicks (it
  accepts fg/bg clicks so that any protocol can drive it). ``init_prob`` is ignored: the
  method's output is its own segmentation. :meth:`SegmenterMethod.initial_prob` is the
  initial segmenter of the IteR-MRL protocol (:func:`mecca.episode.initial_prob_on_grid`).
* :class:`RefinerMethod` (``intercnn``, ``deepigeos``): the refining network reads
  ``[image, previous prediction (binary, p > 0.5), fg hint map, bg hint map]``.
  ``start`` gives the initial prediction: ``init_prob`` when given, else DeepIGeoS's
  P-Net, or, for InterCNN, the refiner itself on an empty prediction with no clicks (the
  first round of its training). A step with new clicks adds them to the hint maps (all
  clicks so far) and refines the last prediction; a step without new clicks keeps it.
  Hint maps: Gaussian for InterCNN, geodesic for DeepIGeoS (``HintEncoder``).

``StepResult.seconds`` is the model time of that step only; the initial prediction's
time is kept in ``state.extra["start_seconds"]``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from mecca.data.roi import Crop
from mecca.errors import ConfigError, InputError
from mecca.interaction.clicks import Click, InteractionKind
from mecca.interaction.hints import HintEncoder
from mecca.interface import FG_BG, MethodState, StepResult

SEGMENTERS = ("pnet", "unet", "uamt")
"""Non-interactive methods (image in, segmentation out)."""
REFINERS = ("intercnn", "deepigeos")
"""Interactive methods (image, previous prediction and fg/bg hints in)."""


def hint_encoder(method: str) -> HintEncoder:
    """InterCNN: Gaussian fg/bg maps (Bredell et al.); DeepIGeoS: geodesic fg/bg maps."""
    encoding = "geodesic" if method == "deepigeos" else "gaussian"
    return HintEncoder(encoding, "fg_bg")


def refiner_input(image: np.ndarray, prob: np.ndarray, hints: np.ndarray) -> torch.Tensor:
    """(1, 2 + C, I, J, K) float32: image, binary previous prediction (p > 0.5), hints."""
    binary = (np.asarray(prob) > 0.5).astype(np.float32)
    stacked = np.concatenate([image[None], binary[None], hints]).astype(np.float32, copy=False)
    return torch.from_numpy(stacked)[None]


def _predict(net: nn.Module, x: torch.Tensor, device: torch.device) -> np.ndarray:
    """Sigmoid of the network's logits for one input, float32 (I, J, K) on the CPU."""
    with torch.inference_mode():
        return torch.sigmoid(net(x.to(device)))[0, 0].float().cpu().numpy()


@dataclass
class SegmenterMethod:
    """A non-interactive segmentation network (P-Net, U-Net) behind ``InteractiveMethod``.

    Attributes:
        net: image (B, 1, I, J, K) -> logits (B, 1, I, J, K).
        name: ``pnet``, ``unet`` or ``uamt``.
        grid: the network grid the model was trained on; callers crop to it.
    """

    net: nn.Module
    name: str = "pnet"
    grid: tuple[int, int, int] = (55, 55, 30)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self) -> None:
        self.net.eval().to(self.device)

    @property
    def accepts(self) -> frozenset[InteractionKind]:
        return FG_BG

    def initial_prob(self, crop: Crop) -> np.ndarray:
        """Float32 foreground probability on the crop's grid (the IteR-MRL initial map)."""
        return _predict(self.net, torch.from_numpy(crop.image)[None, None], self.device)

    def start(self, crop: Crop, *, init_prob: np.ndarray | None = None) -> MethodState:
        t0 = time.perf_counter()
        prob = self.initial_prob(crop)
        return MethodState(crop, prob=prob, extra={"start_seconds": time.perf_counter() - t0})

    def step(
        self, state: MethodState, new: Sequence[Click], *, rng: np.random.Generator
    ) -> tuple[MethodState, StepResult]:
        assert state.prob is not None
        new_state = MethodState(state.crop, state.clicks + tuple(new), state.prob, state.extra)
        return new_state, StepResult(state.prob)


@dataclass
class RefinerMethod:
    """InterCNN or DeepIGeoS behind ``InteractiveMethod`` (see the module docstring).

    Attributes:
        refiner: [image, binary prediction, fg map, bg map] -> logits (B, 1, I, J, K).
        encoder: the fg/bg hint encoding the refiner was trained with.
        initial: DeepIGeoS's P-Net (image -> logits); None = InterCNN (the refiner on an
            empty prediction without clicks gives the initial prediction).
        name: ``intercnn`` or ``deepigeos``.
        grid: the network grid the model was trained on.
    """

    refiner: nn.Module
    encoder: HintEncoder
    initial: nn.Module | None = None
    name: str = "intercnn"
    grid: tuple[int, int, int] = (55, 55, 30)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self) -> None:
        self.refiner.eval().to(self.device)
        if self.initial is not None:
            self.initial.eval().to(self.device)

    @property
    def accepts(self) -> frozenset[InteractionKind]:
        return frozenset(self.encoder.kinds)

    @property
    def carries_mask(self) -> bool:
        """InterCNN continues from the mask so far on a new crop, DeepIGeoS starts again
        from its P-Net (:class:`mecca.interface.MaskCarrier`; chosen on val, CVPR 2025
        loop, mean final DSC of hippocampus and left atrium: InterCNN 88.9 either way,
        DeepIGeoS 46.8 carrying against 52.0; docs/cvpr25.md)."""
        return self.initial is None

    def initial_prob(self, crop: Crop) -> np.ndarray:
        """Float32 probability before any click: P-Net's, or InterCNN's first round."""
        if self.initial is not None:
            return _predict(self.initial, torch.from_numpy(crop.image)[None, None], self.device)
        empty = np.zeros(crop.grid, np.float32)
        x = refiner_input(crop.image, empty, self.encoder.empty(crop.image))
        return _predict(self.refiner, x, self.device)

    def start(self, crop: Crop, *, init_prob: np.ndarray | None = None) -> MethodState:
        t0 = time.perf_counter()
        if init_prob is None:
            prob = self.initial_prob(crop)
        else:
            prob = np.asarray(init_prob, np.float32)
            if prob.shape != crop.grid:
                raise InputError(f"init_prob {prob.shape} is not on the crop grid {crop.grid}")
        extra = {
            "hints": self.encoder.empty(crop.image),
            "start_seconds": time.perf_counter() - t0,
        }
        return MethodState(crop, prob=prob, extra=extra)

    def step(
        self, state: MethodState, new: Sequence[Click], *, rng: np.random.Generator
    ) -> tuple[MethodState, StepResult]:
        assert state.prob is not None
        if not new:
            return state, StepResult(state.prob)
        t0 = time.perf_counter()
        crop = state.crop
        hints = self.encoder.update(state.extra["hints"], crop.image, list(new))
        prob = _predict(self.refiner, refiner_input(crop.image, state.prob, hints), self.device)
        extra = {**state.extra, "hints": hints}
        new_state = MethodState(crop, state.clicks + tuple(new), prob, extra)
        return new_state, StepResult(prob, seconds=time.perf_counter() - t0)


SupervisedMethod = SegmenterMethod | RefinerMethod


def method_from_nets(
    method: str,
    nets: dict[str, nn.Module],
    grid: Sequence[int],
    device: str | torch.device = "cpu",
) -> SupervisedMethod:
    """The inference method of ``method`` around already built networks.

    ``nets`` keys: ``pnet`` / ``unet`` (segmenters), ``student`` (UA-MT, whose ``teacher``
    is not used at inference), ``intercnn``, or ``pnet`` + ``rnet`` (DeepIGeoS).
    """
    g = (int(grid[0]), int(grid[1]), int(grid[2]))
    dev = torch.device(device)
    if method in SEGMENTERS:
        net = nets["student" if method == "uamt" else method]
        return SegmenterMethod(net, name=method, grid=g, device=dev)
    if method == "intercnn":
        return RefinerMethod(nets["intercnn"], hint_encoder(method), None, method, g, dev)
    if method == "deepigeos":
        return RefinerMethod(nets["rnet"], hint_encoder(method), nets["pnet"], method, g, dev)
    raise ConfigError(f"unknown supervised method {method!r}", hint=f"one of {_ALL}")


_ALL = ", ".join(SEGMENTERS + REFINERS)
