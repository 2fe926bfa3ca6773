"""Several structures in one volume: one interactive session per label, one label map out.

Each label (a name and a value >= 1) has its own :class:`~mecca.session.Session` on the
shared volume: its own ROI, method, clicks and undo/redo. A structure the first
prediction missed is inserted by adding a label and clicking it; correcting one label
never changes another's session. This is how 3D Slicer's Segment Editor and ITK-SNAP keep
several segments: each is edited on its own and the label map is built from them, so any
method of the registry (one target at a time) segments several labels.

**Overlaps**, one rule per label (:data:`OVERLAP_RULES`, 3D Slicer's "overwrite other
segments" and the "locked labels" of nnInteractive's and MONAI Label's users):

* ``overwrite`` (the default): where its mask meets another label's, the one with the
  higher probability there takes the voxel (ties: the label added first);
* ``keep``: it never takes a voxel another label holds (keep what exists);
* ``lock``: no other label takes its voxels, and every other label's session gets them as
  background evidence (:class:`~mecca.session.Session`'s ``background``: the method is
  told they are not its object, and its mask never contains them).

:meth:`LabelSession.label_map` (:func:`merge_labels`) resolves each voxel by rank (lock
over overwrite over keep), then by probability, then by order; a voxel in no mask is 0.
Undo and redo act on one label's session and are exact (the same mask bit for bit).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mecca import methods
from mecca.data.roi import Box
from mecca.errors import ConfigError, InputError
from mecca.interface import InteractiveMethod
from mecca.io import Volume, save_mask
from mecca.session.session import Session, SessionResult

MAX_LABEL = 65535
"""Label values are stored as uint16."""

OVERLAP_RULES = ("overwrite", "keep", "lock")
"""What a label does where its mask meets another's (the module docstring)."""

_RANK = {"keep": 0, "overwrite": 1, "lock": 2}


def check_overlap(rule: str) -> str:
    """``rule`` when it is one of :data:`OVERLAP_RULES`; ConfigError otherwise."""
    if rule not in OVERLAP_RULES:
        raise ConfigError(
            f"unknown overlap rule {rule!r}", hint=f"one of {', '.join(OVERLAP_RULES)}"
        )
    return rule


class LabelSession:
    """Named labels on one volume, each segmented by its own session.

    Args:
        volume: the image all labels belong to.
        method: the default method of new labels (a name or an ``InteractiveMethod``;
            default the registry's ``DEFAULT_METHOD``, the generalist).
        session_options: passed to every label's :class:`~mecca.session.Session` (grid,
            normalise, rng, roi_margin_mm, advice).
    """

    def __init__(
        self,
        volume: Volume,
        method: str | InteractiveMethod = methods.registry.DEFAULT_METHOD,
        **session_options: Any,
    ) -> None:
        self.volume = volume
        self.method = method
        self.session_options = session_options
        self._labels: dict[str, tuple[int, Session]] = {}
        self._overlap: dict[str, str] = {}

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
        overlap: str = "overwrite",
    ) -> Session:
        """Start a label and return its session.

        Args:
            name: a new, non-empty name.
            value: its value in the label map (default: one more than the largest so far).
            roi: the label's box on the original grid (None: from its first clicks).
            method: this label's method (default: the session-wide one).
            overlap: its rule where it meets another label (:data:`OVERLAP_RULES`).
        """
        check_overlap(overlap)
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
            self.volume,
            roi,
            method if method is not None else self.method,
            background=lambda: self.locked_except(name),
            **self.session_options,
        )
        self._labels[name] = (int(value), session)
        self._overlap[name] = overlap
        return session

    def remove_label(self, name: str) -> None:
        """Forget label ``name`` and its session."""
        self[name]  # a clear error for an unknown name
        del self._labels[name]
        del self._overlap[name]

    def overlap(self, name: str) -> str:
        """Label ``name``'s overlap rule."""
        self[name]
        return self._overlap[name]

    def set_overlap(self, name: str, rule: str) -> None:
        """Change label ``name``'s overlap rule; it applies to the label map at once and to
        the other labels' steps (and undo/redo) from then on."""
        self[name]
        self._overlap[name] = check_overlap(rule)

    def locked_except(self, name: str) -> np.ndarray | None:
        """The union of the current masks of the locked labels other than ``name`` (the
        background evidence of ``name``'s session), or None when there are none."""
        out = None
        for other, (_, session) in self._labels.items():
            if other == name or self._overlap[other] != "lock" or session.result is None:
                continue
            mask = session.result.mask.astype(bool)
            out = mask if out is None else out | mask
        return out

    def label_map(self) -> np.ndarray:
        """uint16 (I, J, K) map of every label's current mask (see the module docstring)."""
        shape = np.asarray(self.volume.array).shape
        pairs = [(v, s.result) for v, s in self._labels.values()]
        rules = {v: self._overlap[n] for n, (v, _) in self._labels.items()}
        return merge_labels(shape, pairs, rules)

    def export(self, path: str | Path, *, force: bool = False) -> Path:
        """Write :meth:`label_map` on the volume's own grid: a mask file
        (:func:`mecca.io.save_mask`), or for a ``.dcm`` path a DICOM SEG with one segment
        per label, named as the labels, referencing the series the volume was read from
        (:func:`mecca.dicom_seg.write_dicom_seg`).

        Raises:
            InputError: no label has a result yet, or a ``.dcm`` path for a volume not
                read from a DICOM series. OverwriteError: ``path`` exists and ``force`` is
                False.
        """
        if not any(session.result is not None for _, session in self._labels.values()):
            raise InputError("nothing to export yet", hint="add a label and run its step()")
        if str(path).lower().endswith(".dcm"):
            from mecca.dicom_seg import write_dicom_seg  # highdicom: only for a SEG

            names = {value: name for name, value in self.labels.items()}
            return write_dicom_seg(self.label_map(), self.volume, path, labels=names, force=force)
        return save_mask(self.label_map(), self.volume, path, force=force)


def merge_labels(
    shape: tuple[int, ...],
    labelled: Iterable[tuple[int, SessionResult | None]],
    overlap: Mapping[int, str] | None = None,
) -> np.ndarray:
    """uint16 label map of ``(value, result)`` pairs: each result's mask gets its value;
    a voxel in several masks goes to the label of highest rank (``overlap``: value ->
    rule, default ``overwrite``; lock over overwrite over keep), then of highest
    probability there, then the earlier pair; results that are None are skipped."""
    overlap = overlap or {}
    out = np.zeros(shape, np.uint16)
    best = np.full(shape, -np.inf, np.float32)
    for value, result in labelled:
        if result is None:
            continue
        rank = _RANK[check_overlap(overlap.get(value, "overwrite"))]
        prob = np.asarray(result.prob, np.float32)
        claim = result.mask.astype(bool) & (rank + prob > best)  # rank + p: p is in [0, 1]
        out[claim] = value
        best[claim] = rank + prob[claim]
    return out
