"""Several structures in one volume: one interactive session per label, one label map out.

Each label (a name and a value >= 1) has its own :class:`~mecca.session.Session` on the
shared volume: its own ROI, method, clicks and undo/redo. A structure the first
prediction missed is inserted by adding a label and clicking it; correcting one label
never changes another. :meth:`LabelSession.label_map` merges them: a voxel inside several
masks takes the label whose session gives it the highest probability (ties: the label
added first); a voxel inside none is 0. This is how 3D Slicer's Segment Editor and
ITK-SNAP keep several segments: each is edited on its own and the label map is built from
them, so any method of the registry (one target at a time) segments several labels.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mecca.data.roi import Box
from mecca.errors import ConfigError, InputError
from mecca.interface import InteractiveMethod
from mecca.io import Volume, save_mask
from mecca.session.session import Session, SessionResult

MAX_LABEL = 65535
"""Label values are stored as uint16."""


class LabelSession:
    """Named labels on one volume, each segmented by its own session.

    Args:
        volume: the image all labels belong to.
        method: the default method of new labels (a name or an ``InteractiveMethod``).
        session_options: passed to every label's :class:`~mecca.session.Session` (grid,
            normalise, rng, roi_margin_mm, advice).
    """

    def __init__(
        self, volume: Volume, method: str | InteractiveMethod = "mecca", **session_options: Any
    ) -> None:
        self.volume = volume
        self.method = method
        self.session_options = session_options
        self._labels: dict[str, tuple[int, Session]] = {}

    @property
    def labels(self) -> dict[str, int]:
        """Label names and their values, in the order they were added."""
        return {name: value for name, (value, _) in self._labels.items()}

    def __contains__(self, name: object) -> bool:
        return name in self._labels

    def __iter__(self) -> Iterator[str]:
        return iter(self._labels)

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, name: str) -> Session:
        """The session of label ``name``: add clicks to it, step, undo, redo."""
        try:
            return self._labels[name][1]
        except KeyError:
            raise InputError(
                f"no label {name!r}", hint=f"labels: {', '.join(self._labels) or '(none yet)'}"
            ) from None

    def add_label(
        self,
        name: str,
        value: int | None = None,
        *,
        roi: Box | None = None,
        method: str | InteractiveMethod | None = None,
    ) -> Session:
        """Start a label and return its session.

        Args:
            name: a new, non-empty name.
            value: its value in the label map (default: one more than the largest so far).
            roi: the label's box on the original grid (None: from its first clicks).
            method: this label's method (default: the session-wide one).
        """
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"a label needs a non-empty name, got {name!r}")
        if name in self._labels:
            raise ConfigError(f"label {name!r} exists", hint="pick another name")
        if value is None:
            value = max(self.labels.values(), default=0) + 1
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ConfigError(f"label value must be an int, got {value!r}")
        if not 1 <= int(value) <= MAX_LABEL:
            raise ConfigError(
                f"label value must be in 1..{MAX_LABEL} (0 is background), got {value}"
            )
        taken = {v: n for n, v in self.labels.items()}
        if int(value) in taken:
            raise ConfigError(f"label value {value} is taken by {taken[int(value)]!r}")
        session = Session(
            self.volume, roi, method if method is not None else self.method, **self.session_options
        )
        self._labels[name] = (int(value), session)
        return session

    def remove_label(self, name: str) -> None:
        """Forget label ``name`` and its session."""
        self[name]  # a clear error for an unknown name
        del self._labels[name]

    def label_map(self) -> np.ndarray:
        """uint16 (I, J, K) map of every label's current mask (see the module docstring)."""
        shape = np.asarray(self.volume.array).shape
        return merge_labels(shape, [(v, s.result) for v, s in self._labels.values()])

    def export(self, path: str | Path, *, force: bool = False) -> Path:
        """Write :meth:`label_map` on the volume's own grid (:func:`mecca.io.save_mask`).

        Raises:
            InputError: no label has a result yet. OverwriteError: ``path`` exists and
                ``force`` is False.
        """
        if not any(session.result is not None for _, session in self._labels.values()):
            raise InputError("nothing to export yet", hint="add a label and run its step()")
        return save_mask(self.label_map(), self.volume, path, force=force)


def merge_labels(
    shape: tuple[int, ...], labelled: Iterable[tuple[int, SessionResult | None]]
) -> np.ndarray:
    """uint16 label map of ``(value, result)`` pairs: each result's mask gets its value;
    a voxel in several masks goes to the highest probability there (ties: the earlier
    pair); results that are None (no step yet) are skipped."""
    out = np.zeros(shape, np.uint16)
    best = np.full(shape, -np.inf, np.float32)
    for value, result in labelled:
        if result is None:
            continue
        prob = np.asarray(result.prob, np.float32)
        claim = result.mask.astype(bool) & (prob > best)
        out[claim] = value
        best[claim] = prob[claim]
    return out
