"""The HTTP API (FastAPI; OpenAPI schema at ``/openapi.json``; no ``/docs`` page: it
would load scripts from a CDN).

Every route under ``/api`` works on server-side sessions (:mod:`mecca.server.sessions`):

====================================  =================================================
``GET  /api/info``                    version, methods (the clicks each takes, its
                                      ``model``, ``trained_on``, ``any_target``),
                                      image roots, limits
``GET  /api/files?root=R&folder=F``   images and folders under root R (names only);
                                      ``series``: folder F is a DICOM series
``POST /api/sessions``                open ``{"root": R, "path": "rel/path", "method"}``
``POST /api/sessions/upload``         raw body = the file; ``?filename=x.nii.gz&method=``
                                      (application/octet-stream; 415 for other types)
``GET  /api/sessions``                this server's saved sessions (image name, method,
                                      steps, last change, label ``group``, ``overlap``,
                                      ``label`` value, ``created``), the last changed first
``GET  /api/sessions/{id}``           state: shape, affine, ROI, steps, undo/redo,
                                      ``dicom`` (a DICOM series from a root: SEG export)
``GET  /api/sessions/{id}/image.nii.gz``  the image as the server wrote it
``PUT  /api/sessions/{id}/roi``       ``{"corners_mm": [[x,y,z],[x,y,z]]}`` (RAS mm)
``POST /api/sessions/{id}/clicks``    ``{"clicks": [{"kind", "xyz_mm"}], "step": true}``
``POST /api/sessions/{id}/clicks/remove``  ``{"index": n}``: drop click n (of the
                                      state's ``clicks``), replay the rest (undoable)
``POST /api/sessions/{id}/step|undo|redo|reset``  (reset is undone by undo)
``POST /api/sessions/{id}/propose``  ``{"k": 5}``: proposals of a proposal method
``GET  /api/sessions/{id}/proposals/{n}/overlay|thumbnail.png``  a proposal's preview
``POST /api/sessions/{id}/accept``   ``{"index": n}``: accept proposal n (one step)
``PUT  /api/sessions/{id}/method``    ``{"method": name}``: reruns the clicks with it as one
                                      step (undo brings the previous method back)
``POST /api/sessions/{id}/sibling``   ``{"method": name, "label": n}``: a new session on
                                      the same image (another label of one label map,
                                      in the state's label ``group``; ``label``: its
                                      value, saved and listed)
``PUT  /api/sessions/{id}/overlap``   ``{"rule": "overwrite"|"keep"|"lock"}``: the label's
                                      overlap rule (a setting, not an undo step); a
                                      locked label's voxels are background for the
                                      other labels of its group
``PUT  /api/sessions/{id}/background``  body: gzip of the uint8 (I, J, K) mask (0/1, C
                                      order, the image's shape; application/octet-
                                      stream), voxels known not to be the object; an
                                      empty body clears it. A saved setting, not an
                                      undo step: from the next step/undo/redo on
``GET  /api/sessions/{id}/overlay?outline_only=true``  only the mask's outline, in the
                                      legend's "other label" colour (labels not edited)
``POST /api/labelmap``                ``{"labels": [{"session", "value"}], "name"}``:
                                      sessions on one image merged into one label map
                                      (by their overlap rules, then probability)
``GET  /api/sessions/{id}/mask.nii.gz|prob.nii.gz|advice.nii.gz``
``GET  /api/sessions/{id}/overlay``   the page's overlay: ROI-box labels + colours
``POST /api/sessions/{id}/export``    ``{"name": "liver.nii.gz"}``: written under the
                                      state folder's ``exports/<id>/`` (``.dcm``: a DICOM
                                      SEG, ``"label"`` its segment's name)
``GET  /api/sessions/{id}/seg.dcm?label=L``  the mask as a DICOM SEG referencing the
                                      session's DICOM series (opened from a root; else 400)
``DELETE /api/sessions/{id}``
====================================  =================================================

Clicks from a viewer come in RAS millimetres and are converted with the affine of the
image the server wrote (a viewer such as NiiVue reorders voxels internally, so its voxel
indices are not the file's). Steps return the last step's timing and advice summary; the
overlays are fetched as NIfTI files on the same grid.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware

from mecca import methods
from mecca._version import __version__
from mecca.client import CLIENT_NAME
from mecca.data.roi import Box
from mecca.errors import InputError, MeccaError
from mecca.interface import InteractiveMethod, ProposalMethod
from mecca.io import (
    Volume,
    file_extension,
    is_dicom_file,
    label_map_values,
    load,
    save_mask,
    save_volume,
)
from mecca.server.dicom_export import (
    label_name,
    require_source,
    series_source,
    write_session_seg,
)
from mecca.server.memory import map_large_arrays
from mecca.server.messages import in_server_words, label_map_warning, trained_on
from mecca.server.monailabel import monailabel
from mecca.server.security import (
    BodyLimit,
    PathFilter,
    SecurityHeaders,
    error_reply,
    install_path_filter,
    internal_error,
    refusal,
    validation_reply,
)
from mecca.server.sessions import READ_PEAK, ServerSession, SessionStore, UnknownSession
from mecca.server.settings import ServerSettings
from mecca.server.thumbnails import thumbnail_png, thumbnail_slice
from mecca.server.uploads import (
    check_image_file,
    check_upload_type,
    check_voxels,
    safe_filename,
    save_body,
    unpack_zip,
)
from mecca.server.viewer_overlay import LEGEND, other_label_outline, overlay_labels
from mecca.session.clicks_file import KIND_ALIASES, advice_summary
from mecca.session.labels import merge_labels
from mecca.session.session import nearest_voxel

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
"""The page (index.html, app.js) and the vendored NiiVue build (see static/VENDOR.json)."""
PUBLIC_PATHS = ("/", "/favicon.ico", "/auth/", "/auth/token")
"""Paths served without the token: the page itself and MONAI Label's login."""
MAX_PROPOSALS = 12
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".gipl", ".gipl.gz")


class StrictRequest(BaseModel):
    """A JSON body read strictly: numbers must be JSON numbers (``true`` or ``"1"`` are
    refused as coordinates or indices; an integer is a valid float), text must be text."""

    model_config = ConfigDict(strict=True)


NAME_CHARS = 64
"""Longest method or click-kind name taken."""


def no_control_characters(name: str) -> str:
    """``name`` unless it holds control characters (a NUL cannot be in a path)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError("the name holds control characters (such as NUL or a line break)")
    return name


FileName = Annotated[str, Field(max_length=200), AfterValidator(no_control_characters)]
"""An output file name in a request."""


class OpenRequest(StrictRequest):
    root: int = Field(ge=0)
    path: str = Field(min_length=1, max_length=1024)
    method: str | None = Field(default=None, max_length=NAME_CHARS)


class RoiRequest(StrictRequest):
    corners_mm: list[list[float]] = Field(min_length=2, max_length=2)
    as_box: bool = False
    """The corners are of the user's box around the object (the ROI: the box plus a quarter
    per side; a box prompt for a method that takes boxes), not of an ROI."""


class ClickIn(StrictRequest):
    kind: str = Field(max_length=NAME_CHARS)
    xyz_mm: list[float] = Field(min_length=3, max_length=3)


class ClicksRequest(StrictRequest):
    clicks: list[ClickIn] = Field(max_length=1000)
    step: bool = True


class RemoveClickRequest(StrictRequest):
    index: int = Field(ge=0, le=1_000_000)


class ProposeRequest(StrictRequest):
    k: int = Field(default=5, ge=1, le=MAX_PROPOSALS)


class AcceptRequest(StrictRequest):
    index: int = Field(ge=0, le=MAX_PROPOSALS)


class MethodRequest(StrictRequest):
    method: str = Field(max_length=NAME_CHARS)


class OverlapRequest(StrictRequest):
    rule: str = Field(max_length=NAME_CHARS)


class SiblingRequest(StrictRequest):
    method: str | None = Field(default=None, max_length=NAME_CHARS)
    label: int | None = Field(default=None, ge=1, le=65535)
    """The new label's value as the client numbers it (saved; listed by ``GET
    /api/sessions``)."""


class ExportRequest(StrictRequest):
    name: FileName = "mask.nii.gz"
    label: str = Field(default="segmentation", max_length=64)
    """The segment's label in a DICOM SEG (``name`` ending in ``.dcm``)."""


class LabelIn(StrictRequest):
    session: str = Field(min_length=1, max_length=64)
    value: int = Field(ge=1, le=65535)
    label: str | None = Field(default=None, max_length=64)
    """The segment's label in a DICOM SEG (default ``label <value>``)."""


class LabelMapRequest(StrictRequest):
    labels: list[LabelIn] = Field(min_length=1, max_length=255)
    name: FileName = "labels.nii.gz"


class Server:
    """The app's state: settings, method cache and session store."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self._methods: dict[str, InteractiveMethod] = {}
        self._trained_on: dict[str, tuple[str | None, bool]] = {}
        map_large_arrays()  # freed images go back to the system (mecca.server.memory)
        self.store = SessionStore(
            settings.state_dir,
            self.method,
            settings.session_ttl_s,
            max_sessions=settings.max_sessions,
            max_loaded=settings.max_loaded_sessions,
            max_bytes=settings.max_memory_bytes,
            step_timeout_s=settings.step_timeout_s,
            workers=settings.step_workers,
        )

    def method(self, name: str) -> InteractiveMethod:
        """A method offered by this server (built once, shared: methods are stateless)."""
        if name not in self.settings.methods:
            raise InputError(
                f"method {name!r} is not offered here",
                hint=f"choose one of {', '.join(self.settings.methods)}",
            )
        if name not in self._methods:
            model = dict(self.settings.weights).get(name)
            options = {} if model is None else {"model": model}
            self._methods[name] = methods.get(name, **options)
        return self._methods[name]

    def model_name(self, name: str) -> str | None:
        """The model method ``name`` runs here (``--weights``, else its shipped default;
        None for a method without a trained model)."""
        method = self.method(name)
        return getattr(method, "model", None) or methods.model_for(
            name, dict(self.settings.weights).get(name)
        )

    def trained_on(self, name: str) -> tuple[str | None, bool]:
        """What method ``name``'s model was trained on, and whether for any target
        (:func:`mecca.server.messages.trained_on`; read once: it checks the weights)."""
        if name not in self._trained_on:
            self._trained_on[name] = trained_on(self.model_name(name))
        return self._trained_on[name]

    def root_dir(self, root: int) -> Path:
        """The resolved folder of image root number ``root`` (0, 1, ...; negative refused)."""
        if not 0 <= root < len(self.settings.roots):
            raise InputError(f"there is no image root {root}")
        return self.settings.roots[root].resolve()

    def open_path(self, root: int, rel: str) -> Path:
        """``rel`` under root number ``root``, refusing anything that leaves the root and a
        symbolic link (what it points to is opened by its own path, if at all)."""
        base = self.root_dir(root)
        given = base / rel
        try:
            target = given.resolve()
            found = "\x00" not in rel and target.is_relative_to(base) and target.exists()
        except (OSError, ValueError):  # a name too long, a NUL byte
            found = False
        if not found:
            raise InputError("no such image under this root")
        if given.is_symlink():
            raise InputError("the path is a symbolic link, which is not followed here")
        return target

    def open_image(
        self, path: Path, *, inside: Path, method: str | None, root: int | None = None
    ) -> ServerSession:
        """A session on the image at ``path``, after the checks that read headers only: the
        file (and any data file its header names) is a regular file inside ``inside``
        (:func:`~mecca.server.uploads.check_image_file`), within the voxel limit, and its
        array fits the memory bound (reserved before the data is read). ``root``: the image
        root ``inside`` is, whose DICOM series the session records for DICOM SEG export."""
        check_image_file(path, inside=inside)
        voxels = check_voxels(path, self.settings.max_voxels)
        with self.store.reserve(READ_PEAK * 4 * voxels):  # float32, as load() gives it
            volume = load(path)
            source = None if root is None else series_source(root, inside, path, volume)
            method = method or self.settings.methods[0]
            return self.store.create(volume, method, path.name, source)

    def series_folder(self, source: dict[str, Any]) -> Path:
        """The DICOM series folder a session came from, re-checked as when it was opened
        (inside its root, no link, regular files only, within the voxel limit)."""
        path = self.open_path(source["root"], source["path"])
        if not path.is_dir():
            raise InputError("the session's DICOM series folder is no longer a folder")
        check_image_file(path, inside=self.root_dir(source["root"]))
        check_voxels(path, self.settings.max_voxels)
        return path

    def write_seg(
        self, ss: ServerSession, labels: np.ndarray, target: Path, names: dict[int, str]
    ) -> Path:
        """``labels`` (on session ``ss``'s grid) as a DICOM SEG referencing its series."""
        source = require_source(ss.source)
        series = self.series_folder(source)
        return write_session_seg(labels, ss.session.volume, series, source, target, names)

    def open_upload(self, path: Path, method: str | None) -> ServerSession:
        """A session on an uploaded file in its own temporary folder; a ``.zip`` is unpacked
        beside it first, and only files it unpacked may be read. Blocking: the async
        upload route runs it in a worker thread."""
        inside = path.parent
        if file_extension(path) == ".zip":
            inside = path.parent / "unpacked"
            path = unpack_zip(path, inside, max_bytes=self.settings.max_decompressed_bytes)
        return self.open_image(path, inside=inside, method=method)


def state_of(ss: ServerSession) -> dict[str, Any]:
    """What the page needs to draw a session."""
    s = ss.session
    vol = s.volume
    result = s.result
    return {
        "id": ss.id,
        "name": ss.name,
        "method": ss.method,
        "model": getattr(s.method, "model", None) or None,
        "accepts": sorted(k.value for k in s.method.accepts),
        "shape": list(vol.shape),
        "spacing": [float(x) for x in vol.spacing],
        "affine": np.asarray(vol.affine).tolist(),
        "roi": None if s.roi is None else [list(s.roi.start), list(s.roi.stop)],
        "roi_follows_clicks": s.roi_follows_clicks,  # a click outside it grows it
        "box": None if s.box is None else [list(s.box.start), list(s.box.stop)],
        "steps": s.n_steps,
        "pending": len(s.pending),
        "can_undo": ss.can_undo,
        "can_redo": ss.can_redo,
        "can_undo_replace": ss.can_undo_replace,
        "clicks": input_clicks(ss),
        "last": None if result is None else step_summary(ss),
        "dicom": ss.source is not None,  # a DICOM series opened from a root: SEG export
        "overlap": ss.overlap,
        "group": ss.group,
        "background": ss.background.given is not None,  # a client-given background mask
    }


def input_clicks(ss: ServerSession) -> list[dict[str, Any]]:
    """Every click of the session (the page draws them): kind, voxel ``ijk`` and the step
    it belongs to (1, 2, ...; None while queued)."""
    s = ss.session
    steps = [(n, c) for n, clicks in enumerate(s.history, start=1) for c in clicks]
    return [
        {"kind": c.kind.value, "ijk": list(c.position), "step": n}
        for n, c in [*steps, *((None, c) for c in s.pending)]
    ]


def step_summary(ss: ServerSession) -> dict[str, Any]:
    result = ss.session.result
    assert result is not None
    return {
        "step": result.step,
        "total_ms": round(1000 * result.total_seconds, 1),
        "method_ms": round(1000 * result.seconds, 1),
        "mask_voxels": int(result.mask_box.sum()),
        "box": [list(result.box.start), list(result.box.stop)],
        "advice": advice_summary(result, ss.session.volume),
        "clicks_honoured_before": result.honoured_before,
        "clicks_not_honoured": [c.to_dict() for c in result.unhonoured],
    }


api = APIRouter(prefix="/api", tags=["MECCA API"])


def get_server(request: Request) -> Server:
    """The :class:`Server` of the app handling ``request``."""
    server: Server = request.app.state.server
    return server


ServerDep = Annotated[Server, Depends(get_server)]


def run_step(server: Server, sid: str, action: Callable[[ServerSession], Any]) -> dict[str, Any]:
    """Run ``action(server_session)`` with the step deadline, save, answer the state
    (:meth:`SessionStore.run`: a failure leaves the session at its saved state)."""
    return server.store.run(sid, action, state_of)


@api.get("/info")
def info(server: ServerDep) -> dict[str, Any]:
    settings = server.settings
    return {
        "name": "MECCA",
        "version": __version__,
        "methods": [
            {
                "name": n,
                "model": server.model_name(n),
                "trained_on": server.trained_on(n)[0],
                "any_target": server.trained_on(n)[1],
                "accepts": sorted(k.value for k in server.method(n).accepts),
                "proposes": isinstance(server.method(n), ProposalMethod),
            }
            for n in settings.methods
        ],
        "roots": [{"index": i, "name": p.name} for i, p in enumerate(settings.roots)],
        "overlay_legend": LEGEND,
        "limits": {
            "max_upload_bytes": settings.max_upload_bytes,
            "max_voxels": settings.max_voxels,
        },
    }


@api.get("/files")
def files(server: ServerDep, root: int = 0, folder: str = "") -> dict[str, Any]:
    base = server.open_path(root, folder or ".")
    if not base.is_dir():
        raise InputError("not a folder")
    entries, loose = [], None
    for p in sorted(base.iterdir())[:1000]:
        image = p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)
        if loose is None and p.is_file() and not image and not p.name.startswith("."):
            loose = p
        if not p.name.startswith(".") and (p.is_dir() or image):
            entries.append({"name": p.name, "folder": p.is_dir()})
    # a folder of slices the list does not name: a DICOM series (opened as one image)? Its
    # first such file's 132-byte preamble says (bounded work, whatever the folder holds)
    series = bool(folder) and loose is not None and is_dicom_file(loose)
    return {"root": root, "folder": folder, "entries": entries, "series": series}


@api.post("/sessions")
def open_session(server: ServerDep, body: OpenRequest) -> dict[str, Any]:
    path = server.open_path(body.root, body.path)
    ss = server.open_image(
        path, inside=server.root_dir(body.root), method=body.method, root=body.root
    )
    return opened(ss)


def opened(ss: ServerSession) -> dict[str, Any]:
    """The state of a session just opened, with a ``warning`` when its image looks like a
    label map (:func:`mecca.io.label_map_values`), else ``warning`` None."""
    values = label_map_values(ss.session.volume)
    warning = None if values is None else label_map_warning(values)
    return {**state_of(ss), "warning": warning}


@api.post("/sessions/upload", response_model=None)
async def upload(
    server: ServerDep, request: Request, filename: str, method: str | None = None
) -> dict[str, Any] | JSONResponse:
    """The request body is the file itself, sent as ``application/octet-stream`` (or a
    gzip/zip type; anything else is refused with 415, so no cross-site form can post one).
    It is streamed to a private temporary folder; checking, unpacking and reading it and
    making the session run in a worker thread, so other requests are served meanwhile."""
    refused = check_upload_type(request.headers.get("content-type"))
    if refused is not None:
        return JSONResponse({"error": refused}, status_code=415)
    name = safe_filename(filename)
    scratch = server.store.scratch
    tmp = Path(await run_in_threadpool(tempfile.mkdtemp, prefix="upload-", dir=scratch))
    try:
        path = tmp / name
        await save_body(request.stream(), path)
        ss = await run_in_threadpool(server.open_upload, path, method)
    finally:
        await run_in_threadpool(shutil.rmtree, tmp, ignore_errors=True)
    return await run_in_threadpool(opened, ss)


@api.post("/sessions/{sid}/sibling")
def sibling(server: ServerDep, sid: str, body: SiblingRequest) -> dict[str, Any]:
    """A new session on the image of session ``sid`` (its own ROI, clicks and method, rule
    ``overwrite``) in the label group of ``sid``: the page's next label; ``/api/labelmap``
    merges the labels into one file. ``label``: its value as the client numbers it, saved
    and listed (``GET /api/sessions``) to show the group's labels again after a reload."""
    ss = server.store.get(sid)
    method = body.method or ss.method
    made = server.store.create(
        ss.session.volume, method, ss.name, ss.source, ss.group, label=body.label
    )
    return state_of(made)


@api.put("/sessions/{sid}/overlap")
def set_overlap(server: ServerDep, sid: str, body: OverlapRequest) -> dict[str, Any]:
    """Set the session's overlap rule as a label (:data:`~mecca.session.labels.OVERLAP_RULES`;
    400 for another word): ``overwrite`` (a shared voxel goes to the more probable label),
    ``keep`` (it never takes another label's voxel) or ``lock`` (no label takes its voxels:
    they are background evidence for the other sessions of its group, from their next
    step, undo or redo on). A saved setting, not an undo step: undo does not change it. The
    label map uses it at once."""
    return server.store.run(sid, lambda ss: ss.set_overlap(body.rule), state_of)


BACKGROUND_TYPE = "application/octet-stream"


def _inflate(inflater: Any, chunk: bytes, out: np.ndarray, filled: int) -> int:
    """Decompress ``chunk`` into ``out`` from ``filled`` on, never more than one byte past
    its end (a gzip bomb stops there); returns the new fill. InputError for bytes that are
    not gzip, too many bytes, or data after the gzip stream."""
    size = out.size
    data = chunk
    try:
        while data:
            if inflater.eof:
                raise InputError("the background body holds data after its gzip stream")
            piece = inflater.decompress(data, size + 1 - filled)
            if filled + len(piece) > size:
                raise InputError(
                    f"the background mask holds more than {size} bytes: it must be one uint8 "
                    "a voxel of the session's image"
                )
            out[filled : filled + len(piece)] = np.frombuffer(piece, np.uint8)
            filled += len(piece)
            tail = inflater.unconsumed_tail
            if not piece and len(tail) == len(data):
                break  # no progress (cannot happen with a positive max_length)
            data = tail
        if inflater.unused_data:
            raise InputError("the background body holds data after its gzip stream")
    except zlib.error:
        raise InputError(
            "the background body is not gzip-compressed bytes", hint="send gzip of the mask"
        ) from None
    return filled


async def read_background(chunks: AsyncIterator[bytes], shape: tuple[int, ...]) -> Any:
    """The mask a ``PUT .../background`` body holds: gzip of a uint8 ``shape`` array in C
    order, 0 or 1 (bool array), or None for an empty body. Decompressed as it streams in
    (on a worker thread), into exactly ``prod(shape)`` bytes: nothing more is ever held,
    whatever the compressed body claims. InputError for anything else."""
    size = int(np.prod(shape))
    out: np.ndarray | None = None
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip only
    filled = 0
    async for chunk in chunks:
        if not chunk:
            continue
        if out is None:
            out = np.empty(size, np.uint8)
        filled = await run_in_threadpool(_inflate, inflater, chunk, out, filled)
    if out is None:
        return None
    if not inflater.eof:
        raise InputError("the background body is not a complete gzip stream")
    dims = "x".join(str(n) for n in shape)
    if filled != size:
        raise InputError(
            f"the background mask holds {filled} bytes; the session's image has {size} "
            f"voxels ({dims}): send one uint8 a voxel, C order"
        )
    if await run_in_threadpool(lambda: bool((out > 1).any())):
        raise InputError("the background mask must hold only 0 and 1 (one uint8 a voxel)")
    return out.view(bool).reshape(shape)


@api.put("/sessions/{sid}/background", response_model=None)
async def set_background(
    server: ServerDep, sid: str, request: Request
) -> dict[str, Any] | JSONResponse:
    """Set the session's own background evidence: voxels known not to be the object (its
    mask never holds them; methods that take background clicks get up to 48 points of its
    surface each step), added to the locked labels of its group. The body is the gzip of
    the uint8 (I, J, K) mask (0/1, C order, exactly the image's shape) sent as
    ``application/octet-stream`` (415 otherwise); an empty body clears it. It is
    decompressed as it arrives into at most I*J*K bytes (more, not gzip, another size or a
    value other than 0/1: 400); the compressed body is bounded by ``max_upload_bytes``
    (413). Saved with the session (reloaded with it after a restart) as a setting, not an
    undo step: it applies from the next step, undo or redo on; a replay after a restart
    uses the one saved last for every step."""
    media = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if media != BACKGROUND_TYPE:
        refused = f"a background mask must be sent as {BACKGROUND_TYPE}; got {media[:80] or 'none'}"
        return JSONResponse({"error": refused}, status_code=415)
    ss = await run_in_threadpool(server.store.get, sid)
    shape = tuple(int(n) for n in ss.session.volume.shape[:3])
    # the decompressed bytes and one check's temporary count against the memory bound
    reservation = server.store.reserve(2 * int(np.prod(shape)))
    await run_in_threadpool(reservation.__enter__)
    try:
        mask = await read_background(request.stream(), shape)
    finally:
        reservation.__exit__(None, None, None)
    return await run_in_threadpool(
        server.store.run, sid, lambda s: s.set_given_background(mask), state_of
    )


@api.get("/sessions")
def list_sessions(server: ServerDep) -> dict[str, Any]:
    """This server's saved sessions, the last changed first (the page's "Sessions" list,
    to reopen one after a reload or a restart)."""
    return {"sessions": server.store.listing()}


@api.get("/sessions/{sid}")
def get_session(server: ServerDep, sid: str) -> dict[str, Any]:
    return state_of(server.store.get(sid))


@api.delete("/sessions/{sid}")
def delete_session(server: ServerDep, sid: str) -> dict[str, Any]:
    server.store.delete(sid)
    return {"deleted": sid}


@api.get("/sessions/{sid}/image.nii.gz")
def image(server: ServerDep, sid: str) -> FileResponse:
    ss = server.store.get(sid)
    return FileResponse(ss.image_path, media_type="application/gzip", filename="image.nii.gz")


SLICE_BOX_DEPTH = 2.0
"""How deep a box drawn on one slice reaches across slices, in its mean in-plane size
(``box_from_corners``). Chosen on val (``benchmarks/slice_box_val.py``, 11 targets,
docs/server.md): with clicks anywhere (a click outside the box's ROI grows it, since
2026-12-07), Dice after the box and 3 clicks 74.7 against 74.0 for 1.5 and 74.7 for 1.0
(whose box alone is 4 points lower); organs longer across slices than wide (kidneys,
spinal cord) need the depth."""


def box_from_corners(volume: Volume, corners_mm: list[list[float]], *, in_mm: bool = False) -> Box:
    """The voxel box spanned by two RAS points (nearest voxels, both inclusive).

    Two corners drawn on one slice span a single voxel across it: that axis then gets the
    mean in-plane extent, centred on the slice (a box drawn on one view reaches as deep as
    it is wide), clipped to the volume. The extent is in voxels for an ROI (generous on
    thick slices: a region to work in) and in mm with ``in_mm`` (a box around the object,
    which should be tight).
    """
    corners = np.array(corners_mm, dtype=np.float64)
    if corners.shape != (2, 3) or not np.all(np.isfinite(corners)):
        raise InputError("corners_mm must be two finite [x, y, z] points")
    ijk = np.stack([volume.world_to_voxel(c) for c in corners])
    shape = np.array(volume.shape)
    lo = np.floor(ijk.min(0) + 0.5).astype(int)
    hi = np.floor(ijk.max(0) + 0.5).astype(int) + 1
    extent = hi - lo
    thin = extent <= 1
    if int(thin.sum()) == 1:
        axis = int(np.argmax(thin))
        spacing = np.asarray(volume.spacing, dtype=np.float64) if in_mm else np.ones(3)
        across = (extent[~thin] * spacing[~thin]).mean() * (SLICE_BOX_DEPTH if in_mm else 1.0)
        depth = max(1, int(round(across / spacing[axis])))
        lo[axis] -= depth // 2
        hi[axis] = lo[axis] + depth
    if np.any(hi <= 0) or np.any(lo >= shape):
        raise InputError("the ROI lies outside the image", hint="draw it on the image")
    lo, hi = np.clip(lo, 0, shape - 1), np.clip(hi, 1, shape)
    return Box(tuple(lo), tuple(np.maximum(hi, lo + 1)))  # type: ignore[arg-type]


@api.put("/sessions/{sid}/roi")
def set_roi(server: ServerDep, sid: str, body: RoiRequest) -> dict[str, Any]:
    volume = server.store.get(sid).session.volume
    box = box_from_corners(volume, body.corners_mm, in_mm=body.as_box)

    return run_step(server, sid, lambda ss: ss.set_roi(box, body.as_box))


def voxel_clicks(volume: Volume, clicks: list[ClickIn]) -> list[tuple[Any, tuple[int, int, int]]]:
    """RAS-mm clicks as (kind, nearest voxel) pairs; unknown kinds refused."""
    out = []
    for c in clicks:
        kind = KIND_ALIASES.get(c.kind.lower())
        if kind is None:
            raise InputError(f"unknown click kind {c.kind!r}", hint="foreground, background, edge")
        out.append((kind, nearest_voxel(volume, c.xyz_mm)))
    return out


@api.post("/sessions/{sid}/clicks")
def add_clicks(server: ServerDep, sid: str, body: ClicksRequest) -> dict[str, Any]:
    queued = voxel_clicks(server.store.get(sid).session.volume, body.clicks)

    def act(ss: ServerSession) -> None:
        ss.session.add_clicks(queued)  # checks every click before queueing any
        if body.step:
            ss.session.step()
            ss.stepped()

    return run_step(server, sid, act)


@api.post("/sessions/{sid}/clicks/remove")
def remove_click(server: ServerDep, sid: str, body: RemoveClickRequest) -> dict[str, Any]:
    """Remove click ``index`` (of the state's ``clicks``) and replay the rest: one change,
    undone by undo (the page's "Remove click" mode)."""
    return run_step(server, sid, lambda ss: ss.remove_click(body.index))


@api.post("/sessions/{sid}/step")
def step(server: ServerDep, sid: str) -> dict[str, Any]:

    def act(ss: ServerSession) -> None:
        ss.session.step()
        ss.stepped()

    return run_step(server, sid, act)


@api.post("/sessions/{sid}/propose")
def propose(server: ServerDep, sid: str, body: ProposeRequest) -> dict[str, Any]:
    """K proposals of a proposal method (``partial``): each one's added voxels, and the
    slice (third voxel axis) the thumbnails show (the most foreground over all K)."""

    def act(ss: ServerSession) -> None:
        ss.proposal_results = ss.session.propose(body.k)

    return server.store.run(sid, act, proposals_reply, save=False)


def proposals_reply(ss: ServerSession) -> dict[str, Any]:
    """The ``propose`` answer for the session's last proposals."""
    results, proposals = ss.proposal_results, ss.session.proposals
    return {
        "proposals": [
            {
                "index": n,
                "added_foreground": int(p.added_foreground),
                "added_background": int(p.added_background),
                "mask_voxels": int(r.mask_box.sum()),
            }
            for n, (p, r) in enumerate(zip(proposals, results, strict=True))
        ],
        "thumbnail_slice": thumbnail_slice([r.prob_box for r in results], results[0].box),
    }


def proposal_result(ss: ServerSession, index: int) -> Any:
    if not 0 <= index < len(ss.proposal_results):
        raise InputError(f"no proposal {index}", hint="ask for proposals first (propose)")
    return ss.proposal_results[index]


@api.get("/sessions/{sid}/proposals/{index}/overlay", response_class=Response)
def proposal_overlay(server: ServerDep, sid: str, index: int) -> Response:
    """Proposal ``index`` as the page's overlay (the format of ``/overlay``, mask only)."""
    ss = server.store.get(sid)
    with ss.lock:
        result = proposal_result(ss, index)
        labels = overlay_labels(result.prob_box, None, prob=False, advice=False)
        box = ",".join(str(v) for v in (*result.box.start, *labels.shape))
    return box_reply(labels, box)


@api.get("/sessions/{sid}/proposals/{index}/thumbnail.png", response_class=Response)
def proposal_thumbnail(server: ServerDep, sid: str, index: int, k: int | None = None) -> Response:
    """A small PNG of proposal ``index`` on slice ``k`` (default: the propose reply's)."""
    ss = server.store.get(sid)
    with ss.lock:
        result = proposal_result(ss, index)
        if k is None:
            k = thumbnail_slice([r.prob_box for r in ss.proposal_results], result.box)
        png = thumbnail_png(ss.session.volume.array, result.box, result.prob_box > 0.5, k)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@api.post("/sessions/{sid}/accept")
def accept(server: ServerDep, sid: str, body: AcceptRequest) -> dict[str, Any]:
    """Accept proposal ``index`` of the last ``propose``: a step (undo removes it)."""
    return run_step(server, sid, lambda ss: ss.accept(body.index))


@api.post("/sessions/{sid}/undo")
def undo(server: ServerDep, sid: str) -> dict[str, Any]:
    return run_step(server, sid, lambda ss: ss.undo(server.method))


@api.post("/sessions/{sid}/redo")
def redo(server: ServerDep, sid: str) -> dict[str, Any]:
    return run_step(server, sid, lambda ss: ss.redo())


@api.post("/sessions/{sid}/reset")
def reset(server: ServerDep, sid: str) -> dict[str, Any]:
    return run_step(server, sid, lambda ss: ss.reset())


@api.put("/sessions/{sid}/method")
def set_method(server: ServerDep, sid: str, body: MethodRequest) -> dict[str, Any]:
    built = server.method(body.method)
    return run_step(server, sid, lambda ss: ss.switch_method(body.method, built))


def result_file(ss: ServerSession, what: str) -> Path:
    """The current mask, probability or advice map as NIfTI in the session folder."""
    result = ss.session.result
    if result is None:
        raise InputError("no step has been run yet")
    path = ss.folder / f"{what}.nii.gz"
    volume = ss.session.volume
    if what == "mask":
        return path  # written after every save (the caller flushes)
    if what == "prob":
        return save_volume(Volume(result.prob, volume.affine), path, force=True)
    if result.advice is None:
        raise InputError("this method gives no advice regions")
    return save_mask(result.advice, volume, path, force=True)


@api.get("/sessions/{sid}/overlay", response_class=Response)
def overlay(
    server: ServerDep, sid: str, prob: bool = True, advice: bool = True, outline_only: bool = False
) -> Response:
    """The page's overlay: uint8 labels of the ROI box, raw bytes with i running fastest;
    header ``X-Mecca-Box: i0,j0,k0,ni,nj,nk``; colours in ``/api/info``'s
    ``overlay_legend`` (:mod:`mecca.server.viewer_overlay`). 204 before the first step.
    ``outline_only``: the mask's outline alone, as another label than the edited one."""
    ss = server.store.get(sid)
    with ss.lock:
        result = ss.session.result
        if result is None:
            return Response(status_code=204)
        if outline_only:
            labels = other_label_outline(result.prob_box)
        else:
            labels = overlay_labels(result.prob_box, result.advice_box, prob=prob, advice=advice)
        box = ",".join(str(v) for v in (*result.box.start, *labels.shape))
    return box_reply(labels, box)


def box_reply(labels: np.ndarray, box: str) -> Response:
    """Overlay labels as raw bytes (i fastest) with the ``X-Mecca-Box`` header."""
    return Response(
        labels.tobytes(order="F"),
        media_type="application/octet-stream",
        headers={"X-Mecca-Box": box, "Cache-Control": "no-store"},
    )


@api.get("/sessions/{sid}/{what}.nii.gz")
def result_nifti(server: ServerDep, sid: str, what: str) -> FileResponse:
    if what not in ("mask", "prob", "advice"):
        raise InputError(f"no such result {what!r}", hint="mask, prob or advice")
    ss = server.store.get(sid)
    with ss.lock:
        server.store.flush(ss)
        path = result_file(ss, what)
        return FileResponse(path, media_type="application/gzip", filename=f"{what}.nii.gz")


@api.get("/sessions/{sid}/seg.dcm")
def seg_dcm(server: ServerDep, sid: str, label: str = "segmentation") -> FileResponse:
    """The mask as a DICOM SEG (one segment named ``label``) referencing the DICOM series
    the session was opened on from an image root; 400 for any other session."""
    names = {1: label_name(label)}
    ss = server.store.get(sid)
    with ss.lock:
        require_source(ss.source)
        if ss.session.result is None:
            raise InputError("nothing to export yet: run a step first")
        path = server.write_seg(ss, ss.session.result.mask, ss.folder / "seg.dcm", names)
    return FileResponse(path, media_type="application/dicom", filename="seg.dcm")


def export_name(name: str) -> str:
    """The file name of an export request: any folder part dropped, a mask format's ending
    (or ``.dcm``: a DICOM SEG)."""
    name = Path(name.replace("\\", "/")).name
    if not name.endswith((".nii.gz", ".nii", ".nrrd", ".mha", ".dcm")):
        raise InputError(
            "export name must end in .nii.gz, .nii, .nrrd, .mha or .dcm (DICOM SEG, for a "
            "DICOM series)"
        )
    return name


@api.post("/sessions/{sid}/export")
def export(server: ServerDep, sid: str, body: ExportRequest) -> dict[str, Any]:
    ss = server.store.get(sid)
    name = export_name(body.name)
    with ss.lock:
        if name.endswith(".dcm"):
            require_source(ss.source)
        if ss.session.result is None:
            raise InputError("nothing to export yet: run a step first")
        target = server.settings.state_dir / "exports" / ss.id / name
        mask = ss.session.result.mask
        if name.endswith(".dcm"):
            server.write_seg(ss, mask, target, {1: label_name(body.label)})
        else:
            save_mask(mask, ss.session.volume, target, force=True)
    return {"exported": name, "folder": f"exports/{ss.id}"}


@api.post("/labelmap")
def label_map(server: ServerDep, body: LabelMapRequest) -> dict[str, Any]:
    """Several sessions on one image (one label each) merged into one label map, written
    to ``exports/labelmaps/<first session>/<name>``: a voxel in several masks takes the
    label of the highest rank by the sessions' overlap rules (lock over overwrite over
    keep), then of the highest probability there (:func:`mecca.session.labels.merge_labels`).
    A ``.dcm`` name writes a DICOM SEG of one segment per label (numbered 1.. in increasing
    value) referencing the first session's DICOM series."""
    name = export_name(body.name)
    ids, values = [x.session for x in body.labels], [x.value for x in body.labels]
    if len(set(ids)) != len(ids) or len(set(values)) != len(values):
        raise InputError("each label needs its own session and its own value")
    names = {x.value: label_name(x.label or f"label {x.value}") for x in body.labels}
    sessions = [server.store.get(sid) for sid in ids]
    if name.endswith(".dcm"):
        require_source(sessions[0].source)
    volume = sessions[0].session.volume
    for ss in sessions[1:]:
        other = ss.session.volume
        if other.shape != volume.shape or not np.allclose(other.affine, volume.affine):
            raise InputError(f"session {ss.id} is on another image than session {ids[0]}")
    pairs, rules = [], {}
    for value, ss in zip(values, sessions, strict=True):
        with ss.lock:
            pairs.append((value, ss.session.result))
            rules[value] = ss.overlap
    if all(result is None for _, result in pairs):
        raise InputError("nothing to export yet: run a step in one of the sessions first")
    folder = f"exports/labelmaps/{ids[0]}"  # the first session's: no other user's name clashes
    target = server.settings.state_dir / folder / name
    merged = merge_labels(volume.shape, pairs, rules)
    if name.endswith(".dcm"):
        server.write_seg(sessions[0], merged, target, names)
    else:
        save_mask(merged, volume, target, force=True)
    labels = dict(zip(ids, values, strict=True))
    return {"exported": name, "folder": folder, "labels": labels}


def mecca_error(request: Request, err: MeccaError) -> JSONResponse:
    """A MECCA error as a 4xx reply, its hints in the page's words (in 3D Slicer's on
    the MONAI Label routes: :mod:`mecca.server.messages`); the Python client
    (:mod:`mecca.client`, whose users call ``set_roi()``) gets the library's own."""
    if request.headers.get("X-Mecca-Client") == CLIENT_NAME:
        return error_reply(err)
    slicer = not request.url.path.startswith("/api/")
    return error_reply(in_server_words(err, slicer=slicer))


def create_app(settings: ServerSettings) -> FastAPI:
    """The FastAPI application (JSON API and MONAI Label subset) for ``settings``.

    Guards (:mod:`mecca.server.security`): the token and cross-site rule for every request,
    security headers on every response, short error replies, server paths out of the logs.
    No ``/docs`` or ``/redoc`` page (they load scripts from a CDN); ``/openapi.json`` stays.
    """
    app = FastAPI(title="MECCA", version=__version__, docs_url=None, redoc_url=None)
    app.state.server = Server(settings)
    app.state.path_filter = PathFilter(settings.roots, settings.state_dir)
    install_path_filter(app.state.path_filter)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        refused = refusal(request, settings.token, PUBLIC_PATHS)
        if refused is not None:
            return refused
        response: Response = await call_next(request)
        return response

    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts())
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(SecurityHeaders)  # added last: outermost, so on every response
    app.add_exception_handler(MeccaError, mecca_error)  # type: ignore[arg-type]
    app.add_exception_handler(
        RequestValidationError,
        lambda r, e: validation_reply(e),  # type: ignore[arg-type]
    )
    app.add_exception_handler(
        UnknownSession, lambda r, e: JSONResponse({"error": "no such session"}, status_code=404)
    )
    app.add_exception_handler(Exception, lambda r, e: internal_error(e))
    app.include_router(api)
    app.include_router(monailabel)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return app
