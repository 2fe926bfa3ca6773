"""A client of ``mecca serve`` with the interface of :class:`mecca.Session`, without torch.

:class:`RemoteSession` drives one server-side session over the JSON/HTTP API
(docs/server.md): queue clicks at voxel ``(i, j, k)``, run steps, undo, redo, reset, read
the mask and probability as numpy arrays on the image's grid, export the mask. The method
runs on the server; this module needs only the standard library (``urllib``) and numpy,
and nibabel to decode the NIfTI results (imported when a result is first read), so a
machine without torch (a laptop beside a GPU server, a napari plugin) can use it.

Choices, written down once:

* **Coordinates**: clicks are voxel ``(i, j, k)`` of the session's image, as in
  :class:`mecca.Session`. The API takes RAS millimetres, so each click is sent as the
  voxel centre's position under the image's affine (from the server's state); the server
  rounds back to the nearest voxel, the same one.
* **Headers**: every request sends ``X-Mecca-Client: mecca.client`` (the server refuses a
  mutating ``/api/`` request without it or the token) and, with a token,
  ``Authorization: Bearer <token>``; the token is never put in a URL.
* **Defaults**: ``http://127.0.0.1:8000`` (``mecca serve``'s host and port, no TLS), the
  token from ``token=`` or else the ``MECCA_TOKEN`` environment variable.
* **Results**: a :class:`RemoteResult` is fetched lazily (the mask on first access of
  ``mask``, the probability on first access of ``prob``) and is only valid while it is
  the session's current result: reading it after a later step, undo, redo or reset
  raises InputError rather than giving the newer step's arrays.
* **Errors**: the server's 400 replies raise :class:`~mecca.errors.InputError`, 409
  :class:`~mecca.errors.OverwriteError`, 503 :class:`~mecca.errors.ServerBusy`, anything
  else (401, 404, 5xx, no connection) :class:`RemoteError`; each carries the server's
  message.
"""

from __future__ import annotations

import gzip
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mecca.errors import InputError, MeccaError, OverwriteError, ServerBusy

DEFAULT_URL = "http://127.0.0.1:8000"
"""Where ``mecca serve`` listens by default (host 127.0.0.1, port 8000)."""
TOKEN_ENV = "MECCA_TOKEN"
"""The environment variable ``mecca serve --token`` and this client read the token from."""
CLIENT_NAME = "mecca.client"
"""The ``X-Mecca-Client`` header value sent with every request."""


class RemoteError(MeccaError):
    """A request the server refused or could not answer (status 0: no connection)."""

    def __init__(self, message: str, *, status: int = 0, hint: str | None = None) -> None:
        self.status = status
        super().__init__(message, hint=hint)


@dataclass(frozen=True)
class Server:
    """Where a server is and how to talk to it.

    Attributes:
        url: base URL, e.g. ``http://127.0.0.1:8000``.
        token: the bearer token, or None (then ``MECCA_TOKEN`` is used when set).
        timeout: seconds to wait for one reply (a step may take a while on a busy CPU).
    """

    url: str = DEFAULT_URL
    token: str | None = None
    timeout: float = 300.0

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        headers = {"X-Mecca-Client": CLIENT_NAME, "Accept": "application/json"}
        token = self.token if self.token is not None else os.environ.get(TOKEN_ENV)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return {**headers, **(extra or {})}

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """Send one request; returns (body bytes, headers). Raises the errors above."""
        if body is not None:
            data = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        url = self.url.rstrip("/") + path
        req = urllib.request.Request(url, data=data, method=method, headers=self._headers(headers))
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as reply:
                return reply.read(), dict(reply.headers.items())
        except urllib.error.HTTPError as exc:
            raise _error(exc.code, exc.read()) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RemoteError(
                f"cannot reach the server at {self.url} ({reason})",
                hint="start it with `mecca serve`, or pass url=",
            ) from None

    def json(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """A request whose reply is a JSON object."""
        content, _ = self.request(method, path, body=body)
        reply: dict[str, Any] = json.loads(content)
        return reply

    def info(self) -> dict[str, Any]:
        """``GET /api/info``: version, methods, image roots, limits."""
        return self.json("GET", "/api/info")

    def sessions(self) -> list[dict[str, Any]]:
        """The server's saved sessions, the last changed first."""
        listing: list[dict[str, Any]] = self.json("GET", "/api/sessions")["sessions"]
        return listing


def _error(status: int, content: bytes) -> MeccaError:
    """The exception for an HTTP error reply."""
    try:
        message = str(json.loads(content).get("error", ""))
    except (ValueError, AttributeError):
        message = content[:300].decode(errors="replace")
    message = message or f"HTTP {status}"
    if status == 400:
        return InputError(message)
    if status == 409:
        return OverwriteError(message)
    if status == 503:
        return ServerBusy(message)
    hint = f"pass token= or set {TOKEN_ENV}" if status == 401 else None
    return RemoteError(f"the server answered {status}: {message}", status=status, hint=hint)


def _nifti_array(content: bytes) -> np.ndarray:
    """The voxel array (I, J, K) of a gzipped NIfTI reply (nibabel, imported here so that
    importing this module loads no more than numpy)."""
    import nibabel as nib

    image = nib.Nifti1Image.from_bytes(gzip.decompress(content))
    return np.asanyarray(image.dataobj)


@dataclass(frozen=True)
class RemoteResult:
    """One step's result as the server reports it; arrays are fetched on first access.

    Attributes:
        step: steps run so far (1 = after the first step).
        box: the ROI box ``((i0, j0, k0), (i1, j1, k1))``, half-open, on the image grid.
        shape: the image's (I, J, K).
        mask_voxels: voxels in the mask.
        seconds: the method's own time for the step; total_seconds: the server's time.
        summary: the server's whole step summary (advice regions, honoured clicks...).
    """

    step: int
    box: tuple[tuple[int, int, int], tuple[int, int, int]]
    shape: tuple[int, int, int]
    mask_voxels: int
    seconds: float
    total_seconds: float
    summary: dict[str, Any]
    _session: RemoteSession = field(repr=False, compare=False)
    _version: int = field(repr=False, compare=False)
    _arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def _array(self, what: str) -> np.ndarray:
        if what not in self._arrays:
            if self._version != self._session._version:
                raise InputError(
                    "this result is no longer the session's current one",
                    hint="read session.result again",
                )
            content, _ = self._session.server.request(
                "GET", f"/api/sessions/{self._session.id}/{what}.nii.gz"
            )
            self._arrays[what] = _nifti_array(content)
        return self._arrays[what]

    @property
    def mask(self) -> np.ndarray:
        """uint8 (I, J, K) mask on the image grid (the server's ``mask.nii.gz``)."""
        return np.asarray(self._array("mask"), dtype=np.uint8)

    @property
    def prob(self) -> np.ndarray:
        """float32 (I, J, K) probability, 0 outside the box (the server's ``prob.nii.gz``)."""
        return np.asarray(self._array("prob"), dtype=np.float32)

    @property
    def advice(self) -> np.ndarray | None:
        """int32 (I, J, K) advice regions, or None when the method gives none."""
        if not self.summary.get("advice"):  # the server sends [] when there are none
            return None
        return np.asarray(self._array("advice"), dtype=np.int32)


def _kind_name(kind: Any) -> str:
    """A click kind as the API names it: a string, or an enum's value."""
    return str(getattr(kind, "value", kind))


def _as_pair(click: Any) -> tuple[str, Sequence[int]]:
    """(kind, (i, j, k)) of a ``(kind, position)`` pair or a Click-like object."""
    if hasattr(click, "kind") and hasattr(click, "position"):
        return _kind_name(click.kind), click.position
    try:
        kind, position = click
    except (TypeError, ValueError):
        raise InputError(
            f"not a click: {click!r}", hint="pass a Click or a (kind, (i, j, k)) pair"
        ) from None
    return _kind_name(kind), position


class RemoteSession:
    """One session of a ``mecca serve`` server, with :class:`mecca.Session`'s interface.

    Open one with :meth:`open` (an image under one of the server's roots) or
    :meth:`upload` (a local file), or attach to an existing session by its id.

    Args:
        session_id: the server's session id.
        url: the server's base URL (default ``http://127.0.0.1:8000``).
        token: the bearer token (default: the ``MECCA_TOKEN`` environment variable).
        timeout: seconds to wait for one reply.
    """

    def __init__(
        self,
        session_id: str,
        *,
        url: str = DEFAULT_URL,
        token: str | None = None,
        timeout: float = 300.0,
        _state: dict[str, Any] | None = None,
    ) -> None:
        self.server = Server(url, token, timeout)
        self.id = session_id
        self._version = 0
        self._result: RemoteResult | None = None
        self._state: dict[str, Any] = {}
        self._update(_state if _state is not None else self._get("GET", ""))

    @classmethod
    def open(
        cls,
        path: str,
        *,
        root: int = 0,
        method: str | None = None,
        url: str = DEFAULT_URL,
        token: str | None = None,
        timeout: float = 300.0,
    ) -> RemoteSession:
        """A new session on the image ``path`` (relative to the server's root ``root``)."""
        server = Server(url, token, timeout)
        state = server.json("POST", "/api/sessions", {"root": root, "path": path, "method": method})
        return cls(state["id"], url=url, token=token, timeout=timeout, _state=state)

    @classmethod
    def upload(
        cls,
        file: str | Path,
        *,
        method: str | None = None,
        url: str = DEFAULT_URL,
        token: str | None = None,
        timeout: float = 300.0,
    ) -> RemoteSession:
        """A new session on a local image file (NIfTI, NRRD, MHA, or a .zip), sent whole."""
        file = Path(file).expanduser()
        if not file.is_file():
            raise InputError("file not found", path=file, hint="upload a file, not a folder")
        query = {"filename": file.name} | ({"method": method} if method else {})
        server = Server(url, token, timeout)
        content, _ = server.request(
            "POST",
            "/api/sessions/upload?" + urllib.parse.urlencode(query),
            data=file.read_bytes(),
            headers={"Content-Type": "application/octet-stream"},
        )
        state = json.loads(content)
        return cls(state["id"], url=url, token=token, timeout=timeout, _state=state)

    # ---------------------------------------------------------------- state

    def _get(self, method: str, action: str, body: Any = None) -> dict[str, Any]:
        return self.server.json(method, f"/api/sessions/{self.id}{action}", body)

    def _update(self, state: dict[str, Any], *, changed: bool | None = None) -> dict[str, Any]:
        """Keep the server's state. ``changed``: whether the request may have changed the
        result (a step, undo, redo, reset...); None compares the step summaries."""
        last = state.get("last")
        if changed is None:
            before = (self._state.get("steps"), self._state.get("last"))
            changed = (state.get("steps"), last) != before
        if changed:
            self._version += 1
            self._result = None if last is None else self._make_result(state, last)
        self._state = state
        return state

    def _make_result(self, state: dict[str, Any], last: dict[str, Any]) -> RemoteResult:
        start, stop = (tuple(int(v) for v in corner) for corner in last["box"])
        return RemoteResult(
            step=int(last["step"]),
            box=(start, stop),  # type: ignore[arg-type]
            shape=tuple(int(s) for s in state["shape"]),  # type: ignore[arg-type]
            mask_voxels=int(last["mask_voxels"]),
            seconds=float(last["method_ms"]) / 1000,
            total_seconds=float(last["total_ms"]) / 1000,
            summary=last,
            _session=self,
            _version=self._version,
        )

    def refresh(self) -> dict[str, Any]:
        """Read the session's state again (another client may have changed it)."""
        return self._update(self._get("GET", ""))

    @property
    def state(self) -> dict[str, Any]:
        """The server's last reported state (shape, affine, ROI, steps, clicks, ...)."""
        return self._state

    @property
    def shape(self) -> tuple[int, int, int]:
        """The image's (I, J, K)."""
        return tuple(int(s) for s in self._state["shape"])  # type: ignore[return-value]

    @property
    def affine(self) -> np.ndarray:
        """(4, 4) voxel (i, j, k, 1) -> RAS+ mm of the image the server holds."""
        return np.asarray(self._state["affine"], dtype=np.float64)

    @property
    def method(self) -> str:
        """The method the server runs for this session."""
        return str(self._state["method"])

    @property
    def roi(self) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """The ROI ``(start, stop)`` on the image grid, or None until the first step."""
        roi = self._state.get("roi")
        return None if roi is None else (tuple(roi[0]), tuple(roi[1]))

    @property
    def box(self) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """The user's box around the object ``(start, stop)`` (``as_box``), or None."""
        box = self._state.get("box")
        return None if box is None else (tuple(box[0]), tuple(box[1]))

    @property
    def result(self) -> RemoteResult | None:
        """The current result, or None before the first step."""
        return self._result

    def _clicks(self, step: int | None) -> tuple[tuple[str, tuple[int, ...]], ...]:
        return tuple(
            (c["kind"], tuple(c["ijk"])) for c in self._state["clicks"] if c["step"] == step
        )

    @property
    def history(self) -> tuple[tuple[tuple[str, tuple[int, ...]], ...], ...]:
        """Clicks of each step run so far, as (kind, (i, j, k)), oldest first."""
        return tuple(self._clicks(n) for n in range(1, self.n_steps + 1))

    @property
    def pending(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """Clicks queued for the next step, as (kind, (i, j, k))."""
        return self._clicks(None)

    @property
    def n_steps(self) -> int:
        """Steps run so far (and not undone)."""
        return int(self._state["steps"])

    @property
    def can_undo(self) -> bool:
        """Whether :meth:`undo` has a step to undo."""
        return bool(self._state["can_undo"])

    @property
    def can_redo(self) -> bool:
        """Whether :meth:`redo` has an undone step to put back."""
        return bool(self._state["can_redo"])

    # ---------------------------------------------------------------- clicks and steps

    def _world(self, position: Sequence[int]) -> list[float]:
        ijk = np.asarray(position, dtype=np.float64)
        if ijk.shape != (3,) or not np.all(np.isfinite(ijk)) or np.any(ijk != np.round(ijk)):
            raise InputError(
                f"a click position must be 3 whole numbers (i, j, k), got {position!r}"
            )
        xyz = self.affine[:3, :3] @ ijk + self.affine[:3, 3]
        return [float(v) for v in xyz]

    def add_click(self, kind: Any, position_ijk: Sequence[int]) -> tuple[str, tuple[int, ...]]:
        """Queue one click at voxel (i, j, k) for the next step; returns it as queued."""
        return self.add_clicks([(kind, position_ijk)])[0]

    def add_clicks(self, clicks: Iterable[Any]) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """Queue several clicks, each a ``(kind, (i, j, k))`` pair or a Click; the server
        checks all of them first, so a refused one queues none (InputError). Returns them
        as the server queued them: (kind, (i, j, k))."""
        body = [{"kind": k, "xyz_mm": self._world(p)} for k, p in map(_as_pair, clicks)]
        return self._queue(body)

    def add_click_world(self, kind: Any, xyz_mm: Sequence[float]) -> tuple[str, tuple[int, ...]]:
        """Queue a click given in RAS+ millimetres at the nearest voxel; returns it."""
        return self._queue([{"kind": _kind_name(kind), "xyz_mm": [float(v) for v in xyz_mm]}])[0]

    def _queue(self, body: list[dict[str, Any]]) -> tuple[tuple[str, tuple[int, ...]], ...]:
        state = self._get("POST", "/clicks", {"clicks": body, "step": False})
        self._update(state, changed=False)
        return self.pending[len(self.pending) - len(body) :]

    def set_roi(self, start: Sequence[int], stop: Sequence[int], *, as_box: bool = False) -> None:
        """Use the box ``[start, stop)`` (voxels) as the ROI; resets the session's clicks.

        Sent as its first and last voxels' centres; a box one voxel thick on one axis is
        made as deep as it is wide by the server (a box drawn on one slice). ``as_box``:
        the box is drawn tight around the object (the ROI: the box plus a quarter per
        side), a box prompt for a method that takes boxes, which the server then segments
        at once (docs/server.md)."""
        last = [int(v) - 1 for v in stop]
        corners = [self._world([int(v) for v in start]), self._world(last)]
        body = {"corners_mm": corners, "as_box": as_box}
        self._update(self._get("PUT", "/roi", body), changed=True)

    def step(self) -> RemoteResult:
        """Run the method with the queued clicks; returns the new result."""
        self._update(self._get("POST", "/step"), changed=True)
        assert self._result is not None
        return self._result

    def undo(self) -> RemoteResult | None:
        """Undo the last step (or a reset); returns the current result (None at the start)."""
        self._update(self._get("POST", "/undo"), changed=True)
        return self._result

    def redo(self) -> RemoteResult:
        """Redo the last undone step exactly as it was."""
        self._update(self._get("POST", "/redo"), changed=True)
        assert self._result is not None
        return self._result

    def reset(self) -> None:
        """Back to no clicks (the server's undo brings the history back)."""
        self._update(self._get("POST", "/reset"), changed=True)

    def set_background(self, mask: np.ndarray | None) -> None:
        """Set the session's background evidence on the server, as
        :meth:`mecca.Session.set_background` with a mask: voxels known not to be the
        object, a bool (or 0/1) array of the image's (I, J, K) shape; None clears it. The
        server adds the locked labels of the session's group to it. A saved setting, not a
        step: it applies from the next step, undo or redo on (the current result stays).

        Raises:
            InputError: another shape, or values other than 0 and 1 (checked here first).
        """
        data = b""
        if mask is not None:
            array = np.asarray(mask)
            if array.shape != self.shape:
                raise InputError(
                    f"a background mask of shape {array.shape} is not on the image grid "
                    f"{self.shape}"
                )
            if array.dtype != bool and not bool(((array == 0) | (array == 1)).all()):
                raise InputError("a background mask must hold only 0 and 1 (or be bool)")
            raw = np.ascontiguousarray(array, dtype=np.uint8).tobytes()
            data = gzip.compress(raw, compresslevel=1)
        content, _ = self.server.request(
            "PUT",
            f"/api/sessions/{self.id}/background",
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        self._update(json.loads(content), changed=False)

    def set_method(self, method: str) -> RemoteResult | None:
        """Rerun the clicks so far with another method, as one step (undo reverts it)."""
        self._update(self._get("PUT", "/method", {"method": method}), changed=True)
        return self._result

    # ---------------------------------------------------------------- export

    def export_mask(self, path: str | Path, *, force: bool = False) -> Path:
        """Write the current mask to a local NIfTI file (``.nii.gz``, as the server wrote
        it on the image's grid, byte for byte).

        Raises:
            InputError: no step yet, or a name not ending in .nii.gz. OverwriteError:
                ``path`` exists and ``force`` is False.
        """
        path = Path(path).expanduser()
        if not path.name.lower().endswith(".nii.gz"):
            raise InputError("the mask is exported as NIfTI", path=path, hint="name it *.nii.gz")
        if path.exists() and not force:
            raise OverwriteError("already exists", path=path, hint="pass force=True to replace it")
        if self._result is None:
            raise InputError("nothing to export yet", hint="run step() first")
        content, _ = self.server.request("GET", f"/api/sessions/{self.id}/mask.nii.gz")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.part")
        tmp.write_bytes(content)
        os.replace(tmp, path)
        return path

    def export_on_server(self, name: str = "mask.nii.gz") -> dict[str, Any]:
        """Write the mask under the server's state folder (``exports/<id>/<name>``)."""
        return self._get("POST", "/export", {"name": name})

    def delete(self) -> None:
        """Delete the session on the server (its saved state goes too)."""
        self._get("DELETE", "")
        self._version += 1
        self._result = None
