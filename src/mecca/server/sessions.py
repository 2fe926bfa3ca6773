"""Server-side sessions: isolated, bounded, saved before every answer, rebuilt on reload.

Each session lives in ``state_dir/sessions/<id>/`` under a server-generated id:

* ``image.nii.gz`` -- the volume as the server wrote it (NIfTI with qform = sform, codes
  1), the file the page displays and every voxel index refers to;
* ``session.json`` -- the manifest, and the truth: method, explicit ROI, the click history
  (steps and queued clicks, :class:`mecca.session.InteractionStore`), the step count and a
  generation number; written atomically and flushed to disk (fsync) before a change is
  answered. A change whose manifest cannot be written is rolled back and answered 507;
* ``accepted/<step>.npz`` -- a proposal the user accepted at that step (the partial
  method's sampled proposals cannot be replayed from clicks, so the accepted one is kept);
* ``background-<generation>.npz`` -- the background mask a client gave
  (``PUT /api/sessions/{id}/background``; packed bits), named by the manifest
  (``background``), written atomically before it; the others are removed after it;
* ``mask.nii.gz`` -- the current mask, derived from the manifest: written after every
  change by one background writer thread (gzip of a full-size mask takes ~100 ms: off
  the click's path), rewritten before any answer when a session is reloaded, and waited
  for before it is served (:meth:`SessionStore.flush`). So a download always holds the
  mask of the saved state, also after a crash.

A session reloaded after a restart (or after being unloaded) replays its steps: the
methods are deterministic given their clicks (greedy policies, seeded random choices), so
it comes back with the same mask. The redo stack does not survive a reload.

Labels (:mod:`mecca.session.labels` on the server): sessions made as siblings of one
session (the page's labels) form a **label group** (``group``: the first session's id) on
one image. Each session has an **overlap rule** (``overwrite``, ``keep`` or ``lock``; a
saved setting, not an undo step). The union of the current masks of the other sessions of
its group whose rule is ``lock`` is its session's background evidence
(:class:`~mecca.session.Session`'s ``background``, read at every step, undo, redo and
replay): its mask never holds their voxels. A client may add a mask of its own
(:meth:`ServerSession.set_given_background`: a saved setting, not an undo step, applied
from the next step, undo or redo on): the evidence is then the union of both
(:class:`Evidence`). Those masks are read without the other
sessions' locks (a result is replaced, never changed); one not in memory is loaded here (a
replay), or, while it is being loaded already (two labels locked against each other), read
from its saved ``mask.nii.gz``. A replay uses the locked masks as they are then: a session
reloaded after a locked label changed may come back with another mask.

Nothing is destroyed unasked: a change that replaces the click history (reset, a method
switch, which reruns the clicks with the new method as one step, a new ROI) first keeps
the history as a :class:`Checkpoint` in the manifest; undo right after such a change
brings it back (replayed when it is no longer in memory). A session holding an accepted
proposal cannot keep one (the proposal is not a click to replay): the change then cannot
be undone, and the state says so (``can_undo_replace``) for the page to ask first.

Concurrency and bounds (:class:`SessionStore`):

* one lock per session (its requests run one at a time); no lock is shared between
  sessions while a method runs: methods are stateless, so one loaded network serves all;
* every step (and every reload's replay) runs on a pool of ``workers`` threads with a
  deadline: a step past it is abandoned (503) and its session, dropped from memory, comes
  back at its last saved state on the next request; a method that fails or gives NaN is
  answered 422 the same way (the step is not kept);
* at most ``max_loaded`` sessions in memory and ``max_bytes`` of their arrays (plus the
  images being opened): the least recently used idle session is unloaded to make room,
  else 503; at most ``max_sessions`` saved sessions.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import nibabel as nib
import numpy as np

from mecca.data.roi import Box
from mecca.errors import InputError, MeccaError, MethodError, SaveError, ServerBusy
from mecca.interface import InteractiveMethod, Proposal
from mecca.io import Volume, atomic_write, load, save_mask, save_volume
from mecca.server.dicom_export import checked_source
from mecca.server.memory import give_back_free_memory
from mecca.session.labels import OVERLAP_RULES
from mecca.session.session import Background, Session, SessionResult
from mecca.session.store import InteractionStore

log = logging.getLogger(__name__)

SESSION_ID = re.compile(r"^[0-9a-f]{24}$")
STATE_VERSION = 1
READ_PEAK = 2
"""Peak memory of reading a NIfTI image, in multiples of its float32 array (the
decompressed bytes beside the array: 76 MB for a 36 MB BraTS volume, measured with
tracemalloc); what opening, creating and reloading a session reserve."""
T = TypeVar("T")
MAX_CHECKPOINTS = 10
"""Changes that replaced the click history which undo can still bring back."""
MAX_LABEL = 65535
"""The largest label value (a label map's values are 1 to 65535)."""


@dataclass(eq=False)
class Checkpoint:
    """A session's history before a change that replaced it (reset, method switch, new
    ROI): undo at ``at`` steps (the count right after the change) brings it back."""

    op: str
    at: int
    method: str
    roi: Box | None
    store: dict[str, Any]
    """:meth:`InteractionStore.to_dict` of the history, without its redo stack."""
    session: Session | None = None
    """The session itself while in memory (else replayed from ``store``)."""
    accepted: dict[int, Proposal] = field(default_factory=dict)
    roi_as_box: bool = False
    """Whether ``roi`` was the user's box around the object (:attr:`ServerSession.roi_as_box`)."""

    def to_dict(self) -> dict[str, Any]:
        roi = None if self.roi is None else [list(self.roi.start), list(self.roi.stop)]
        return {
            "op": self.op,
            "at": self.at,
            "method": self.method,
            "roi": roi,
            "roi_as_box": self.roi_as_box,
            "store": self.store,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Checkpoint:
        """Inverse of :meth:`to_dict`; InputError on a malformed record."""
        try:
            roi = None if data["roi"] is None else Box(*data["roi"])
            InteractionStore.from_dict(data["store"])  # checked now, replayed on undo
            as_box = bool(data.get("roi_as_box", False))
            op, at, method = str(data["op"]), int(data["at"]), str(data["method"])
            return cls(op, at, method, roi, data["store"], roi_as_box=as_box)
        except (KeyError, TypeError, ValueError):
            raise InputError("this session's saved state is damaged (checkpoints)") from None


def replayed(
    volume: Volume,
    method: InteractiveMethod,
    roi: Box | None,
    store: InteractionStore,
    accepted: dict[int, Proposal],
    background: Background = None,
    roi_as_box: bool = False,
) -> Session:
    """A session on ``volume`` that has run the steps of ``store`` (accepted proposals
    at their step numbers) and queued its pending clicks; ``background``: its background
    evidence (the locked labels of its group), given before the steps run; ``roi_as_box``:
    ``roi`` is the user's box around the object (:class:`Session`)."""
    session = Session(
        volume, roi, method=method, rng=0, background=background, roi_as_box=roi_as_box
    )
    for number, clicks in enumerate(store.steps, start=1):
        if not clicks and number in accepted:
            session.accept_proposal(accepted[number])
            continue
        session.add_clicks(clicks)
        session.step()
    session.add_clicks(store.pending)
    return session


@dataclass(eq=False)
class Evidence:
    """A server session's background evidence (a :data:`Background` function, read at
    every step, undo, redo and replay): the union of its label group's locked masks
    (``locked``, the store's :meth:`SessionStore.locked_except`) and the mask its client
    gave (``given``, bool (I, J, K), or None)."""

    locked: Callable[[], np.ndarray | None] | None = None
    given: np.ndarray | None = None

    def __call__(self) -> np.ndarray | None:
        locked = None if self.locked is None else self.locked()
        if self.given is None:
            return locked
        return self.given if locked is None else np.asarray(locked, bool) | self.given


class UnknownSession(KeyError):
    """No session with this id (never created, deleted, or malformed id)."""


@dataclass(eq=False)
class ServerSession:
    """One user's session on the server."""

    id: str
    folder: Path
    session: Session
    method: str
    roi: Box | None = None
    """The ROI the user set explicitly (None: derived from the first clicks)."""
    roi_as_box: bool = False
    """Whether ``roi`` is the user's box around the object, which a method that takes
    boxes gets as a box prompt (the page's box tool; :class:`Session`'s ``roi_as_box``)."""
    lock: threading.RLock = field(default_factory=threading.RLock)
    last_used: float = field(default_factory=time.monotonic)
    mask_written: Future[None] | None = None
    """The background write of ``mask.nii.gz`` after the last change."""
    accepted: dict[int, Proposal] = field(default_factory=dict)
    """Accepted proposals by the step (1-based) they made; a later step with the same
    number (after undo) replaces or removes its entry."""
    proposal_results: list[SessionResult] = field(default_factory=list)
    """The last proposals as session results (original grid), for the page's previews."""
    generation: int = 0
    """Saved changes so far (in the manifest)."""
    gone: bool = False
    """Unloaded, dropped or deleted: a request holding this object fetches the session
    again (:meth:`SessionStore.run`)."""
    held_bytes: int = 0
    """Estimated memory of the session's arrays (updated at every save)."""
    name: str = "image"
    """The image's file name (shown in the page's list of sessions)."""
    source: dict[str, Any] | None = None
    """Where the image came from when it is a DICOM series under an image root (root,
    path relative to it, series UID: :mod:`mecca.server.dicom_export`); else None."""
    checkpoints: list[Checkpoint] = field(default_factory=list)
    """Histories replaced by reset, method switch or a new ROI, the latest last."""
    redo_checkpoints: list[tuple[Checkpoint, int]] = field(default_factory=list)
    """Undone replacements (in memory only) with the step count at which redo applies."""
    overlap: str = "overwrite"
    """Its overlap rule as a label (:data:`mecca.session.labels.OVERLAP_RULES`)."""
    group: str = ""
    """Its label group: the id of the session its siblings were made from ("": its own)."""
    label: int | None = None
    """Its label value as the client that made it a sibling gave it (the page's label
    number, shown again when the group is reopened), or None."""
    created: float = field(default_factory=time.time)
    """When it was made (UNIX time): the order of a group's labels."""
    background: Evidence = field(default_factory=Evidence)
    """The background evidence every :class:`Session` made for it gets (the locked masks
    of its group and the client's mask); set before its first step."""
    background_file: str | None = None
    """The saved file of the client's background mask (in the manifest), or None."""
    background_changed: bool = False
    """The client's mask changed since the last save (written by the next save)."""

    def __post_init__(self) -> None:
        self.group = self.group or self.id

    def new_session(
        self, roi: Box | None, method: InteractiveMethod, as_box: bool | None = None
    ) -> Session:
        """A fresh :class:`Session` of this server session (image, background evidence);
        ``as_box``: ``roi`` is the user's box (None: as the current ROI is)."""
        as_box = self.roi_as_box if as_box is None else as_box
        return Session(
            self.session.volume,
            roi,
            method=method,
            rng=0,
            background=self.background,
            roi_as_box=as_box and roi is not None,
        )

    @property
    def image_path(self) -> Path:
        return self.folder / "image.nii.gz"

    def use_method(self, name: str, method: InteractiveMethod) -> None:
        """Switch to another method: a fresh session on the same image and ROI (what
        MONAI Label's clients expect; the page's switch is :meth:`switch_method`)."""
        self.session = self.new_session(self.roi, method)
        self.method = name
        self.accepted.clear()
        self.proposal_results = []
        self.checkpoints.clear()
        self.redo_checkpoints.clear()

    def stepped(self) -> None:
        """After a click step: the step's number no longer holds an accepted proposal."""
        self.accepted.pop(self.session.n_steps, None)
        self.proposal_results = []
        self.redo_checkpoints.clear()

    @property
    def can_undo_replace(self) -> bool:
        """Whether a reset, method switch or new ROI could be undone (not with an
        accepted proposal in the history)."""
        return not self.accepted

    @property
    def can_undo(self) -> bool:
        return self.session.can_undo or self._checkpoint_due() is not None

    @property
    def can_redo(self) -> bool:
        return self.session.can_redo or self._redo_due() is not None

    def _checkpoint_due(self) -> Checkpoint | None:
        """The checkpoint undo brings back now (at its step count), or None."""
        top = self.checkpoints[-1] if self.checkpoints else None
        return top if top is not None and top.at == self.session.n_steps else None

    def _redo_due(self) -> Checkpoint | None:
        top = self.redo_checkpoints[-1] if self.redo_checkpoints else None
        return top[0] if top is not None and top[1] == self.session.n_steps else None

    def _here(self, op: str, at: int) -> Checkpoint:
        """The current history as a checkpoint (the session object kept in memory)."""
        store = {**self.session.store.to_dict(), "redo": []}
        return Checkpoint(
            op, at, self.method, self.roi, store, self.session, dict(self.accepted), self.roi_as_box
        )

    def replace_history(self, op: str, change: Callable[[], None]) -> None:
        """Run ``change`` (which replaces ``self.session``), keeping the history before it
        as a checkpoint when it holds clicks and can be replayed."""
        had = bool(self.session.n_steps or self.session.pending)
        before = self._here(op, 0) if had and self.can_undo_replace else None
        change()
        self.proposal_results = []
        self.redo_checkpoints.clear()
        if before is None:
            if had:
                self.checkpoints.clear()  # their step counts no longer mean anything
            return
        before.at = self.session.n_steps
        for older in self.checkpoints:
            older.session = None  # only the latest stays in memory
        self.checkpoints = [*self.checkpoints, before][-MAX_CHECKPOINTS:]

    def reset(self) -> None:
        """Back to no clicks (an explicit ROI stays); undo brings the clicks back."""
        method = self.session.method
        self.replace_history("reset", lambda: self._fresh(self.new_session(self.roi, method)))

    def set_roi(self, box: Box, as_box: bool = False) -> None:
        """A new ROI: a fresh history (undo brings the old ROI and clicks back). With
        ``as_box`` it is the user's box around the object (the ROI: the box plus a quarter
        per side): a method that takes boxes gets it as a box prompt and segments it at
        once (a step without clicks)."""
        method = self.session.method

        def change() -> None:
            session = self.new_session(box, method, as_box)
            if session.box_prompted:
                session.step()
            self._fresh(session)
            self.roi, self.roi_as_box = box, as_box

        self.replace_history("roi", change)

    def switch_method(self, name: str, method: InteractiveMethod) -> None:
        """Switch to ``method`` keeping the clicks: those it takes are rerun as one step
        (undo brings back the previous method and its steps)."""
        old = self.session
        clicks = [c for step in old.history for c in step] + list(old.pending)
        taken = [c for c in clicks if c.kind in method.accepts]
        roi = self.roi if self.roi is not None else old.roi

        def change() -> None:
            session = self.new_session(roi, method)
            if taken:
                session.add_clicks(taken)
                session.step()
            self._fresh(session)
            self.method, self.roi = name, roi

        self.replace_history("method", change)

    def remove_click(self, index: int) -> None:
        """Drop click ``index`` (of the steps' clicks in order, then the queued ones) and
        replay the other steps without it, as one undoable change (a step that held only
        that click goes)."""
        if self.accepted:
            raise InputError(
                "this session holds an accepted proposal, so single clicks cannot be removed",
                hint="undo back before the proposal, or reset",
            )
        old = self.session
        steps = [list(step) for step in old.history]
        pending = list(old.pending)
        where = [(n, m) for n, step in enumerate(steps) for m in range(len(step))]
        if not 0 <= index < len(where) + len(pending):
            raise InputError(f"there is no click {index} in this session")
        if index < len(where):
            n, m = where[index]
            del steps[n][m]
            if not steps[n]:
                del steps[n]
        else:
            del pending[index - len(where)]
        store = InteractionStore()
        for step in steps:
            store.queue(step)
            store.commit()
        store.queue(pending)
        self.replace_history(
            "remove",
            lambda: self._fresh(
                replayed(
                    old.volume, old.method, self.roi, store, {}, self.background, self.roi_as_box
                )
            ),
        )

    def _fresh(self, session: Session) -> None:
        self.session = session
        self.accepted = {}

    def undo(self, build: Callable[[str], InteractiveMethod]) -> None:
        """Undo the last step, or the last replacement of the history when it is due."""
        due = self._checkpoint_due()
        if due is None:
            self.session.undo()
            return
        here = self._here(due.op, due.at)
        session = due.session
        if session is None:  # saved before a restart, or an older checkpoint: replay it
            store = InteractionStore.from_dict(due.store)
            method = build(due.method)
            session = replayed(
                self.session.volume, method, due.roi, store, {}, self.background, due.roi_as_box
            )
        self.checkpoints.pop()
        self.session, self.method, self.roi = session, due.method, due.roi
        self.roi_as_box = due.roi_as_box
        self.accepted = dict(due.accepted)
        self.proposal_results = []
        self.redo_checkpoints.append((here, session.n_steps))

    def redo(self) -> None:
        """Redo the last undone step, or the undone replacement when it is due."""
        due = self._redo_due()
        if due is None:
            self.session.redo()
            return
        back = self._here(due.op, due.at)
        assert due.session is not None  # redo checkpoints live in memory only
        self.redo_checkpoints.pop()
        for older in self.checkpoints:
            older.session = None
        self.checkpoints.append(back)
        self.session, self.method, self.roi = due.session, due.method, due.roi
        self.roi_as_box = due.roi_as_box
        self.accepted = dict(due.accepted)
        self.proposal_results = []

    def accept(self, index: int) -> None:
        """Accept proposal ``index`` of the last proposals and remember it for replay."""
        proposals = self.session.proposals
        self.session.accept(index)  # refuses a bad index with a message
        proposal = proposals[index]
        number = self.session.n_steps
        (self.folder / "accepted" / f"{number}.npz").unlink(missing_ok=True)  # an older one
        self.accepted[number] = proposal
        self.proposal_results = []
        self.redo_checkpoints.clear()

    def state(self) -> dict[str, Any]:
        """What ``session.json`` holds (the generation aside)."""
        return {
            "version": STATE_VERSION,
            "name": self.name,
            "source": self.source,
            "method": self.method,
            "roi": None if self.roi is None else [list(self.roi.start), list(self.roi.stop)],
            "roi_as_box": self.roi_as_box,
            "store": self.session.store.to_dict(),
            "steps": self.session.n_steps,
            "checkpoints": [c.to_dict() for c in self.checkpoints],
            "overlap": self.overlap,
            "group": self.group,
            "label": self.label,
            "created": self.created,
            "background": self.background_file,
        }

    def set_given_background(self, mask: np.ndarray | None) -> None:
        """Set the client's background mask (bool, the image's (I, J, K); None: clear
        it): voxels known not to be the object, added to the group's locked masks. A saved
        setting, not an undo step: it applies from the next step, undo or redo on (the
        current mask stays as it is). A replay after a restart uses the one saved last for
        every step (the same mask when it was set before the first step)."""
        if mask is not None:
            mask = np.asarray(mask, bool)
            if mask.shape != tuple(self.session.volume.shape[:3]):
                raise InputError(
                    f"a background mask of shape {mask.shape} is not on the image grid "
                    f"{tuple(self.session.volume.shape[:3])}"
                )
        self.background.given = mask
        self.background_changed = True

    def set_overlap(self, rule: str) -> None:
        """Set the overlap rule (a saved setting, not an undo step): InputError for a rule
        that is not one of :data:`~mecca.session.labels.OVERLAP_RULES`."""
        if rule not in OVERLAP_RULES:
            rules = ", ".join(OVERLAP_RULES)
            raise InputError(f"unknown overlap rule {rule!r}: the rule must be one of {rules}")
        self.overlap = rule


def held_bytes(ss: ServerSession) -> int:
    """Estimated bytes a loaded session holds: its image, and per kept step the ROI-box
    arrays of its result (probability, confidence, advice: ~12 bytes a voxel)."""
    kept = [c.session for c in ss.checkpoints] + [c.session for c, _ in ss.redo_checkpoints]
    total = int(ss.session.volume.array.nbytes)
    if ss.background.given is not None:
        total += int(ss.background.given.nbytes)
    for session in [ss.session, *kept]:
        if session is not None and session.roi is not None:
            box = int(np.prod(np.subtract(session.roi.stop, session.roi.start)))
            total += 12 * box * (session.n_steps + 1)
    return total


def image_bytes(path: Path) -> int:
    """Bytes the float32 array of the server-written NIfTI at ``path`` will take."""
    shape = nib.load(str(path)).header.get_data_shape()  # type: ignore[attr-defined]
    return 4 * int(np.prod(shape))


class SessionStore:
    """All sessions of one server (see the module docstring).

    Args:
        state_dir: folder of the saved sessions.
        method: builds a method from its registry name (cached by the caller).
        ttl_s: idle seconds before a session is unloaded from memory.
        max_sessions: saved sessions at most.
        max_loaded: sessions in memory at most.
        max_bytes: bound on the estimated bytes of loaded sessions plus reservations.
        step_timeout_s: deadline of one step or one reload's replay.
        workers: steps run at once.
    """

    def __init__(
        self,
        state_dir: Path,
        method: Callable[[str], InteractiveMethod],
        ttl_s: float,
        *,
        max_sessions: int = 200,
        max_loaded: int = 32,
        max_bytes: int = 4 << 30,
        step_timeout_s: float = 60.0,
        workers: int = 4,
    ) -> None:
        self.root = Path(state_dir) / "sessions"
        self.root.mkdir(parents=True, exist_ok=True)
        self.scratch = Path(state_dir) / "uploads"
        """Where uploads are unpacked and read (emptied at start: a kill leaves no files)."""
        self._method = method
        self.ttl_s = float(ttl_s)
        self.max_sessions = int(max_sessions)
        self.max_loaded = int(max_loaded)
        self.max_bytes = int(max_bytes)
        self.step_timeout_s = float(step_timeout_s)
        self._sessions: dict[str, ServerSession] = {}
        self._lock = threading.Lock()
        self._reserved = 0
        self._reloading: dict[str, threading.Lock] = {}
        self._labels: dict[str, tuple[str, str]] = {}
        """Each saved session's (group, overlap rule), as its manifest says."""
        self._steps = ThreadPoolExecutor(max_workers=int(workers), thread_name_prefix="mecca-step")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mecca-mask")
        self._clean_leftovers()
        self._read_labels()

    def _read_labels(self) -> None:
        """The label group and overlap rule of every saved session (damaged manifests are
        left out: opening them says what is wrong)."""
        for folder in self.root.iterdir():
            if not SESSION_ID.match(folder.name):
                continue
            try:
                state = json.loads((folder / "session.json").read_text(encoding="utf-8"))
                self._labels[folder.name] = saved_label(folder.name, state)
            except (OSError, ValueError, TypeError, AttributeError, InputError):
                continue

    def locked_except(self, sid: str) -> np.ndarray | None:
        """The union of the current masks of the sessions of ``sid``'s label group, ``sid``
        aside, whose rule is ``lock`` (session ``sid``'s background evidence), or None."""
        with self._lock:
            group = self._labels.get(sid, (sid, ""))[0]
            locked = [
                other
                for other, (g, rule) in self._labels.items()
                if g == group and rule == "lock" and other != sid
            ]
        out = None
        for other in locked:
            mask = self._current_mask(other)
            if mask is not None:
                out = mask if out is None else out | mask
        return out

    def _current_mask(self, sid: str) -> np.ndarray | None:
        """Session ``sid``'s current mask, read without its lock (a result is replaced,
        never changed); loaded here when it is not in memory (on this thread: this may be
        a step-pool worker), its saved mask when it is being loaded already."""
        with self._lock:
            ss = self._sessions.get(sid)
            reload_lock = self._reloading.setdefault(sid, threading.Lock())
        if ss is None:
            if not reload_lock.acquire(blocking=False):  # being loaded (maybe needing ours)
                return self._saved_mask(sid)
            try:
                with self._lock:
                    ss = self._sessions.get(sid)
                if ss is None:
                    try:
                        ss = self._reload(sid, inline=True)
                    except UnknownSession:
                        return None  # deleted meanwhile
                    except InputError:  # damaged: its last mask (opening it says why)
                        return self._saved_mask(sid)
            finally:
                reload_lock.release()
        result = ss.session.result
        return None if result is None else result.mask.astype(bool)

    def _saved_mask(self, sid: str) -> np.ndarray | None:
        """Session ``sid``'s ``mask.nii.gz`` (the mask of its saved state), or None."""
        path = self.root / sid / "mask.nii.gz"
        try:
            return np.asarray(load(path).array) > 0
        except (OSError, MeccaError):
            return None

    def _background(self, sid: str, given: np.ndarray | None = None) -> Evidence:
        """Session ``sid``'s background evidence: :meth:`locked_except` and ``given``."""
        return Evidence(lambda: self.locked_except(sid), given)

    def _clean_leftovers(self) -> None:
        """Remove what a killed server left: half-deleted sessions, temporary files."""
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.scratch.mkdir(parents=True, exist_ok=True)
        for old in self.root.glob(".deleted-*"):
            shutil.rmtree(old, ignore_errors=True)
        for tmp in self.root.glob("*/.*"):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
        for tmp in self.root.glob("*/accepted/.*"):
            tmp.unlink(missing_ok=True)

    # ------------------------------------------------------------------ lifecycle

    def create(
        self,
        volume: Volume,
        method: str,
        name: str = "image",
        source: dict[str, Any] | None = None,
        group: str | None = None,
        label: int | None = None,
    ) -> ServerSession:
        """A new session on ``volume`` (written to the session folder first); ``name``:
        the image's file name, shown in the page's list of sessions; ``source``: the DICOM
        series it came from (:attr:`ServerSession.source`); ``group``: the label group it
        joins (a sibling's; None: a group of its own); ``label``: its label value as the
        client gave it (:attr:`ServerSession.label`)."""
        built = self._method(method)
        saved = sum(1 for p in self.root.iterdir() if SESSION_ID.match(p.name))
        if saved >= self.max_sessions:
            raise ServerBusy(
                f"this server holds its maximum of {self.max_sessions} sessions",
                hint="delete a session you no longer need, or try later",
            )
        sid = secrets.token_hex(12)
        folder = self.root / sid
        with self.reserve(READ_PEAK * int(volume.array.nbytes)):  # writing it, reading it back
            try:
                folder.mkdir(parents=True)
                plain = replace(volume, meta={}, path=None)  # no source header: qform = sform
                image = save_volume(plain, folder / "image.nii.gz")
                background = self._background(sid)
                session = Session(load(image), method=built, rng=0, background=background)
                ss = ServerSession(sid, folder, session, method, group=group or sid, label=label)
                ss.background = background
                ss.name = display_name(name)
                ss.source = source
                self.save(ss)
            except BaseException as exc:
                shutil.rmtree(folder, ignore_errors=True)
                if isinstance(exc, OSError):
                    raise SaveError(f"could not save the new session ({exc.strerror})") from None
                raise
            with self._lock:
                self._sessions[sid] = ss
        log.info("session %s created (%s, %d voxels)", sid[:6], method, volume.array.size)
        return ss

    def get(self, sid: str) -> ServerSession:
        """The session ``sid`` (reloaded from disk when unloaded); refreshes its TTL."""
        if not SESSION_ID.match(sid or ""):
            raise UnknownSession(sid)
        self.expire()
        with self._lock:
            ss = self._sessions.get(sid)
            reload_lock = self._reloading.setdefault(sid, threading.Lock())
        if ss is None:
            with reload_lock:  # one replay per session, however many requests wait
                with self._lock:
                    ss = self._sessions.get(sid)
                if ss is None:
                    ss = self._reload(sid)
        ss.last_used = time.monotonic()
        return ss

    def run(
        self,
        sid: str,
        action: Callable[[ServerSession], Any],
        then: Callable[[ServerSession], T],
        *,
        save: bool = True,
    ) -> T:
        """Run ``action(session)`` on the step pool within the deadline, save, and return
        ``then(session)``, all under the session's lock (see the module docstring).

        Raises:
            ServerBusy: the deadline passed (the session goes back to its saved state).
            MethodError: the method failed; the step was not kept.
            SaveError: the change could not be saved; it was rolled back.
        """
        while True:
            ss = self.get(sid)
            with ss.lock:
                if ss.gone:
                    continue  # unloaded or dropped while this request waited: fetch again
                before = json.dumps(ss.state())
                future = self._steps.submit(action, ss)
                try:
                    future.result(timeout=self.step_timeout_s)
                except FutureTimeout:
                    if not future.cancel():  # running: it finishes on a dropped copy
                        self._drop(ss)
                    raise ServerBusy(
                        f"the step took longer than {self.step_timeout_s:g} s and was stopped; "
                        "the session is back at its last saved state",
                        hint="try a smaller ROI or another method",
                    ) from None
                except InputError:
                    if json.dumps(ss.state()) != before:
                        self._drop(ss)
                    raise
                except Exception as exc:
                    self._drop(ss)
                    if isinstance(exc, MeccaError):
                        raise
                    log.warning("session %s: method failed (%s)", sid[:6], type(exc).__name__)
                    raise MethodError(
                        f"the method failed on this input ({type(exc).__name__}); "
                        "the step was not kept",
                        hint="try other clicks, another ROI or another method",
                    ) from None
                if save:
                    self.save(ss)
                give_back_free_memory()  # the step's freed heap (memory.py)
                return then(ss)

    def delete(self, sid: str) -> None:
        """Remove a session and everything saved of it, or raise and change nothing."""
        if not SESSION_ID.match(sid or ""):
            raise UnknownSession(sid)
        with self._lock:
            ss = self._sessions.get(sid)
            reload_lock = self._reloading.setdefault(sid, threading.Lock())
        with reload_lock, ss.lock if ss is not None else nullcontext():
            folder, trash = self.root / sid, self.root / f".deleted-{sid}"
            if ss is not None and ss.mask_written is not None:
                ss.mask_written.exception()  # wait for the writer; its error does not matter
            try:
                os.rename(folder, trash)  # one step: the session is there or it is gone
            except FileNotFoundError:
                raise UnknownSession(sid) from None
            except OSError as exc:
                raise SaveError(
                    f"could not delete this session ({exc.strerror}); it is unchanged",
                    hint="check that the server's state folder is writable",
                ) from None
            with self._lock:
                if ss is not None:
                    ss.gone = True
                self._sessions.pop(sid, None)
                self._reloading.pop(sid, None)
                self._labels.pop(sid, None)
        shutil.rmtree(trash, ignore_errors=True)
        give_back_free_memory()
        if trash.exists():
            raise SaveError(
                "the session is closed but some of its files could not be removed",
                hint="they are removed when the server starts next",
            )
        log.info("session %s deleted", sid[:6])

    def expire(self) -> list[str]:
        """Unload sessions idle longer than the TTL (their state stays on disk)."""
        now = time.monotonic()
        with self._lock:
            old = [k for k, s in self._sessions.items() if now - s.last_used > self.ttl_s]
        return [k for k in old if self._unload(k)]

    def listing(self) -> list[dict[str, Any]]:
        """Every saved session, the last changed first: id, image name, method, steps, the
        time of its last change (UTC, ISO 8601), its label ``group``, ``overlap`` rule,
        ``label`` value (None: not given) and when it was made (``created``, UTC, ISO 8601
        to the microsecond: the order of a group's labels), read from the manifests."""
        rows: list[tuple[float, dict[str, Any]]] = []
        for folder in self.root.iterdir():
            manifest = folder / "session.json"
            if not SESSION_ID.match(folder.name):
                continue
            try:
                changed = manifest.stat().st_mtime
                state = json.loads(manifest.read_text(encoding="utf-8"))
                group, overlap = saved_label(folder.name, state)
                created = saved_created(folder, state)
                row = {
                    "id": folder.name,
                    "name": display_name(str(state.get("name", "image"))),
                    "method": str(state["method"])[:64],
                    "steps": int(state["steps"]),
                    "changed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(changed)),
                    "group": group,
                    "overlap": overlap,
                    "label": saved_label_value(state),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
                    + f".{int(created % 1 * 1e6):06d}Z",
                }
            except (OSError, ValueError, KeyError, TypeError, AttributeError, InputError):
                continue  # deleted meanwhile, or damaged: opening it says which
            rows.append((changed, row))
        rows.sort(key=lambda r: -r[0])
        return [row for _, row in rows]

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._sessions)

    def held(self) -> int:
        """Estimated bytes of the loaded sessions plus open reservations."""
        with self._lock:
            return self._reserved + sum(s.held_bytes for s in self._sessions.values())

    # ------------------------------------------------------------------ memory

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        """Hold ``nbytes`` of the memory bound while an image is read or a session built,
        unloading least recently used idle sessions to make room.

        Raises:
            ServerBusy: no room even with every idle session unloaded.
        """
        nbytes = int(nbytes)
        while True:
            with self._lock:
                sessions = list(self._sessions.values())
                held = self._reserved + sum(s.held_bytes for s in sessions)
                if len(sessions) < self.max_loaded and held + nbytes <= self.max_bytes:
                    self._reserved += nbytes
                    break
            oldest_first = sorted(sessions, key=lambda s: s.last_used)
            if not any(self._unload(s.id) for s in oldest_first):
                raise ServerBusy(
                    "the server is full: no memory left for another image right now",
                    hint="close a session or try again in a minute",
                )
        try:
            yield
        finally:
            with self._lock:
                self._reserved -= nbytes

    def _unload(self, sid: str) -> bool:
        """Take an idle session out of memory (its saved state stays); False when busy."""
        with self._lock:
            ss = self._sessions.get(sid)
        if ss is None or not ss.lock.acquire(blocking=False):
            return False
        try:
            with self._lock:
                if self._sessions.get(sid) is not ss:
                    return False
                del self._sessions[sid]
                ss.gone = True
        finally:
            ss.lock.release()
        log.info("session %s unloaded", sid[:6])
        give_back_free_memory()
        return True

    def _drop(self, ss: ServerSession) -> None:
        """Forget the in-memory copy of a session whose state may differ from its saved
        one; the next request reloads the saved state."""
        with self._lock:
            ss.gone = True
            if self._sessions.get(ss.id) is ss:
                del self._sessions[ss.id]
        give_back_free_memory()

    # ------------------------------------------------------------------ state

    def save(self, ss: ServerSession) -> None:
        """Write the manifest (atomic, fsync) and queue the mask's write; on failure roll
        the session back to its saved state (drop it) and raise :class:`SaveError`."""
        generation = ss.generation + 1
        state = {**ss.state(), "generation": generation}
        changed = ss.background_changed
        if changed:
            given = ss.background.given
            state["background"] = None if given is None else f"background-{generation}.npz"
        try:
            if changed and state["background"] is not None:
                save_background(ss.folder / state["background"], ss.background.given)
            save_accepted(ss.folder / "accepted", ss.accepted)
            text = json.dumps(state)
            atomic_write(
                ss.folder / "session.json", lambda tmp: tmp.write_text(text, encoding="utf-8")
            )
        except OSError as exc:
            self._drop(ss)
            raise SaveError(
                f"could not save this change ({exc.strerror}); it was not kept",
                hint="the server's disk is full or read-only",
            ) from None
        ss.generation = generation
        if changed:
            ss.background_file, ss.background_changed = state["background"], False
            for old in ss.folder.glob("background-*.npz"):
                if old.name != ss.background_file:
                    old.unlink(missing_ok=True)
        with self._lock:
            self._labels[ss.id] = (ss.group, ss.overlap)
        ss.held_bytes = held_bytes(ss)
        ss.mask_written = self._writer.submit(self._write_mask, ss, ss.session.result)

    @staticmethod
    def _write_mask(ss: ServerSession, result: Any) -> None:
        """Write (or remove) ``mask.nii.gz`` for ``result``; never recreates a folder."""
        path = ss.folder / "mask.nii.gz"
        if ss.gone and not ss.folder.is_dir():
            return
        if result is not None:
            save_mask(result.mask, ss.session.volume, path, force=True)
        else:
            path.unlink(missing_ok=True)

    def flush(self, ss: ServerSession) -> None:
        """Wait until ``mask.nii.gz`` holds the session's current mask; a write that
        failed is done again now.

        Raises:
            SaveError: the mask cannot be written.
        """
        if ss.mask_written is not None and ss.mask_written.exception() is None:
            return
        try:
            self._write_mask(ss, ss.session.result)
        except OSError as exc:
            raise SaveError(
                f"could not write the mask ({exc.strerror})",
                hint="the server's disk is full or read-only",
            ) from None
        done: Future[None] = Future()
        done.set_result(None)
        ss.mask_written = done

    def _reload(self, sid: str, *, inline: bool = False) -> ServerSession:
        """Session ``sid`` from its manifest, replayed on the step pool (``inline``: on
        this thread, for a caller that may be a step-pool worker itself)."""
        folder = self.root / sid
        try:
            state = json.loads((folder / "session.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UnknownSession(sid) from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError("this session's saved state is damaged") from None
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise InputError("this session was saved by another MECCA version")
        with self.reserve(READ_PEAK * image_bytes(folder / "image.nii.gz")):
            if inline:
                ss = self._replay(sid, folder, state)
            else:
                future = self._steps.submit(self._replay, sid, folder, state)
                try:
                    ss = future.result(timeout=self.step_timeout_s)
                except FutureTimeout:
                    future.cancel()
                    raise ServerBusy(
                        f"reloading this session took longer than {self.step_timeout_s:g} s",
                        hint="try again later",
                    ) from None
            ss.held_bytes = held_bytes(ss)
            with self._lock:
                ss = self._sessions.setdefault(sid, ss)
        log.info("session %s reloaded (%d steps replayed)", sid[:6], ss.session.n_steps)
        return ss

    def _replay(self, sid: str, folder: Path, state: dict[str, Any]) -> ServerSession:
        """The session of a manifest, its steps replayed and its mask written."""
        method = str(state["method"])
        roi = None if state["roi"] is None else Box(*state["roi"])
        store = InteractionStore.from_dict(state["store"])
        if state.get("steps", len(store.steps)) != len(store.steps):
            raise InputError("this session's saved state is damaged (step count)")
        checkpoints = [Checkpoint.from_dict(c) for c in state.get("checkpoints", [])]
        accepted = load_accepted(folder / "accepted")
        group, overlap = saved_label(sid, state)
        with self._lock:
            self._labels[sid] = (group, overlap)
        volume = load(folder / "image.nii.gz")
        background_file = saved_background_file(state)
        given = None
        if background_file is not None:
            given = load_background(folder / background_file, volume.shape[:3])
        background = self._background(sid, given)
        as_box = bool(state.get("roi_as_box", False))
        session = replayed(volume, self._method(method), roi, store, accepted, background, as_box)
        ss = ServerSession(sid, folder, session, method, roi, as_box, accepted=accepted)
        ss.group, ss.overlap, ss.background = group, overlap, background
        ss.label, ss.created = saved_label_value(state), saved_created(folder, state)
        ss.background_file = background_file
        ss.name = display_name(str(state.get("name", "image")))
        ss.source = checked_source(state.get("source"))
        ss.checkpoints = checkpoints[-MAX_CHECKPOINTS:]
        ss.generation = int(state.get("generation", 0))
        self._write_mask(ss, session.result)  # the mask on disk matches the manifest now
        return ss


def saved_label(sid: str, state: dict[str, Any]) -> tuple[str, str]:
    """The (label group, overlap rule) of a manifest; a manifest written before labels had
    them: its own group, ``overwrite``. InputError when they are damaged."""
    group = state.get("group", sid)
    overlap = state.get("overlap", "overwrite")
    if not isinstance(group, str) or not SESSION_ID.match(group) or overlap not in OVERLAP_RULES:
        raise InputError("this session's saved state is damaged (label group or overlap rule)")
    return group, overlap


def saved_label_value(state: dict[str, Any]) -> int | None:
    """The label value a manifest holds (None: none given, or written before labels had
    values); InputError when it is damaged."""
    value = state.get("label")
    if value is not None and (type(value) is not int or not 1 <= value <= MAX_LABEL):
        raise InputError("this session's saved state is damaged (label value)")
    return value


def saved_created(folder: Path, state: dict[str, Any]) -> float:
    """When a session was made (UNIX time): its manifest's ``created``, or for a manifest
    written before it had one, when its image was written (once, at creation)."""
    created = state.get("created")
    if isinstance(created, (int, float)) and not isinstance(created, bool):
        return float(created)
    return (folder / "image.nii.gz").stat().st_mtime


BACKGROUND_FILE = re.compile(r"^background-[0-9]{1,18}\.npz$")


def saved_background_file(state: dict[str, Any]) -> str | None:
    """The client's background file a manifest names (None: none); InputError when the
    name is not one :meth:`SessionStore.save` writes."""
    name = state.get("background")
    if name is not None and (not isinstance(name, str) or not BACKGROUND_FILE.match(name)):
        raise InputError("this session's saved state is damaged (background)")
    return name


def save_background(path: Path, mask: np.ndarray | None) -> None:
    """The client's background mask as packed bits and its shape (atomic)."""
    assert mask is not None

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            np.savez_compressed(
                f,
                mask=np.packbits(np.asarray(mask, bool)),
                shape=np.asarray(mask.shape, np.int64),
            )

    atomic_write(path, write)


def load_background(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """The mask :func:`save_background` wrote, checked against the image's ``shape``;
    InputError when it is missing or damaged."""
    try:
        with np.load(path) as f:
            saved = tuple(int(v) for v in f["shape"])
            bits = f["mask"]
        size = int(np.prod(shape))
        if saved != tuple(shape) or bits.size * 8 < size:
            raise ValueError("shape")
        return np.unpackbits(bits)[:size].reshape(shape).astype(bool)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        raise InputError("this session's saved state is damaged (background mask)") from None


def display_name(name: str) -> str:
    """An image's file name as shown: no folder, no control characters, 200 at most."""
    name = "".join(c for c in Path(name.replace("\\", "/")).name if c.isprintable())
    return name[:200] or "image"


def save_accepted(folder: Path, accepted: dict[int, Proposal]) -> None:
    """``folder/<step>.npz`` for each accepted proposal (atomic); other files removed."""
    wanted = {f"{n}.npz" for n in accepted}
    if folder.is_dir():
        for old in folder.glob("*.npz"):
            if old.name not in wanted:
                old.unlink(missing_ok=True)
    for number, proposal in accepted.items():
        path = folder / f"{number}.npz"
        if not path.exists():
            folder.mkdir(exist_ok=True)
            _write_proposal(path, proposal)


def _write_proposal(path: Path, proposal: Proposal) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            np.savez_compressed(
                f,
                mask=np.packbits(np.asarray(proposal.mask, bool)),
                seg=np.packbits(np.asarray(proposal.seg, bool)),
                shape=np.asarray(np.shape(proposal.mask), np.int64),
                added=np.asarray([proposal.added_foreground, proposal.added_background]),
            )

    atomic_write(path, write)


def load_accepted(folder: Path) -> dict[int, Proposal]:
    """The proposals :func:`save_accepted` wrote, by step number."""
    out: dict[int, Proposal] = {}
    for path in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
        if not path.stem.isdigit():
            continue
        with np.load(path) as f:
            shape = tuple(int(v) for v in f["shape"])
            size = int(np.prod(shape))
            mask = np.unpackbits(f["mask"])[:size].reshape(shape).astype(bool)
            seg = np.unpackbits(f["seg"])[:size].reshape(shape).astype(bool)
            fg, bg = (int(v) for v in f["added"])
        out[int(path.stem)] = Proposal(mask, seg, fg, bg)
    return out
