"""The one interface every interactive method implements (see docs/design.md).

A method is stateless: everything it needs between steps lives in a ``MethodState`` that
the caller keeps, so one loaded network can serve many sessions, undo is "keep the old
state", and the benchmark, the session and the server all drive the same two calls.
All arrays here live on the crop's network grid, indexed (i, j, k).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mecca.data.roi import Crop
from mecca.interaction.clicks import Click, InteractionKind


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

    Optional: a method whose steps return confidence maps may say so with a true
    ``gives_confidence`` attribute; the session then prepares advice-region supervoxels
    before the first step (:class:`mecca.interaction.guide.SupervoxelCache`).
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


def takes_only_edge_points(accepts: frozenset[InteractionKind]) -> bool:
    """True for methods built for MECCA's edge-point user (they take EDGE, not FOREGROUND):
    the demo and the Slicer server then turn a user's points into edge points."""
    return InteractionKind.EDGE in accepts and InteractionKind.FOREGROUND not in accepts
