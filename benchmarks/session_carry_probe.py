"""Probe of a session option not built yet: when the session's ROI grows, carry the mask
so far onto the new crop (one step with every click) instead of replaying the click
history one step each. Val splits only (those of ``generalist_settings.py``), the points
user of ``points_only.py`` (3 foreground then 3 background points, no box, ROI margin
40 mm), the shipped generalist:

    python benchmarks/session_carry_probe.py [--out results.json]

Variants: ``replay`` (the session today), ``carry`` (every growth), ``carry after the
first step`` (the first step's growth replayed, later ones carried).

It subclasses :class:`mecca.Session` through private methods (``_replay``,
``_grown_roi``, ``_current_predictor``), so it measures the idea, not a product path:
the real option needs an undo that rebuilds the history it folded (docs/defaults.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import points_only  # the scripts beside this one
from generalist_settings import val_cases

from mecca.data.roi import Box, Crop, make_crop, prob_to_box, resample_box
from mecca.methods.base import StepResult
from mecca.methods.generalist import method as generalist
from mecca.session import Session
from mecca.session.predictor import Predictor


class CarrySession(Session):
    """A session whose grown ROI starts from the mask so far (the probe's option)."""

    _carry_from: tuple[Crop, np.ndarray] | None = None
    first_steps: int = 1
    """Carry only once the click history holds at least this many steps (1: always)."""

    def _grown_roi(self, crop: Crop, result: StepResult) -> Box | None:
        self._carry_from = (crop, result.prob)
        return super()._grown_roi(crop, result)

    def _current_predictor(self) -> Predictor:
        if self._predictor is not None and self._predictor.result is not None:
            self._carry_from = (self._predictor.crop, self._predictor.result.prob)
        return super()._current_predictor()

    def _replay(self, box: Box) -> Predictor:
        if self._carry_from is None or len(self._store.steps) < self.first_steps:
            return super()._replay(box)
        crop0, prob0 = self._carry_from
        full = np.zeros(self.volume.shape, np.float32)
        full[crop0.box.slices] = prob_to_box(crop0, prob0)
        crop = make_crop(self.volume.array, box, self._grid_for(box), normalise=self.normalise)
        init = resample_box(full, box, crop.grid)
        predictor = Predictor(self.method, crop, init_prob=init, guide=self.advice)
        steps = self._store.steps
        clicks = [c for i, step in enumerate(steps) for c in self._step_clicks(i, step)]
        predictor.step(self._grid_clicks(crop, clicks), rng=self._rng)
        return predictor


class CarryLaterSession(CarrySession):
    """Carries only from the second step on: the first step's growth is replayed (a
    fresh first step on the grown ROI)."""

    first_steps = 2


VARIANTS: dict[str, type[Session]] = {
    "replay": Session,
    "carry": CarrySession,
    "carry after the first step": CarryLaterSession,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--extra", type=Path, default=Path.home() / ".cache/mecca-data-extra")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    method = generalist.generalist_factory(None)
    table: dict[str, dict[str, dict[str, float]]] = {}
    for name, cases in val_cases(args.data, args.extra.expanduser()):
        for label, cls in VARIANTS.items():
            points_only.Session = cls  # type: ignore[misc]  # run_session builds this one
            dice, seconds = [], []
            for volume, gt in cases:
                run: dict[str, Any] = points_only.run_session(method, volume, gt, 40.0)
                dice.append(run["dice"])
                seconds += run["seconds"]
            d = np.array(dice)
            table.setdefault(name, {})[label] = {
                "first": 100 * float(d[:, 0].mean()),
                "final": 100 * float(d[:, -1].mean()),
                "fell_%": 100 * float(np.mean(d[:, 1:] < d[:, :-1] - 1e-6)),
                "median_s": float(np.median(seconds)),
                "max_s": float(np.max(seconds)),
            }
            print(name, label, json.dumps({k: round(v, 3) for k, v in table[name][label].items()}))
    for label in VARIANTS:
        keys = ("first", "final", "fell_%", "median_s", "max_s")
        means = {k: round(float(np.mean([t[label][k] for t in table.values()])), 3) for k in keys}
        print(label, "mean over targets", json.dumps(means))
    if args.out:
        args.out.write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main()
