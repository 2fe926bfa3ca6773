"""The subset of the MONAI Label REST API that 3D Slicer's "MONAILabel" module needs.

Checked against the module's own client (MONAILabel ``plugins/slicer/MONAILabel/
MONAILabelLib/client.py`` and ``MONAILabel.py``, as shipped in the PyPI package
``monailabel`` 0.8.5), and tested by driving this server with that client code:

* ``GET /auth/`` before every request: ``{"enabled": false}`` (true with a token; then
  ``POST /auth/token`` takes the token as the password and returns it as a bearer token).
* ``GET /info/``: name, description, version, ``labels`` and ``models`` of type
  ``deepgrow`` (Slicer's foreground/background point tools), 3D. There is no top-level
  ``config`` key: Slicer takes one as the sign of an outdated server and stops.
* ``GET /train/?check_if_running=true``: 404 (this server does not train).
* ``PUT /session/`` (multipart ``files`` = the volume Slicer saved, NRRD by default) ->
  ``{"session_id": ...}``; ``GET`` / ``DELETE /session/{id}``.
* ``POST /infer/{model}?image=...&session_id=...`` with a multipart ``params`` JSON that
  holds ALL ``foreground`` / ``background`` points so far, as rounded IJK indices of the
  uploaded file. The server adds the points it has not seen as one step (if a point was
  removed, it restarts the session with all points as step 1), runs the model and
  answers ``multipart/form-data``: a ``params`` JSON part and one file part whose name is
  a plain basename (``label`` plus the upload's ending), as the client writes that name
  under its temp folder unchecked.

MECCA takes boundary (edge) points, which Slicer's deepgrow tools do not have: for the
``mecca`` model the foreground points are taken as edge points and background points
are ignored. Methods that take fg/bg clicks use both lists as they are.
"""

from __future__ import annotations

import json
import math
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from mecca._version import __version__
from mecca.errors import InputError
from mecca.interaction.clicks import Click, InteractionKind
from mecca.interface import takes_only_edge_points
from mecca.io import file_extension, save_mask
from mecca.server.security import same_secret, shown, token_ok
from mecca.server.sessions import ServerSession
from mecca.server.uploads import safe_filename

LABEL = "target"
FG, BG, EDGE = InteractionKind.FOREGROUND, InteractionKind.BACKGROUND, InteractionKind.EDGE


def _index(value: Any) -> int | None:
    """A JSON number as a voxel index (rounded), or None for anything else: booleans,
    text, NaN, infinities (``json.loads`` accepts ``NaN`` and ``Infinity``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float):
        return int(round(value)) if math.isfinite(value) else None
    return value


def _points(params: dict[str, Any], key: str, shape: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """Slicer's ``key`` points as voxel indices inside ``shape``; InputError for anything
    else (not three finite numbers, or outside the image)."""
    raw = params.get(key) or []
    if not isinstance(raw, list):
        raise InputError(f"{key} must be a list of [i, j, k] points")
    out = []
    for p in raw:
        values = [_index(v) for v in p] if isinstance(p, list) and len(p) == 3 else []
        indices = [v for v in values if v is not None]
        if len(indices) != 3:
            raise InputError(f"{key} points must be three finite numbers [i, j, k], got {shown(p)}")
        ijk = (indices[0], indices[1], indices[2])
        if any(v < 0 or v >= n for v, n in zip(ijk, shape, strict=True)):
            raise InputError(f"{key} point {list(ijk)} is outside the image of shape {shape}")
        out.append(ijk)
    return out


def requested_clicks(
    method_accepts: frozenset[InteractionKind], params: dict[str, Any], shape: tuple[int, ...]
) -> list[Click]:
    """Slicer's cumulative point lists as clicks the method takes (see the docstring)."""
    fg = _points(params, "foreground", shape)
    bg = _points(params, "background", shape)
    if takes_only_edge_points(method_accepts):
        return [Click(EDGE, p) for p in fg]
    return [Click(FG, p) for p in fg] + [Click(BG, p) for p in bg]


def multipart_reply(params: dict[str, Any], filename: str, data: bytes) -> Response:
    """``multipart/form-data`` with a ``params`` JSON part and one file part."""
    boundary = secrets.token_hex(16)
    b = boundary.encode()
    body = b"".join(
        [
            b"--" + b + b"\r\n",
            b'Content-Disposition: form-data; name="params"\r\n',
            b"Content-Type: application/json\r\n\r\n",
            json.dumps(params).encode(),
            b"\r\n--" + b + b"\r\n",
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'.encode(),
            b"Content-Type: application/octet-stream\r\n\r\n",
            data,
            b"\r\n--" + b + b"--\r\n",
        ]
    )
    return Response(body, media_type=f"multipart/form-data; boundary={boundary}")


monailabel = APIRouter(tags=["MONAI Label subset (3D Slicer)"])
ENDINGS: dict[str, str] = {}
"""Session id -> file ending of the image Slicer uploaded (the label goes back in it)."""


def _server(request: Request) -> Any:
    return request.app.state.server


@monailabel.get("/auth/")
def auth(request: Request) -> dict[str, Any]:
    return {"enabled": bool(_server(request).settings.token)}


@monailabel.post("/auth/token")
def auth_token(
    request: Request, username: Annotated[str, Form()] = "", password: Annotated[str, Form()] = ""
) -> dict[str, Any]:
    token = _server(request).settings.token
    if not token or not same_secret(password, token):  # as bytes: any characters
        raise HTTPException(401, "wrong token")
    return {"access_token": token, "token_type": "bearer"}


@monailabel.get("/auth/token/valid")
def auth_valid(request: Request) -> dict[str, Any]:
    if not token_ok(request, _server(request).settings.token):
        raise HTTPException(401, "invalid token")
    return {"valid": True}


@monailabel.get("/info/")
def info(request: Request) -> dict[str, Any]:
    server = _server(request)
    models = {}
    for name in server.settings.methods:
        if server.method(name).accepts & {FG, BG, EDGE}:
            models[name] = {
                "type": "deepgrow",
                "labels": [LABEL],
                "dimension": 3,
                "description": f"MECCA interactive method {name!r}"
                + (
                    ""
                    if server.model_name(name) is None
                    else f", model {server.model_name(name)!r}"
                ),
            }
    return {
        "name": "MECCA",
        "description": "MECCA interactive 3D segmentation (MONAI Label API subset)",
        "version": __version__,
        "labels": [LABEL],
        "models": models,
        "trainers": {},
        "strategies": {},
        "scoring": {},
        "train_stats": {},
        "datastore": {"total": 0, "completed": 0},
    }


@monailabel.get("/train/")
def train(check_if_running: bool = False) -> JSONResponse:
    return JSONResponse({"detail": "this server does not train"}, status_code=404)


def _session_info(ss: ServerSession) -> dict[str, Any]:
    return {"shape": list(ss.session.volume.shape), "steps": ss.session.n_steps}


@monailabel.put("/session/")
def create_session(request: Request, files: Annotated[list[UploadFile], File()]) -> dict[str, Any]:
    server = _server(request)
    if len(files) != 1:
        raise InputError("send exactly one image file")
    name = safe_filename(files[0].filename or "")
    if file_extension(name) == ".zip":
        raise InputError("send one image file, not a .zip", hint="Slicer sends the volume as NRRD")
    with tempfile.TemporaryDirectory(prefix="upload-", dir=server.store.scratch) as tmp:
        path = Path(tmp) / name
        with path.open("wb") as fh:
            shutil.copyfileobj(files[0].file, fh)
        ss = server.open_upload(path, None)  # the upload's checks: no data file outside tmp
    ENDINGS[ss.id] = file_extension(name)
    return {"session_id": ss.id, "session_info": _session_info(ss)}


@monailabel.get("/session/{sid}")
def get_session(request: Request, sid: str) -> dict[str, Any]:
    ss = _server(request).store.get(sid)
    return {"session_id": ss.id, "info": _session_info(ss)}


@monailabel.delete("/session/{sid}")
def delete_session(request: Request, sid: str) -> dict[str, Any]:
    _server(request).store.delete(sid)
    return {"session_id": sid, "deleted": True}


def _parse_params(params: str) -> dict[str, Any]:
    try:
        request = json.loads(params or "{}")
    except json.JSONDecodeError:
        raise InputError("params is not valid JSON") from None
    if not isinstance(request, dict):
        raise InputError("params must be a JSON object")
    return request


def _run(server: Any, ss: ServerSession, model: str, request: dict[str, Any]) -> None:
    """Bring the session to the requested points (see the module docstring)."""
    method = server.method(model)
    if ss.method != model:
        ss.use_method(model, method)
    session = ss.session
    wanted = requested_clicks(method.accepts, request, session.volume.shape)
    given = [c for step in session.history for c in step]
    if request.get("reset_state") or any(c not in wanted for c in given):
        session.reset()
        given = []
    new = [c for c in wanted if c not in given]
    if new or session.result is None:
        if not wanted:
            raise InputError("add a foreground point first")
        session.add_clicks(new)
        session.step()


@monailabel.post("/infer/{model}")
def infer(
    request: Request,
    model: str,
    image: str = "",
    session_id: str | None = None,
    params: Annotated[str, Form()] = "{}",
) -> Response:
    if not session_id:
        raise InputError(
            "this server runs interactive models in sessions only",
            hint="enable sessions in the MONAILabel module",
        )
    server = _server(request)
    wanted = _parse_params(params)
    server.method(model)  # an unknown model is refused before the session is touched
    ending = ENDINGS.get(session_id, ".nii.gz")

    def label_file(ss: ServerSession) -> tuple[Any, bytes]:
        result = ss.session.result
        assert result is not None
        with tempfile.TemporaryDirectory(prefix="mecca-label-") as tmp:
            label = save_mask(result.mask, ss.session.volume, Path(tmp) / f"label{ending}")
            return result, label.read_bytes()

    result, data = server.store.run(
        session_id, lambda ss: _run(server, ss, model, wanted), label_file
    )
    reply = {
        "label_names": {LABEL: 1},
        "latencies": {"total": round(result.total_seconds, 4)},
        "steps": result.step,
    }
    return multipart_reply(reply, f"label{ending}", data)
