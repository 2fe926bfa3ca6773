"""The user-facing interactive session: clicks, undo/redo, advice regions, export.

Three small parts (docs/design.md), each usable on its own:

* :class:`InteractionStore` -- the click history, pure JSON-serialisable data: the steps
  run so far (each a tuple of clicks on the ORIGINAL grid), the clicks queued for the
  next step, and a redo stack.
* :class:`Predictor` -- one :class:`~mecca.interface.InteractiveMethod` on one
  :class:`~mecca.data.roi.Crop`: the method states (index 0 = start) and step results on
  the network grid, with undo/redo. Undo drops the last state; redo restores the very
  state and result that undo removed (kept on a redo stack), so redo is exact even for a
  method that draws random numbers.
* :class:`Session` -- joins them for one :class:`~mecca.io.Volume`: validates clicks,
  maps them to the network grid, runs the predictor and maps its output back to the
  original grid (probability, mask, confidence, advice regions), exports the mask.

Choices, written down once
--------------------------
* **Coordinates**: clicks are voxel ``(i, j, k)`` triples of the volume's array
  (:mod:`mecca.io`); :meth:`Session.add_click_world` takes RAS+ millimetres and rounds to
  the nearest voxel (``floor(x + 0.5)``).
* **ROI**: given, or set later with :meth:`Session.set_roi`; when there is none, the first
  step's clicks define it: their bounding box grown by ``roi_margin_mm`` (40 mm, converted
  per axis with the voxel spacing and rounded up, so at least one voxel) and clipped to
  the volume. A derived ROI stays until :meth:`Session.reset` (which forgets it) or
  :meth:`Session.set_roi`, and follows the user: a later click outside it grows it to
  hold every click (their box plus the margin, joined with the ROI) and the history is
  rebuilt on the new crop before the step; and, unless ``grow_roi`` says otherwise, a
  mask that reaches its border grows it (``AUTO_GROW_ROI`` times per step). Rebuilt: a
  method that carries its mask (:func:`~mecca.interface.carries_mask`, the generalist)
  starts on the grown crop from the mask so far and gets every click of the history in
  one step, once the history holds ``CARRY_FROM_STEPS`` steps; otherwise the history is
  replayed, one step each. A given ROI (:meth:`Session.set_roi`) is kept as given:
  clicks outside it are refused (the method only sees the crop, and a click outside it
  would be silently moved to the crop's edge).
* **The user's box as a prompt** (``roi_as_box``, what the page does with a drawn box):
  the ROI is the box grown by a quarter of its size per side
  (:func:`~mecca.interaction.clicks.box_prompt`; clicks may fall in that margin), for
  every method, as the CVPR 2025 protocol crops; a method that takes BOX clicks (the
  generalist) also gets the box as a box prompt, as it was trained: the first step (a
  replay's too) gets the box's two corner BOX clicks ahead of the user's. They are not
  part of the click history. The box is a prompt, not a limit: a box drawn on one slice
  cannot say how far the object runs across slices, so a click outside its ROI grows the
  ROI to hold the box and every click (their joint box plus a quarter per side), as the
  CVPR 2025 loop re-crops; the history is rebuilt there (carried from the box step on,
  for a method that takes the box and carries its mask), and :meth:`Session.reset` goes
  back to the box's own ROI.
* **Steps without new clicks are allowed**: the method refines its own output (a learned
  iterative method such as MECCA improves; a click-only method such as the random walker
  returns the same mask). The very first step needs an ROI or at least one click.
* **Refused clicks change nothing**: :meth:`Session.add_clicks` validates every click
  before queueing any, and errors are :class:`~mecca.errors.InputError` saying what to do.
* **Undo/redo** act on whole steps. Queued clicks that have not been run are not part of
  any step and stay queued (:meth:`Session.clear_pending` drops them); running a new step
  clears the redo stack. Undoing the step that carried the mask onto a grown ROI brings
  back the crop, ROI and result from before that step exactly (the session keeps, for each
  step, the predictor that holds its result); a replayed history stays on the grown ROI.
* **Advice**: when the method returns a confidence map and no advice of its own, the
  predictor computes advice regions with :func:`mecca.interaction.guide.advice_regions`
  (once per step, kept for undo/redo). The SLIC supervoxels they need depend only on the
  crop and the step number, so the predictor computes the next step's in the background
  right after a step (and the first step's when the crop is made, for a method with
  ``gives_confidence``), while the user places clicks.
* **Results live on the ROI box**: a step maps its output to the box on the original
  grid; the full-size arrays (:attr:`SessionResult.prob` etc.) are built on first access,
  as a 240 x 240 x 155 copy is most of a step's mapping cost and a viewer needs the box.
* **Background evidence** (``background``, what :class:`~mecca.session.labels.LabelSession`
  gives a label from the other labels it must not take, e.g. locked ones): voxels known
  not to be the object. The result never contains them (the probability is 0 there), and
  a method that takes background clicks gets up to ``MAX_EVIDENCE_POINTS`` of them with
  every step (points of the evidence's surface inside the crop, spread evenly; not part
  of the click history, the undo stack or the honoured-click counts).
* **Memory**: only the latest result is kept; undo/redo rebuild it from the stored
  network-grid result (resampling only, no method call).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from mecca import methods
from mecca.data.roi import Box, Crop, NormaliseConfig, make_crop, prob_to_box, resample
from mecca.episode import clicks_to_grid
from mecca.errors import ConfigError, InputError
from mecca.interaction.clicks import Click, InteractionKind, box_prompt
from mecca.interaction.guide import advice_to_box
from mecca.interaction.honour import honour_clicks, honoured_clicks
from mecca.interface import (
    InteractiveMethod,
    Proposal,
    ProposalMethod,
    StepResult,
    carries_mask,
    grid_of,
)
from mecca.io import Volume, save_mask
from mecca.session.predictor import Predictor
from mecca.session.store import InteractionStore

logger = logging.getLogger(__name__)

ROI_MARGIN_MM = 40.0
"""Default margin (mm, each side) around the first clicks when no ROI is given: the
session's guess of the object's size, grown later when the mask reaches it. Chosen on val
splits with ``benchmarks/points_only.py`` (3 foreground then 3 background points, no box;
8 targets, 3 of them unseen): against 20 mm, every method ends higher (the generalist
0.650 vs 0.619 mean Dice, GeoS 0.543 vs 0.411); 60 mm ties 40 on the generalist's mean
over the points and cuts thin and small structures (esophagus 0.27 vs 0.37)."""

AUTO_GROW_ROI = 2
"""How many times a step may grow an ROI derived from clicks when ``grow_roi`` is None:
such an ROI is a guess (the clicks plus a margin), so a mask reaching its border means
the object goes on (measured: benchmarks/slicer_clicks.py, docs/user-guide.md)."""

CARRY_FROM_STEPS = 2
"""A grown ROI carries the mask so far (rather than replaying the click history) once the
history holds this many steps, for a method that carries its mask
(:func:`mecca.interface.carries_mask`). Measured on val splits (the points user of
``benchmarks/points_only.py``; docs/defaults.md, "A grown ROI keeps the mask"): carrying
from the first step lost one click into a large organ (the first step's ROI is a guess
around one click; its mask is no start for the grown one), from the second on it ended
higher than replaying."""

MAX_EVIDENCE_POINTS = 48
"""Background-evidence points given to a method per step (see the module docstring)."""

Background = np.ndarray | Callable[[], np.ndarray | None] | None
"""Background evidence: a bool (I, J, K) mask, a function giving one (read at each step),
or None."""

ClickLike = Click | tuple[InteractionKind | str, Sequence[int] | np.ndarray]
"""A Click, or a ``(kind, (i, j, k))`` pair."""


def nearest_voxel(volume: Volume, xyz_mm: Sequence[float]) -> tuple[int, int, int]:
    """The voxel (i, j, k) nearest a RAS+ position in mm; InputError unless 3 finite numbers
    within the image's own size of it on each axis (further out, as at 1e308 mm, the voxel
    index overflows; nearer, callers say which voxel is outside)."""
    xyz = np.asarray(xyz_mm, dtype=np.float64)
    if xyz.shape != (3,) or not np.all(np.isfinite(xyz)):
        raise InputError(f"a world position must be three finite numbers (mm), got {xyz_mm!r}")
    with np.errstate(over="ignore", invalid="ignore"):
        ijk = np.floor(volume.world_to_voxel(xyz) + 0.5)
    shape = np.asarray(volume.shape[:3], dtype=np.float64)
    if not np.all(np.isfinite(ijk)) or np.any(ijk < -shape) or np.any(ijk >= 2 * shape):
        raise InputError(
            f"world position {xyz.tolist()} mm is far outside the volume",
            hint="click on the image",
        )
    i, j, k = (int(v) for v in ijk)
    return i, j, k


@dataclass(frozen=True)
class SessionResult:
    """One step's output on the original grid: computed on the ROI box, full size on demand.

    Attributes:
        prob_box: float32 (box shape) foreground probability inside the ROI, trilinearly
            resampled from the network grid.
        confidence_box: float32 (box shape) action confidence, or None when the method
            has none.
        advice_box: int32 (box shape) advice regions (0 = none, 1 = least confident), or
            None.
        seconds: the method's own time for this step (when it was computed).
        total_seconds: wall time of the session call that returned this result (for a
            step: click mapping, method, advice and mapping to the box; for undo/redo:
            only the mapping, as no method runs).
        step: steps run so far (1 = after the first step).
        box: the ROI on the original grid.
        shape: the volume's (I, J, K).
        honoured_before: share (0-1) of the foreground/background clicks so far (inside
            the box) whose voxel had their label in the method's own mask, before the
            session honoured them (:func:`mecca.interaction.honour.honour_clicks`); None
            without such clicks.
        labelled_clicks: how many foreground/background clicks that share is of.
        unhonoured: the foreground/background clicks the result could not honour (outside
            the ROI box).

    ``prob_box`` honours every click: each foreground (background) click's voxel, and its
    neighbours within 1 voxel of like intensity, have probability 1 (0), whatever the
    method gave.

    The full-size (I, J, K) arrays :attr:`prob`, :attr:`mask`, :attr:`confidence` and
    :attr:`advice` (0 outside the box) are built on first access and then kept.
    """

    prob_box: np.ndarray
    confidence_box: np.ndarray | None
    advice_box: np.ndarray | None
    seconds: float
    total_seconds: float
    step: int
    box: Box
    shape: tuple[int, int, int]
    honoured_before: float | None = None
    labelled_clicks: int = 0
    unhonoured: tuple[Click, ...] = ()

    @cached_property
    def mask_box(self) -> np.ndarray:
        """uint8 (box shape): ``prob_box > 0.5`` (SPEC's final mask)."""
        return (self.prob_box > 0.5).astype(np.uint8)

    def _full(self, part: np.ndarray, dtype: type) -> np.ndarray:
        out: np.ndarray = np.zeros(self.shape, dtype=dtype)
        out[self.box.slices] = part
        return out

    @cached_property
    def prob(self) -> np.ndarray:
        """float32 (I, J, K) probability, 0 outside the box."""
        return self._full(self.prob_box, np.float32)

    @cached_property
    def mask(self) -> np.ndarray:
        """uint8 (I, J, K) mask, ``prob > 0.5``."""
        return self._full(self.mask_box, np.uint8)

    @cached_property
    def confidence(self) -> np.ndarray | None:
        """float32 (I, J, K) confidence (0 outside the box), or None."""
        box = self.confidence_box
        return None if box is None else self._full(box, np.float32)

    @cached_property
    def advice(self) -> np.ndarray | None:
        """int32 (I, J, K) advice labels (0 outside the box), or None."""
        box = self.advice_box
        return None if box is None else self._full(box, np.int32)


def _resolve_method(method: str | InteractiveMethod) -> InteractiveMethod:
    if isinstance(method, str):
        return methods.get(method)
    if not isinstance(method, InteractiveMethod):
        raise ConfigError(
            f"{method!r} is not an interactive method",
            hint="pass a registered name (mecca.methods.available()) or an InteractiveMethod",
        )
    return method


def _as_click(item: Any) -> Click:
    if isinstance(item, Click):
        return item
    try:
        kind, position = item
    except (TypeError, ValueError):
        raise InputError(
            f"not a click: {item!r}", hint="pass a Click or a (kind, (i, j, k)) pair"
        ) from None
    return Click(kind, position)


class Session:
    """An interactive segmentation session on one volume.

    Queue clicks with :meth:`add_click` / :meth:`add_clicks` / :meth:`add_click_world`,
    run :meth:`step`, look at :attr:`result`, :meth:`undo` / :meth:`redo` /
    :meth:`reset`, and :meth:`export_mask`. See the module docstring for the choices.

    Args:
        volume: the image; its array is (I, J, K), clicks are voxel (i, j, k) indices.
        roi: the box to segment in, on the original grid; None derives it from the first
            step's clicks.
        method: a registered method name or an ``InteractiveMethod`` (default: the
            registry's ``DEFAULT_METHOD``, the generalist, as ``mecca segment``, the page
            and MONAI Label run when nothing is named).
        grid: network grid (i, j, k) the crop is resampled to; None takes the method's own
            for each ROI (:func:`mecca.interface.grid_of` with the ROI's shape: the
            generalist's follows the ROI's size), a learned model's training grid, or else
            55 x 55 x 30.
        normalise: crop intensity normalisation (default per-crop z-score).
        rng: generator or seed for the method's random choices.
        roi_margin_mm: margin around the first clicks when ``roi`` is None, mm per side.
        advice: compute advice regions when the method gives a confidence map.
        grow_roi: how many times a step may grow the ROI (0: never; None, the default:
            ``AUTO_GROW_ROI`` for an ROI derived from clicks, 0 for a given one). When the mask
            touches a side of the ROI that is not the image's edge, the ROI grows by half
            its size on each such side (clipped to the image) and the click history is
            replayed on the new crop (the grid for the grown ROI, at most the method's
            largest, so memory stays that of one crop plus the ROI box); repeated up to
            ``grow_roi`` times per step. Not for proposal methods (their accepted proposals
            are not clicks to replay).
        background: background evidence (:data:`Background`; the module docstring).
        roi_as_box: ``roi`` is the user's box around the object (the ROI is the box plus a
            quarter per side; a box prompt for a method that takes BOX clicks; the module
            docstring).
    """

    carry_from_steps: int | None = CARRY_FROM_STEPS
    """A grown ROI carries the mask so far once the click history holds this many steps
    (None: it always replays; ``benchmarks/session_carry.py`` measures both)."""

    def __init__(
        self,
        volume: Volume,
        roi: Box | None = None,
        method: str | InteractiveMethod = methods.registry.DEFAULT_METHOD,
        *,
        grid: Sequence[int] | None = None,
        normalise: NormaliseConfig | None = None,
        rng: np.random.Generator | int | None = None,
        roi_margin_mm: float = ROI_MARGIN_MM,
        advice: bool = True,
        grow_roi: int | None = None,
        background: Background = None,
        roi_as_box: bool = False,
    ) -> None:
        if np.asarray(volume.array).ndim != 3:
            raise InputError(f"the volume must be 3D (I, J, K), got shape {volume.array.shape}")
        if roi_margin_mm < 0:
            raise ConfigError(f"roi_margin_mm must be >= 0, got {roi_margin_mm}")
        self.volume = volume
        self.method = _resolve_method(method)
        self._fixed_grid = None if grid is None else tuple(int(g) for g in grid)
        self.normalise = normalise or NormaliseConfig()
        self.roi_margin_mm = float(roi_margin_mm)
        self.advice = bool(advice)
        if grow_roi is not None and grow_roi < 0:
            raise ConfigError(f"grow_roi must be >= 0, got {grow_roi}")
        self.grow_roi = None if grow_roi is None else int(grow_roi)
        self._rng = np.random.default_rng(rng)
        self._store = InteractionStore()
        self._roi: Box | None = None
        self._roi_from_clicks = False
        self._box: Box | None = None
        self._box_clicks: tuple[Click, ...] = ()
        self._predictor: Predictor | None = None
        self._frames: list[tuple[Predictor, int]] = []
        """For each step run: the predictor holding its result, and that predictor's step
        count then (undo and redo show them; a carried ROI growth leaves earlier steps on
        the predictor of the smaller ROI)."""
        self._redo_frames: list[tuple[Predictor, int]] = []
        self._result: SessionResult | None = None
        self._proposals: list[Proposal] = []
        self._background: Background = None
        self.set_background(background)
        if roi is not None:
            self.set_roi(roi, as_box=roi_as_box)

    # ---------------------------------------------------------------- read-only views

    @property
    def roi(self) -> Box | None:
        """The ROI on the original grid, or None until the first step defines it."""
        return self._roi

    @property
    def box(self) -> Box | None:
        """The user's box around the object (original grid; ``roi_as_box``), or None."""
        return self._box

    @property
    def roi_follows_clicks(self) -> bool:
        """Whether a click outside the ROI grows it rather than being refused: an ROI
        derived from the clicks, or the ROI of the user's box around the object (a prompt,
        not a limit; module docstring), for a method that is not a proposal method."""
        follows = self._roi_from_clicks or self._box is not None
        return follows and not isinstance(self.method, ProposalMethod)

    @property
    def box_prompted(self) -> bool:
        """Whether the method gets :attr:`box` as a box prompt (it takes BOX clicks)."""
        return bool(self._box_clicks)

    @property
    def store(self) -> InteractionStore:
        """The click history (read it; change it through the session's methods)."""
        return self._store

    @property
    def predictor(self) -> Predictor | None:
        """The method on the current crop, or None while there is no ROI."""
        return self._predictor

    @property
    def result(self) -> SessionResult | None:
        """The current result on the original grid, or None before the first step."""
        return self._result

    @property
    def history(self) -> tuple[tuple[Click, ...], ...]:
        """Clicks of each step run so far (original grid), oldest first."""
        return self._store.steps

    @property
    def pending(self) -> tuple[Click, ...]:
        """Clicks queued for the next step."""
        return self._store.pending

    @property
    def n_steps(self) -> int:
        """Steps run so far (and not undone)."""
        return len(self._store.steps)

    @property
    def can_undo(self) -> bool:
        """Whether :meth:`undo` has a step to undo."""
        return self._store.can_undo

    @property
    def can_redo(self) -> bool:
        """Whether :meth:`redo` has an undone step to put back."""
        return self._store.can_redo

    # ---------------------------------------------------------------- clicks

    def add_click(
        self, kind: InteractionKind | str, position_ijk: Sequence[int] | np.ndarray
    ) -> Click:
        """Queue one click at voxel (i, j, k) for the next step; returns it."""
        return self.add_clicks([(kind, position_ijk)])[0]

    def add_clicks(self, clicks: Iterable[ClickLike]) -> tuple[Click, ...]:
        """Queue several clicks; all are checked first, so a refused one queues none.

        Raises:
            InputError: a click outside the volume or the ROI, or of a kind the method
                does not take (the message names the kinds it takes).
        """
        parsed = tuple(_as_click(c) for c in clicks)
        for click in parsed:
            self._check_click(click)
        self._store.queue(parsed)
        return parsed

    def add_click_world(self, kind: InteractionKind | str, xyz_mm: Sequence[float]) -> Click:
        """Queue a click given in RAS+ millimetres, at the nearest voxel; returns it."""
        ijk = nearest_voxel(self.volume, xyz_mm)
        xyz = np.asarray(xyz_mm, dtype=np.float64)
        try:
            return self.add_click(kind, ijk)
        except InputError as exc:
            raise InputError(f"world position {xyz.tolist()} mm: {exc}") from None

    def clear_pending(self) -> None:
        """Drop the clicks queued for the next step."""
        self._store.clear_pending()

    def _check_click(self, click: Click) -> None:
        if click.kind not in self.method.accepts:
            takes = ", ".join(sorted(k.value for k in self.method.accepts))
            hint = f"this method takes: {takes}"
            if click.kind is InteractionKind.EDGE:
                hint += "; give a foreground and a background click on either side of the edge"
            raise InputError(
                f"method {self.method.name!r} cannot take {click.kind.value} clicks", hint=hint
            )
        pos = np.asarray(click.position)
        if np.any(pos < 0) or np.any(pos >= np.asarray(self.volume.shape)):
            raise InputError(
                f"click {click.position} is outside the volume of shape {self.volume.shape}",
                hint="voxel indices (i, j, k) run from 0 to shape - 1",
            )
        if self._roi is not None and not self.roi_follows_clicks and not self._roi.contains(pos)[0]:
            raise InputError(
                f"click {click.position} is outside the ROI {self._roi.start}-{self._roi.stop}",
                hint="click inside the ROI, or set_roi() a larger box (this resets the session)",
            )

    # ---------------------------------------------------------------- ROI

    def set_background(self, background: Background) -> None:
        """Set the background evidence (a mask, a function giving one, or None); it
        applies from the next step (or undo/redo) on."""
        if background is not None and not callable(background):
            background = self._checked_background(background)
        self._background = background

    def _checked_background(self, mask: np.ndarray) -> np.ndarray:
        mask = np.asarray(mask)
        if mask.shape != tuple(self.volume.shape[:3]):
            raise InputError(
                f"background evidence {mask.shape} is not on the image grid {self.volume.shape}"
            )
        return mask.astype(bool, copy=False)

    def _background_now(self) -> np.ndarray | None:
        """The background evidence as a bool mask on the image grid, or None."""
        found = self._background() if callable(self._background) else self._background
        if found is None:
            return None
        return self._checked_background(found)

    def _grid_clicks(self, crop: Crop, clicks: Sequence[Click]) -> list[Click]:
        """``clicks`` on the crop's grid, plus background-evidence points when the method
        takes background clicks (module docstring)."""
        mapped = clicks_to_grid(crop, clicks)
        background = self._background_now()
        if background is None or InteractionKind.BACKGROUND not in self.method.accepts:
            return mapped
        inside = background[crop.box.slices]
        surface = inside & ~ndimage.binary_erosion(inside)
        points = np.argwhere(surface) + np.asarray(crop.box.start)
        if not len(points):
            return mapped
        grid = np.unique(
            np.clip(np.rint(crop.to_grid(points)), 0, np.asarray(crop.grid) - 1), axis=0
        )
        chosen = grid[
            np.linspace(0, len(grid) - 1, min(MAX_EVIDENCE_POINTS, len(grid))).astype(int)
        ]
        bg = InteractionKind.BACKGROUND
        return mapped + [Click(bg, (int(i), int(j), int(k))) for i, j, k in chosen]

    def set_roi(self, box: Box, *, as_box: bool = False) -> None:
        """Use ``box`` (original grid, inside the volume) as the ROI; resets the session.

        ``as_box``: ``box`` is the user's box around the object: the ROI is the box plus a
        quarter per side, and a method that takes BOX clicks gets it as a box prompt (the
        module docstring)."""
        if not isinstance(box, Box):
            raise InputError(f"the ROI must be a Box, got {box!r}")
        if box.clip(self.volume.shape) != box:
            raise InputError(
                f"ROI {box.start}-{box.stop} exceeds the volume of shape {self.volume.shape}",
                hint="use box.clip(volume.shape)",
            )
        self._store.reset()
        self._frames, self._redo_frames = [], []
        self._result = None
        self._proposals = []
        self._box, self._box_clicks = None, ()
        if as_box:
            self._box, (box, corners) = box, box_prompt(box, self.volume.shape)
            if InteractionKind.BOX in self.method.accepts:
                self._box_clicks = corners
        self._roi = box
        self._roi_from_clicks = False
        self._predictor = self._make_predictor(box)

    @property
    def grid(self) -> tuple[int, int, int]:
        """The network grid of the current ROI (before one: the method's base grid)."""
        if self._predictor is not None:
            return self._predictor.crop.grid
        return self._grid_for(None)

    def _grid_for(self, box: Box | None) -> tuple[int, int, int]:
        if self._fixed_grid is not None:
            return self._fixed_grid  # type: ignore[return-value]
        return grid_of(self.method, None if box is None else box.shape, boxed=self.box_prompted)

    def _make_predictor(self, box: Box) -> Predictor:
        crop = make_crop(self.volume.array, box, self._grid_for(box), normalise=self.normalise)
        return Predictor(self.method, crop, guide=self.advice)

    def _roi_around(self, clicks: Sequence[Click]) -> Box:
        """The first clicks' bounding box plus ``roi_margin_mm``, clipped to the volume."""
        margin = [math.ceil(self.roi_margin_mm / s) for s in self.volume.spacing]
        points = [c.position for c in clicks]
        return Box.around_points(points, margin, self.volume.shape)

    def _box_roi(self, clicks: Sequence[Click]) -> Box:
        """The ROI of the user's box grown to hold ``clicks``: their joint box plus a
        quarter of its size per side, as the CVPR 2025 loop re-crops."""
        assert self._box is not None
        points = Box.around_points([c.position for c in clicks], 0, self.volume.shape)
        return box_prompt(self._box.union(points), self.volume.shape)[0]

    def _current_predictor(self) -> Predictor:
        """The predictor, a new one on an ROI around the queued clicks (not stored), or,
        when queued clicks leave an ROI that follows the clicks, one on the ROI grown to
        hold every click with the history rebuilt (stored: the history is unchanged)."""
        if self.roi_follows_clicks:
            assert self._roi is not None and self._predictor is not None
            points = np.asarray([c.position for c in self._store.pending], int).reshape(-1, 3)
            if not self._roi.contains(points).all():
                clicks = [*(c for step in self._store.steps for c in step), *self._store.pending]
                around = self._roi_around(clicks) if self._box is None else self._box_roi(clicks)
                grown = around.union(self._roi)
                logger.info("a click left the ROI: grown to %s-%s", grown.start, grown.stop)
                self._redo_frames.clear()  # the step about to run clears the redo stack
                self._predictor, self._roi = self._rebuild(grown, self._predictor), grown
        if self._predictor is not None:
            return self._predictor
        if not self._store.pending:
            raise InputError(
                "no ROI and no clicks: nothing to segment",
                hint="add a click on the object, or pass roi= / call set_roi()",
            )
        return self._make_predictor(self._roi_around(self._store.pending))

    # ---------------------------------------------------------------- steps

    def step(self) -> SessionResult:
        """Run the method with the queued clicks (none is allowed once there is an ROI)."""
        t0 = time.perf_counter()
        predictor = self._current_predictor()
        clicks = self._store.pending
        given = self._step_clicks(self.n_steps, clicks)
        result = predictor.step(self._grid_clicks(predictor.crop, given), rng=self._rng)
        if self._predictor is None:  # the first clicks defined the ROI
            self._predictor, self._roi = predictor, predictor.crop.box
            self._roi_from_clicks = True
            logger.info("ROI from the first clicks: %s-%s", self._roi.start, self._roi.stop)
        self._store.commit()
        self._record_frame(predictor)
        self._proposals = []  # made from the state before this step
        if not isinstance(self.method, ProposalMethod):
            for _ in range(self._grow_times()):
                grown = self._grown_roi(predictor.crop, result)
                if grown is None:
                    break
                logger.info("the mask reaches the ROI: grown to %s-%s", grown.start, grown.stop)
                predictor = self._rebuild(grown, predictor)
                self._frames[-1] = (predictor, predictor.n_steps)  # earlier steps: as they were
                assert predictor.result is not None
                result = predictor.result
                self._predictor, self._roi = predictor, grown
        self._result = self._to_original(predictor.crop, result, t0)
        logger.info(
            "step %d: %d clicks, method %.3f s, total %.3f s",
            self._result.step,
            len(clicks),
            self._result.seconds,
            self._result.total_seconds,
        )
        return self._result

    def _grow_times(self) -> int:
        """How many times this step may grow the ROI (``grow_roi``, or automatic)."""
        if self.grow_roi is not None:
            return self.grow_roi
        return AUTO_GROW_ROI if self._roi_from_clicks else 0

    def _grown_roi(self, crop: Crop, result: StepResult) -> Box | None:
        """The ROI grown by half its size on each side the mask touches (not the image's
        edge), clipped to the volume; None when the mask touches no such side."""
        mask = prob_to_box(crop, result.prob) > 0.5
        return crop.box.grown_to_hold(mask, self.volume.shape)

    def _record_frame(self, predictor: Predictor) -> None:
        """Record the step just run (committed to the store) as held by ``predictor``."""
        self._frames.append((predictor, predictor.n_steps))
        self._redo_frames.clear()

    def _rebuild(self, box: Box, source: Predictor) -> Predictor:
        """A predictor on the grown ROI ``box`` that holds the click history: carried from
        ``source``'s mask when the method carries its mask and the history holds
        :attr:`carry_from_steps` steps, else replayed (the module docstring)."""
        steps = self._store.steps
        after = 1 if self.box_prompted else self.carry_from_steps  # the box step is a start
        carry = self.carry_from_steps is not None and after is not None and len(steps) >= after
        if not carry or not carries_mask(self.method) or source.result is None:
            return self._replay(box)
        before = np.zeros(box.shape, np.float32)
        inner = tuple(
            slice(a - b, c - b)
            for a, b, c in zip(source.crop.box.start, box.start, source.crop.box.stop, strict=True)
        )
        before[inner] = prob_to_box(source.crop, source.result.prob)
        crop = make_crop(self.volume.array, box, self._grid_for(box), normalise=self.normalise)
        predictor = Predictor(
            self.method, crop, init_prob=resample(before, crop.grid), guide=self.advice
        )
        clicks = [c for index, step in enumerate(steps) for c in self._step_clicks(index, step)]
        predictor.step(self._grid_clicks(crop, clicks), rng=self._rng)
        return predictor

    def _replay(self, box: Box) -> Predictor:
        """A predictor on ``box`` that has run every step of the click history, one step
        each (it then holds every step's result)."""
        predictor = self._make_predictor(box)
        for index, clicks in enumerate(self._store.steps):
            given = self._step_clicks(index, clicks)
            predictor.step(self._grid_clicks(predictor.crop, given), rng=self._rng)
        self._frames = [(predictor, n) for n in range(1, predictor.n_steps + 1)]
        return predictor

    def _show(self, predictor: Predictor, n_steps: int) -> StepResult | None:
        """Make ``predictor`` at ``n_steps`` steps current (its ROI too); its result."""
        while predictor.n_steps > n_steps:
            predictor.undo()
        while predictor.n_steps < n_steps:
            predictor.redo()
        self._predictor, self._roi = predictor, predictor.crop.box
        return predictor.result

    def _step_clicks(self, index: int, clicks: Sequence[Click]) -> list[Click]:
        """What step ``index`` (0 = the first) gives the method: the box prompt's corners
        first in the first step, then the user's clicks."""
        return [*self._box_clicks, *clicks] if index == 0 else list(clicks)

    def propose(self, k: int | None = None) -> list[SessionResult]:
        """K proposals of a proposal method (``partial``): larger partial segmentations of
        the current one, each as the result accepting it would give (largest first).

        Raises:
            InputError: the method makes no proposals, or there is no ROI yet.
        """
        t0 = time.perf_counter()
        method = self._proposal_method()
        if self._predictor is None:
            raise InputError("no ROI yet", hint="pass roi= or call set_roi() first")
        crop = self._predictor.crop
        self._proposals = list(method.propose(self._predictor.state, self._rng, k))
        return [
            self._to_original(crop, StepResult(p.seg.astype(np.float32)), t0)
            for p in self._proposals
        ]

    def _proposal_method(self) -> ProposalMethod:
        """The method, when it makes proposals; InputError otherwise."""
        if not isinstance(self.method, ProposalMethod):
            raise InputError(f"method {self.method.name!r} makes no proposals", hint="use partial")
        return self.method

    @property
    def proposals(self) -> tuple[Proposal, ...]:
        """The proposals of the last :meth:`propose` (empty once one is accepted)."""
        return tuple(self._proposals)

    def accept(self, index: int) -> SessionResult:
        """Accept proposal ``index`` of the last :meth:`propose` as a step (undo removes it).

        An accepted proposal is a step without clicks in the click history.
        """
        if not 0 <= index < len(self._proposals) or self._predictor is None:
            raise InputError(f"no proposal {index}", hint="call propose() and pick one of them")
        return self.accept_proposal(self._proposals[index])

    def accept_proposal(self, proposal: Proposal) -> SessionResult:
        """Accept a given proposal (one saved earlier: a reloaded session replays it)."""
        t0 = time.perf_counter()
        method = self._proposal_method()
        if self._predictor is None:
            raise InputError("no ROI yet", hint="pass roi= or call set_roi() first")
        if self._store.pending:
            raise InputError("clicks are queued", hint="run step() or clear_pending() first")
        state, result = method.accept(self._predictor.state, proposal)
        self._predictor.push(state, result)
        self._store.commit()
        self._record_frame(self._predictor)
        self._proposals = []
        self._result = self._to_original(self._predictor.crop, result, t0)
        return self._result

    def undo(self) -> SessionResult | None:
        """Undo the last step; returns the result now current (None back at the start)."""
        t0 = time.perf_counter()
        if self._predictor is None or not self._store.can_undo:
            raise InputError("nothing to undo: no step has been run")
        self._store.undo()
        self._proposals = []
        undone = self._frames.pop()
        self._redo_frames.append(undone)
        result = self._show(*(self._frames[-1] if self._frames else (undone[0], 0)))
        self._result = (
            None if result is None else self._to_original(self._predictor.crop, result, t0)
        )
        return self._result

    def redo(self) -> SessionResult:
        """Redo the last undone step exactly as it was (no method call)."""
        t0 = time.perf_counter()
        if self._predictor is None or not self._store.can_redo or not self._redo_frames:
            raise InputError("nothing to redo", hint="redo is possible right after undo")
        self._store.redo()
        self._proposals = []
        frame = self._redo_frames.pop()
        self._frames.append(frame)
        result = self._show(*frame)
        assert result is not None
        self._result = self._to_original(self._predictor.crop, result, t0)
        return self._result

    def reset(self) -> None:
        """Back to no clicks and the start state; an ROI from clicks is forgotten too."""
        self._store.reset()
        self._frames, self._redo_frames = [], []
        self._result = None
        self._proposals = []
        if self._roi_from_clicks:
            self._roi, self._predictor = None, None
            self._roi_from_clicks = False
        elif self._box is not None and self._roi != box_prompt(self._box, self.volume.shape)[0]:
            self._roi = box_prompt(self._box, self.volume.shape)[0]  # clicks grew it
            self._predictor = self._make_predictor(self._roi)
        elif self._predictor is not None:
            self._predictor.reset()

    def _to_original(self, crop: Crop, result: StepResult, t0: float) -> SessionResult:
        confidence = result.confidence
        prob_box = prob_to_box(crop, result.prob)
        clicks = [c for step in self._store.steps for c in step]
        honoured, labelled = honoured_clicks(prob_box > 0.5, clicks, crop.box.start)
        image_box = np.asarray(self.volume.array[crop.box.slices])
        prob_box, unhonoured = honour_clicks(prob_box, image_box, clicks, offset=crop.box.start)
        background = self._background_now()
        if background is not None:
            prob_box = np.where(background[crop.box.slices], np.float32(0), prob_box)
        if unhonoured:
            logger.warning("%d clicks outside the ROI box are not honoured", len(unhonoured))
        return SessionResult(
            prob_box=prob_box,
            confidence_box=None if confidence is None else prob_to_box(crop, confidence),
            advice_box=None if result.advice is None else advice_to_box(crop, result.advice),
            seconds=float(result.seconds),
            total_seconds=time.perf_counter() - t0,
            step=self.n_steps,
            box=crop.box,
            shape=crop.source_shape,
            honoured_before=honoured / labelled if labelled else None,
            labelled_clicks=labelled,
            unhonoured=unhonoured,
        )

    # ---------------------------------------------------------------- export

    def export_mask(self, path: str | Path, *, force: bool = False) -> Path:
        """Write the current mask on the volume's own grid (see :func:`mecca.io.save_mask`).

        Raises:
            InputError: no step has been run yet. OverwriteError: ``path`` exists and
                ``force`` is False.
        """
        if self._result is None:
            raise InputError("nothing to export yet", hint="run step() first")
        written = save_mask(self._result.mask, self.volume, path, force=force)
        logger.info("mask written to %s", written)
        return written
