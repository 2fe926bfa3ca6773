"""What the widget drives: a local :class:`mecca.Session` or a
:class:`mecca.client.RemoteSession`, behind one small interface that returns a
:class:`View` (plain arrays) for the widget to show. No napari or Qt here: the widget runs
these calls on a worker thread and only touches layers with the View, on Qt's thread.

The local backend imports torch (through the session) when it is made; the remote one
loads only numpy, nibabel and the standard library, so a laptop without torch can drive a
``mecca serve`` elsewhere.

Background evidence (the widget's locked values) reaches both: the local session reads the
function at each step, undo and redo; the remote backend sends its mask to the server
(``PUT /api/sessions/{id}/background``) before each action when it changed since it was
last sent.
"""

from __future__ import annotations

import hashlib
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mecca.client import RemoteSession, Server
from mecca.napari_plugin.geometry import Corners

ClickPair = tuple[str, tuple[int, ...]]
"""A click as the plugin passes it: ``(kind, (i, j, k))``."""

BackgroundFn = Callable[[], np.ndarray] | None
"""Background evidence: a function giving a bool (I, J, K) mask of voxels that are not the
object (the other labels' locked voxels), read at each step, undo and redo; or None."""


@dataclass(frozen=True)
class MethodChoice:
    """A method the picker offers and the model it runs (None: no trained model)."""

    name: str
    model: str | None

    @property
    def label(self) -> str:
        """What the widget says runs."""
        return f"model: {self.model}" if self.model else "no trained model (works on the image)"


@dataclass(frozen=True)
class View:
    """The session as the layers show it, on the image's (I, J, K) grid.

    Attributes:
        mask: uint8 mask, or None before the first step.
        prob: float32 foreground probability, or None.
        advice: int32 advice regions (1 = least confident), or None (none, or no step).
        roi: the ROI ``(start, stop)``, or None until the first step defines it; the
            user's box instead when one was given (``as_box``).
        clicks: the clicks of every step so far, then those queued, as (kind, (i, j, k)).
        steps: steps run (and not undone); can_undo / can_redo: what the buttons may do.
        seconds: the method's time for the last step, or None.
    """

    mask: np.ndarray | None
    prob: np.ndarray | None
    advice: np.ndarray | None
    roi: Corners | None
    clicks: tuple[ClickPair, ...]
    steps: int
    can_undo: bool
    can_redo: bool
    seconds: float | None


class Backend(Protocol):
    """One session, local or remote, as the widget uses it (every call may block)."""

    method: MethodChoice
    accepts: frozenset[str]

    def step(self, clicks: Sequence[ClickPair]) -> View: ...
    def undo(self) -> View: ...
    def redo(self) -> View: ...
    def reset(self) -> View: ...
    def set_roi(self, box: Corners, as_box: bool = False) -> View: ...
    def set_background(self, background: BackgroundFn) -> None: ...
    def view(self) -> View: ...


def _pair(click: Any) -> ClickPair:
    """(kind, (i, j, k)) of a Click or of a remote (kind, ijk) pair."""
    if hasattr(click, "kind"):
        return str(click.kind.value), tuple(int(v) for v in click.position)
    kind, position = click
    return str(kind), tuple(int(v) for v in position)


def grid_affine(scale: Sequence[float], translate: Sequence[float]) -> np.ndarray:
    """The voxel (i, j, k) -> world (mm) affine of a layer's ``scale`` and ``translate``
    (their last three axes), taken as the voxel size and the centre of voxel 0, no
    rotation: the grid the backends give a session, and the export's when the image layer
    keeps no affine of its own (``metadata["affine"]``, :mod:`mecca.napari_plugin.reader`)."""
    affine = np.eye(4)
    affine[:3, :3] = np.diag(np.asarray(scale, dtype=np.float64)[-3:])
    affine[:3, 3] = np.asarray(translate, dtype=np.float64)[-3:]
    return affine


def local_methods() -> list[MethodChoice]:
    """The methods ``mecca serve`` offers (the default first), each with its model."""
    from mecca.methods import registry

    return [MethodChoice(n, registry.model_for(n)) for n in registry.served()]


def remote_methods(url: str) -> list[MethodChoice]:
    """The methods a server offers, each with the model it runs there."""
    info = Server(url).info()
    return [MethodChoice(str(m["name"]), m.get("model")) for m in info["methods"]]


class _History(ABC):
    """Undo, redo and reset, the same on a local and a remote session (which both have
    ``undo``, ``redo`` and ``reset``); the subclass gives ``session`` and ``view``."""

    session: Any

    @abstractmethod
    def view(self) -> View:
        """The session's current state as layers (each backend reads its own result)."""

    def _prepare(self) -> None:
        """Before each action (the remote backend sends a changed background)."""
        return None

    def undo(self) -> View:
        """Undo the last step."""
        self._prepare()
        self.session.undo()
        return self.view()

    def redo(self) -> View:
        """Redo the last undone step."""
        self._prepare()
        self.session.redo()
        return self.view()

    def reset(self) -> View:
        """No clicks, no result (a drawn ROI stays; one derived from clicks goes)."""
        self._prepare()
        self.session.reset()
        return self.view()


class LocalBackend(_History):
    """A :class:`mecca.Session` in this process on the layer's array.

    Args:
        array: the image layer's data, (I, J, K).
        scale, translate: the layer's, taken as the voxel size and the centre of voxel 0
            (mm), so the ROI margin around the first clicks is in the right units.
        method: which registry method to run (built with its default model).
    """

    def __init__(
        self,
        array: np.ndarray,
        scale: Sequence[float],
        translate: Sequence[float],
        method: MethodChoice,
    ) -> None:
        from mecca.io import Volume
        from mecca.methods import registry
        from mecca.session import Session

        volume = Volume(np.asarray(array, dtype=np.float32), grid_affine(scale, translate))
        built = registry.build(method.name)
        self.session = Session(volume, method=built)
        self.method = method
        self.accepts = frozenset(k.value for k in built.accepts)

    def step(self, clicks: Sequence[ClickPair]) -> View:
        """Queue the clicks and run a step (a failed step leaves nothing queued)."""
        self.session.add_clicks(clicks)
        try:
            self.session.step()
        except Exception:
            self.session.clear_pending()
            raise
        return self.view()

    def set_roi(self, box: Corners, as_box: bool = False) -> View:
        """Segment inside ``box`` from now on (resets the session). ``as_box``: the box is
        drawn tight around the object (the ROI: the box plus a quarter per side): a method
        that takes boxes gets it as a box prompt and segments it at once (``Session``'s
        ``roi_as_box``, as the server does)."""
        from mecca.data.roi import Box

        self.session.set_roi(Box(*box), as_box=as_box)
        if self.session.box_prompted:
            self.session.step()
        return self.view()

    def set_background(self, background: BackgroundFn) -> None:
        """The session's background evidence (``Session.set_background``) from now on."""
        self.session.set_background(background)

    def view(self) -> View:
        """The session's state as arrays on the image grid."""
        s, result = self.session, self.session.result
        shown = s.box if s.box is not None else s.roi
        roi = None if shown is None else (shown.start, shown.stop)
        clicks = tuple(_pair(c) for step in s.history for c in step) + tuple(
            _pair(c) for c in s.pending
        )
        return View(
            mask=None if result is None else result.mask,
            prob=None if result is None else result.prob,
            advice=None if result is None else result.advice,
            roi=roi,
            clicks=clicks,
            steps=s.n_steps,
            can_undo=s.can_undo,
            can_redo=s.can_redo,
            seconds=None if result is None else result.seconds,
        )


class RemoteBackend(_History):
    """A session of a ``mecca serve`` at ``url``: the layer's array is uploaded once (as
    NIfTI with the layer's scale and translate), and the method runs there. The background
    evidence (:meth:`set_background`) is read before each action and sent to the server
    when it changed since it was last sent (compared by a hash of its packed bits), so the
    widget's locked values steer a server session as they do a local one."""

    def __init__(
        self,
        array: np.ndarray,
        scale: Sequence[float],
        translate: Sequence[float],
        method: MethodChoice,
        url: str,
    ) -> None:
        import nibabel as nib

        image = nib.Nifti1Image(np.asarray(array, dtype=np.float32), grid_affine(scale, translate))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "napari_image.nii.gz"
            nib.save(image, path)
            self.session = RemoteSession.upload(path, method=method.name, url=url)
        self.method = method
        accepts = [m for m in Server(url).info()["methods"] if m["name"] == method.name]
        self.accepts = frozenset(accepts[0]["accepts"] if accepts else ("foreground",))
        self.background: BackgroundFn = None
        self._sent: bytes | None = None
        """Digest of the background mask the server holds (None: none)."""

    def _prepare(self) -> None:
        """Send the background mask when it differs from the one the server holds."""
        mask = None if self.background is None else self.background()
        digest = None
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.any():
                packed = np.packbits(mask, axis=None)
                digest = hashlib.sha256(packed.tobytes() + repr(mask.shape).encode()).digest()
            else:
                mask = None  # nothing locked: the same as no background
        if digest != self._sent:
            self.session.set_background(mask)
            self._sent = digest

    def step(self, clicks: Sequence[ClickPair]) -> View:
        """Queue the clicks and run a step on the server."""
        self._prepare()
        if clicks:
            self.session.add_clicks(clicks)
        self.session.step()
        return self.view()

    def set_roi(self, box: Corners, as_box: bool = False) -> View:
        """Segment inside ``box`` from now on (resets the session's clicks); ``as_box``:
        a box prompt (:meth:`LocalBackend.set_roi`), segmented by the server at once."""
        self._prepare()
        self.session.set_roi(*box, as_box=as_box)
        return self.view()

    def set_background(self, background: BackgroundFn) -> None:
        """The background evidence from now on: a function giving a bool (I, J, K) mask,
        read before each action and sent to the server when it changed (an empty mask or
        None clears the server's)."""
        self.background = background

    def view(self) -> View:
        """The session's state, the arrays fetched from the server."""
        s, result = self.session, self.session.result
        shown = s.box if s.box is not None else s.roi
        roi = None if shown is None else (tuple(shown[0]), tuple(shown[1]))
        advice = None if result is None else result.advice
        clicks = tuple(_pair(c) for step in s.history for c in step) + tuple(
            _pair(c) for c in s.pending
        )
        return View(
            mask=None if result is None else result.mask,
            prob=None if result is None else result.prob,
            advice=advice,
            roi=roi,  # type: ignore[arg-type]
            clicks=clicks,
            steps=s.n_steps,
            can_undo=s.can_undo,
            can_redo=s.can_redo,
            seconds=None if result is None else result.seconds,
        )
