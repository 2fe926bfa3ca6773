"""``generalist_mecca``: MECCA refining the generalist's result (issue 28).

What it does, and nothing more:

* ``start(crop)`` runs the generalist once with the ROI as its box prompt (the crop itself
  is the box, ``roi_as_box=True``; no clicks): its probability, resampled (trilinear) from
  the generalist's grid to MECCA's, is the probability MECCA starts from instead of
  p = 0.5. A given ``init_prob`` is used instead of the generalist's.
* Every ``step`` is MECCA's: edge points only (the generalist sees no clicks), MECCA's
  confidence map, hence the session's advice regions from MECCA's confidence.

It suits an ROI drawn as a box around the object (the generalist was trained with boxes
of the object plus a margin). MECCA's model is dataset-specific (``mecca_<dataset>``, else
``mecca_phantom``): on a dataset without a MECCA model of its own the refinement may undo
the generalist's work, which the benchmark shows (``mecca benchmark --methods
generalist,generalist_mecca``; docs/user-guide.md gives the figures).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mecca.data.roi import Crop
from mecca.interaction.clicks import Click, InteractionKind
from mecca.interface import InteractiveMethod, MethodState, StepResult
from mecca.methods.agents.bundle import agent_factory
from mecca.methods.generalist.method import GeneralistMethod, generalist_factory


def resize(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Trilinear resampling of a 3D float array to ``shape`` (float32)."""
    if tuple(array.shape) == tuple(shape):
        return np.asarray(array, np.float32)
    x = torch.from_numpy(np.ascontiguousarray(array, np.float32))[None, None]
    size = (int(shape[0]), int(shape[1]), int(shape[2]))
    out = F.interpolate(x, size=size, mode="trilinear", align_corners=False)
    return out[0, 0].numpy()


@dataclass
class GeneralistMecca:
    """MECCA (``mecca``) starting from the generalist's box result (module docstring)."""

    generalist: GeneralistMethod
    mecca: Any
    name: str = "generalist_mecca"

    @property
    def grid(self) -> tuple[int, int, int]:
        """MECCA's grid: sessions crop to it."""
        return tuple(self.mecca.grid)  # type: ignore[return-value]

    @property
    def accepts(self) -> frozenset[InteractionKind]:
        """MECCA's interaction kinds (edge points)."""
        return frozenset(self.mecca.accepts)

    @property
    def gives_confidence(self) -> bool:
        return bool(getattr(self.mecca, "gives_confidence", False))

    def generalist_prob(self, crop: Crop) -> np.ndarray:
        """The generalist's box-step probability on ``crop``'s grid."""
        g = self.generalist.grid
        g_crop = Crop(resize(crop.image, g), crop.box, crop.source_shape, g)
        _, result = self.generalist.step(
            self.generalist.start(g_crop), [], rng=np.random.default_rng(0)
        )
        return np.clip(resize(result.prob, crop.grid), 0.0, 1.0)

    def start(self, crop: Crop, *, init_prob: np.ndarray | None = None) -> MethodState:
        prob = self.generalist_prob(crop) if init_prob is None else init_prob
        state: MethodState = self.mecca.start(crop, init_prob=prob)
        return state

    def step(
        self, state: MethodState, new: Sequence[Click], *, rng: np.random.Generator
    ) -> tuple[MethodState, StepResult]:
        out: tuple[MethodState, StepResult] = self.mecca.step(state, new, rng=rng)
        return out


def generalist_mecca_factory(
    model: str | None = None, device: str = "cpu", generalist: str | None = None
) -> InteractiveMethod:
    """``model``: MECCA's bundle (default ``mecca_phantom``); ``generalist``: the
    generalist's (default the shipped ``generalist``)."""
    g = generalist_factory(generalist, device=device, roi_as_box=True)
    method: InteractiveMethod = GeneralistMecca(g, agent_factory("mecca")(model, device))
    return method
