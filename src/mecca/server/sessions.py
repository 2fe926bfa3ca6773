"""Server-side sessions: isolated, locked, autosaved, reloaded after a restart.

Each session lives in ``state_dir/sessions/<id>/`` under a server-generated id:

* ``image.nii.gz`` -- the volume as the server wrote it (NIfTI with qform = sform, codes
  1), the file the page displays and every voxel index refers to;
* ``session.json`` -- method, explicit ROI, the click history (steps and queued clicks,
  :class:`mecca.session.InteractionStore`), written atomically after every change;
* ``accepted/<step>.npz`` -- a proposal the user accepted at that step (the partial
  method's sampled proposals cannot be replayed from clicks, so the accepted one is kept);
* ``mask.nii.gz`` -- the current mask, written atomically after every step by one
  background writer thread (gzip of a full-size mask takes ~100 ms: off the click's path).
  ``session.json`` is written before the reply, so a crash before the mask is written
  loses nothing: the reload replays the clicks. Reading the mask waits for its write
  (:meth:`SessionStore.flush`).

A session reloaded after a restart (or after being unloaded when idle longer than the
time-to-live) replays its steps: the methods are deterministic given their clicks
(greedy policies, seeded random choices), so it comes back with the same mask. The redo
stack does not survive a reload.

Locks: one per session (its requests run one at a time) and one model lock per device,
held while a method runs, so concurrent sessions never interleave inside a network.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mecca.data.roi import Box
from mecca.errors import InputError
from mecca.io import Volume, atomic_write, load, save_mask, save_volume
from mecca.methods.base import InteractiveMethod
from mecca.session import InteractionStore, Session

log = logging.getLogger(__name__)

SESSION_ID = re.compile(r"^[0-9a-f]{24}$")
STATE_VERSION = 1


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
    lock: threading.RLock = field(default_factory=threading.RLock)
    last_used: float = field(default_factory=time.monotonic)
    mask_written: Future[None] | None = None
    """The background write of ``mask.nii.gz`` after the last change."""
    accepted: dict[int, Any] = field(default_factory=dict)
    """Accepted proposals by the step (1-based) they made; a later step with the same
    number (after undo) replaces or removes its entry."""
    proposal_results: list[Any] = field(default_factory=list)
    """The last proposals as session results (original grid), for the page's previews."""

    @property
    def image_path(self) -> Path:
        return self.folder / "image.nii.gz"

    def use_method(self, name: str, method: InteractiveMethod) -> None:
        """Switch to another method: a fresh session on the same image and ROI."""
        self.session = Session(self.session.volume, self.roi, method=method, rng=0)
        self.method = name
        self.accepted.clear()
        self.proposal_results = []

    def stepped(self) -> None:
        """After a click step: the step's number no longer holds an accepted proposal."""
        self.accepted.pop(self.session.n_steps, None)
        self.proposal_results = []

    def accept(self, index: int) -> None:
        """Accept proposal ``index`` of the last proposals and remember it for replay."""
        proposal = self.session.proposals[index] if index < len(self.session.proposals) else None
        self.session.accept(index)  # refuses a bad index with a message
        number = self.session.n_steps
        (self.folder / "accepted" / f"{number}.npz").unlink(missing_ok=True)  # an older one
        self.accepted[number] = proposal
        self.proposal_results = []

    def state(self) -> dict[str, Any]:
        """What ``session.json`` holds."""
        return {
            "version": STATE_VERSION,
            "method": self.method,
            "roi": None if self.roi is None else [list(self.roi.start), list(self.roi.stop)],
            "store": self.session.store.to_dict(),
        }


class SessionStore:
    """All sessions of one server (see the module docstring).

    Args:
        state_dir: folder of the saved sessions.
        method: builds a method from its registry name (cached by the caller).
        ttl_s: idle seconds before a session is unloaded from memory.
    """

    def __init__(
        self, state_dir: Path, method: Callable[[str], InteractiveMethod], ttl_s: float
    ) -> None:
        self.root = Path(state_dir) / "sessions"
        self.root.mkdir(parents=True, exist_ok=True)
        self._method = method
        self.ttl_s = float(ttl_s)
        self._sessions: dict[str, ServerSession] = {}
        self._lock = threading.Lock()
        self.model_lock = threading.Lock()
        """Held while a method runs (one device here: the CPU)."""
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mecca-mask")

    # ------------------------------------------------------------------ lifecycle

    def create(self, volume: Volume, method: str) -> ServerSession:
        """A new session on ``volume`` (written to the session folder first)."""
        built = self._method(method)
        sid = secrets.token_hex(12)
        folder = self.root / sid
        folder.mkdir(parents=True)
        try:
            plain = replace(volume, meta={}, path=None)  # no source header: qform = sform
            image = save_volume(plain, folder / "image.nii.gz")
            ss = ServerSession(sid, folder, Session(load(image), method=built, rng=0), method)
            self.save(ss)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
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
        if ss is None:
            ss = self._reload(sid)
        ss.last_used = time.monotonic()
        return ss

    def delete(self, sid: str) -> None:
        """Forget a session and remove its saved state."""
        ss = self.get(sid)
        self.flush(ss)
        with ss.lock, self._lock:
            self._sessions.pop(sid, None)
            shutil.rmtree(ss.folder, ignore_errors=True)
        log.info("session %s deleted", sid[:6])

    def expire(self) -> list[str]:
        """Unload sessions idle longer than the TTL (their state stays on disk)."""
        now = time.monotonic()
        with self._lock:
            old = [k for k, s in self._sessions.items() if now - s.last_used > self.ttl_s]
            for k in old:
                del self._sessions[k]
        return old

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._sessions)

    # ------------------------------------------------------------------ state

    def save(self, ss: ServerSession) -> None:
        """Write session.json now and queue the current mask's write, each atomic."""
        save_accepted(ss.folder / "accepted", ss.accepted)
        text = json.dumps(ss.state())
        atomic_write(ss.folder / "session.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
        result, volume, path = ss.session.result, ss.session.volume, ss.folder / "mask.nii.gz"

        def write() -> None:
            if result is not None:
                save_mask(result.mask, volume, path, force=True)
            else:
                path.unlink(missing_ok=True)

        ss.mask_written = self._writer.submit(write)

    def flush(self, ss: ServerSession) -> None:
        """Wait until ``mask.nii.gz`` holds the session's current mask."""
        if ss.mask_written is not None:
            ss.mask_written.result()

    def _reload(self, sid: str) -> ServerSession:
        folder = self.root / sid
        try:
            state = json.loads((folder / "session.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UnknownSession(sid) from None
        except json.JSONDecodeError:
            raise InputError("this session's saved state is damaged") from None
        if state.get("version") != STATE_VERSION:
            raise InputError("this session was saved by another MECCA version")
        method = str(state["method"])
        roi = None if state["roi"] is None else Box(*state["roi"])
        session = Session(load(folder / "image.nii.gz"), roi, method=self._method(method), rng=0)
        store = InteractionStore.from_dict(state["store"])
        accepted = load_accepted(folder / "accepted")
        with self.model_lock:
            for number, clicks in enumerate(store.steps, start=1):
                if not clicks and number in accepted:
                    session.accept_proposal(accepted[number])
                    continue
                session.add_clicks(clicks)
                session.step()
        session.add_clicks(store.pending)
        ss = ServerSession(sid, folder, session, method, roi, accepted=accepted)
        with self._lock:
            ss = self._sessions.setdefault(sid, ss)
        log.info("session %s reloaded (%d steps replayed)", sid[:6], len(store.steps))
        return ss


def save_accepted(folder: Path, accepted: dict[int, Any]) -> None:
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


def _write_proposal(path: Path, proposal: Any) -> None:
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


def load_accepted(folder: Path) -> dict[int, Any]:
    """The proposals :func:`save_accepted` wrote, by step number."""
    from mecca.methods.partial import Proposal

    out: dict[int, Any] = {}
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
