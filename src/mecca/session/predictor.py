"""One interactive method on one crop, with its states for exact undo and redo
(:class:`Predictor`): the second of the session's three parts (:mod:`mecca.session`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from mecca.data.roi import Crop
from mecca.errors import InputError, MethodError
from mecca.interaction.clicks import Click
from mecca.interaction.guide import SupervoxelCache, advice_regions, segments_for_step
from mecca.interface import InteractiveMethod, MethodState, StepResult, gives_confidence


class Predictor:
    """An interactive method on one crop, with its states for undo and redo.

    Everything here is on the crop's network grid. ``states[0]`` is the start state;
    after ``n`` steps there are ``n + 1`` states and ``n`` results.

    Args:
        method: the interactive method.
        crop: the crop it works on.
        init_prob: optional float32 (*crop.grid) initial probability for ``method.start``.
        guide: compute advice regions from a confidence map the method returns without
            advice of its own.
    """

    def __init__(
        self,
        method: InteractiveMethod,
        crop: Crop,
        *,
        init_prob: np.ndarray | None = None,
        guide: bool = True,
    ) -> None:
        self.method = method
        self.crop = crop
        self.guide = guide
        self._states: list[MethodState] = [method.start(crop, init_prob=init_prob)]
        self._results: list[StepResult] = []
        self._redo: list[tuple[MethodState, StepResult]] = []
        self.supervoxels = SupervoxelCache(crop.image) if guide else None
        if self.supervoxels is not None and gives_confidence(method):
            self.supervoxels.prefetch(segments_for_step(1))

    @property
    def n_steps(self) -> int:
        """Steps run (and not undone)."""
        return len(self._results)

    @property
    def state(self) -> MethodState:
        """The current method state."""
        return self._states[-1]

    @property
    def result(self) -> StepResult | None:
        """The last step's result, or None before the first step."""
        return self._results[-1] if self._results else None

    @property
    def can_undo(self) -> bool:
        return bool(self._results)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def step(self, clicks: Sequence[Click], *, rng: np.random.Generator) -> StepResult:
        """Run one step with ``clicks`` on the network grid; clears the redo stack."""
        state, result = self.method.step(self.state, list(clicks), rng=rng)
        if not np.all(np.isfinite(result.prob)):  # a broken result must never become a mask
            raise MethodError(
                f"method {self.method.name!r} gave a non-finite probability; the step was not kept",
                hint="try other clicks, another ROI or another method",
            )
        return self.push(state, self._with_advice(result, self.n_steps + 1))

    def push(self, state: MethodState, result: StepResult) -> StepResult:
        """Record a step computed by the caller (an accepted proposal); clears redo."""
        self._states.append(state)
        self._results.append(result)
        self._redo.clear()
        return result

    def _with_advice(self, result: StepResult, step: int) -> StepResult:
        cache = self.supervoxels
        if cache is None or result.confidence is None or result.advice is not None:
            return result
        advice = advice_regions(self.crop.image, result.confidence, step=step, cache=cache)
        cache.prefetch(segments_for_step(step + 1))  # ready before the user's next clicks
        return replace(result, advice=advice)

    def undo(self) -> StepResult | None:
        """Drop the last step (kept for redo); returns the result now current."""
        if not self._results:
            raise InputError("nothing to undo: no step has been run")
        self._redo.append((self._states.pop(), self._results.pop()))
        return self.result

    def redo(self) -> StepResult:
        """Restore the last undone step exactly; returns its result."""
        if not self._redo:
            raise InputError("nothing to redo", hint="redo is possible right after undo")
        state, result = self._redo.pop()
        self._states.append(state)
        self._results.append(result)
        return result

    def reset(self) -> None:
        """Back to the start state, no steps, empty redo stack."""
        del self._states[1:]
        self._results.clear()
        self._redo.clear()
