"""The one interface every interactive method implements (see docs/design.md); its public
path is :mod:`mecca.methods.base`.

It lives outside the ``mecca.methods`` package on purpose: importing any module of that
package runs the package's ``__init__``, which registers every method family, and the
modules those families build on (:mod:`mecca.episode`) need the interface themselves.

A method is stateless: everything it needs between steps lives in a ``MethodState`` that
the caller keeps, so one loaded network can serve many sessions, undo is "keep the old
state", and the benchmark, the session and the server all drive the same two calls.
All arrays here live on the crop's network grid, indexed (i, j, k).

Optional capabilities are typed here too, so that callers ask ``isinstance(method,
ProposalMethod)`` (or :func:`grid_of`, :func:`gives_confidence`) instead of probing
attributes: a method with a grid of its own (:class:`GridMethod`), one whose steps return
confidence maps (:class:`ConfidenceMethod`), one that proposes partial segmentations
(:class:`ProposalMethod`) and an initial segmenter (:class:`Segmenter`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mecca.data.roi import DEFAULT_GRID, Crop
from mecca.interaction.clicks import Click, InteractionKind

FG_BG = frozenset({InteractionKind.FOREGROUND, InteractionKind.BACKGROUND})
"""What a method taking foreground and background clicks accepts."""


@dataclass(frozen=True)
class StepResult:
    """What one refinement step returns, on the network grid.

    Attributes:
        prob: float32 (I, J, K) foreground probability in [0, 1].
        confidence: float32 (I, J, K) per-voxel action confidence (MECCA), else None.
        advice: int32 (I, J, K) advice-region labels, 0 = none, else None.
        seconds: wall time of the method's own computation in this step.
    """

    prob: np.ndarray
    confidence: np.ndarray | None = None
    advice: np.ndarray | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class MethodState:
    """Everything a method carries between steps: the clicks so far and its last output.

    ``extra`` holds method-specific data (hint maps, adapted weights); methods never
    mutate a state in place, they return a new one, so earlier states stay valid for undo.
    """

    crop: Crop
    clicks: tuple[Click, ...] = ()
    prob: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class InteractiveMethod(Protocol):
    """An interactive segmentation method: ``start`` once per crop, ``step`` per round.

    The optional capabilities below (:class:`GridMethod`, :class:`ConfidenceMethod`,
    :class:`ProposalMethod`, :class:`Segmenter`) are separate protocols: a method has them
    by having their members.
    """

    name: str

    @property
    def accepts(self) -> frozenset[InteractionKind]:
        """The interaction kinds ``step`` takes; callers convert or refuse the others."""
        ...

    def start(self, crop: Crop, *, init_prob: np.ndarray | None = None) -> MethodState:
        """Begin on a crop; ``init_prob`` is an initial probability on the network grid."""
        ...

    def step(
        self, state: MethodState, new: Sequence[Click], *, rng: np.random.Generator
    ) -> tuple[MethodState, StepResult]:
        """Refine with the clicks ``new`` (on the network grid) added to the history."""
        ...


@runtime_checkable
class GridMethod(Protocol):
    """A method with a network grid of its own (a learned model's training grid)."""

    grid: tuple[int, int, int]


@runtime_checkable
class RoiGridMethod(Protocol):
    """A method whose network grid follows the ROI's size (the generalist): a large ROI
    gets a finer grid than its base ``grid``, so that it is not downsampled
    as much (:func:`grid_of` with ``roi_shape``)."""

    def grid_for(self, roi_shape: Sequence[int], *, boxed: bool = False) -> tuple[int, int, int]:
        """The grid to crop a ROI of ``roi_shape`` voxels (i, j, k) to; ``boxed``: the ROI
        is a box prompt's (the box plus its margin), which may run on another grid."""
        ...


@runtime_checkable
class ConfidenceMethod(Protocol):
    """A method that may return per-voxel confidence maps (MECCA): when true, the session
    prepares advice-region supervoxels before the first step
    (:class:`mecca.interaction.guide.SupervoxelCache`)."""

    @property
    def gives_confidence(self) -> bool: ...


@runtime_checkable
class MaskCarrier(Protocol):
    """A method that, started again on a new crop, continues from the mask so far
    (``start(crop, init_prob=...)``) better than from nothing: the CVPR 2025 loop then
    hands it that mask on a re-crop (:data:`mecca.bench.cvpr25.RECROPS`). Chosen per
    method on val (docs/cvpr25.md)."""

    carries_mask: bool


@dataclass(frozen=True, eq=False)
class Proposal:
    """A larger partial segmentation offered to the user (bool arrays on the network grid).

    Attributes:
        mask: the decided voxels (they contain those decided before).
        seg: the decided foreground (inside ``mask``).
        added_foreground: voxels newly decided as foreground.
        added_background: voxels newly decided as background.
    """

    mask: np.ndarray
    seg: np.ndarray
    added_foreground: int
    added_background: int

    @property
    def added(self) -> int:
        """All newly decided voxels."""
        return self.added_foreground + self.added_background


@runtime_checkable
class ProposalMethod(InteractiveMethod, Protocol):
    """A method that proposes larger partial segmentations to choose from (``partial``):
    the user accepts one (one interaction, a step without clicks), then corrects it."""

    def propose(
        self, state: MethodState, rng: np.random.Generator, k: int | None = None
    ) -> list[Proposal]:
        """``k`` proposals from the current state (the method's default number if None)."""
        ...

    def accept(self, state: MethodState, proposal: Proposal) -> tuple[MethodState, StepResult]:
        """Make ``proposal`` the current partial segmentation."""
        ...


@runtime_checkable
class Segmenter(Protocol):
    """An initial segmenter: a probability map before any click, on its own grid (the
    IteR-MRL protocol's start and the agents' update mode)."""

    grid: tuple[int, int, int]

    def initial_prob(self, crop: Crop) -> np.ndarray:
        """Float32 foreground probability on the crop's grid."""
        ...


def grid_of(
    method: InteractiveMethod, roi_shape: Sequence[int] | None = None, *, boxed: bool = False
) -> tuple[int, int, int]:
    """The grid a method's crops are resampled to: the one for ``roi_shape`` (``boxed``: a
    box prompt's ROI) when the method's grid follows the ROI (:class:`RoiGridMethod`),
    else its own, else the default 55 x 55 x 30."""
    if roi_shape is not None and isinstance(method, RoiGridMethod):
        return method.grid_for(roi_shape, boxed=boxed)
    if isinstance(method, GridMethod):
        g = method.grid
        return (int(g[0]), int(g[1]), int(g[2]))
    return DEFAULT_GRID


def gives_confidence(method: InteractiveMethod) -> bool:
    """Whether the method's steps return confidence maps (see :class:`ConfidenceMethod`)."""
    return isinstance(method, ConfidenceMethod) and bool(method.gives_confidence)


def carries_mask(method: InteractiveMethod) -> bool:
    """Whether the method continues from the mask so far on a new crop (:class:`MaskCarrier`)."""
    return isinstance(method, MaskCarrier) and bool(method.carries_mask)


def takes_only_edge_points(accepts: frozenset[InteractionKind]) -> bool:
    """True for methods built for MECCA's edge-point user (they take EDGE, not FOREGROUND):
    the demo and the Slicer server then turn a user's points into edge points."""
    return InteractionKind.EDGE in accepts and InteractionKind.FOREGROUND not in accepts
