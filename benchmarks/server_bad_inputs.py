"""Every bad input we throw at the server, and what each got back.

Usage: ``.venv/bin/python benchmarks/server_bad_inputs.py [--out FILE.md]``

Runs the real app (FastAPI TestClient, no network) on small images under a temporary
root, with small limits (200 kB body, 20,000 voxels for the "too big" cases), sends each
request of :func:`cases` and records the status and the error message. A session with one
finished step is kept open throughout: after every bad request its state (steps, pending
clicks, ROI) is compared with the state before, so "nothing lost" is checked, not assumed.

Besides the main client (which sends ``X-Mecca-Client`` as the page does) two others are
used: one without any extra header (what a cross-site form or ``fetch`` can send), and one
on a second app with a token and no image roots. Every request runs under a
:data:`HANG_S` timeout: a request still running then (a header naming a FIFO) is reported
as ``hang`` and released by opening the FIFO for writing. Cases that should succeed (the
``/docs`` page, security headers) carry their own check instead of "must be a 4xx".

Prints a Markdown table; exits non-zero when a reply is a 5xx, a hang, carries a traceback
or a server path, is an error reply over :data:`REPLY_CAP` bytes (a huge input echoed
back), or a request was accepted (2xx) or changed the kept session.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import re
import struct
import sys
import tempfile
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np
from fastapi.testclient import TestClient

from mecca.io import Volume, save_volume
from mecca.server.app import create_app
from mecca.server.settings import ServerSettings

AFFINE = np.array([[-0.8, 0, 0, 30.0], [0, -1.2, 0, -12.0], [0, 0, 2.5, 7.0], [0, 0, 0, 1]])
REPLY_CAP = 4096
"""Largest error reply (bytes) accepted: an error must not echo a huge input back."""
HANG_S = 10.0
"""Seconds a request may take before it is reported as a hang."""
TOKEN = "bad-inputs-token-0123456789"
"""The token of the second app (no roots)."""
FIFO = "pipe.nii"
"""A named pipe under the root: opening it for reading blocks until a writer comes."""


def write_root(root: Path) -> None:
    """A 40x36x20 ball image, a 60x60x60 one (over the voxel limit), junk files, a FIFO,
    and headers whose data files are /etc/passwd, a ../ path, the FIFO."""
    rng = np.random.default_rng(0)
    grid = np.indices((40, 36, 20)).astype(np.float32)
    ball = ((grid - np.array([20, 18, 10])[:, None, None, None]) ** 2).sum(0) < 36
    save_volume(Volume(ball * 2 + rng.normal(0, 0.2, ball.shape), AFFINE), root / "ball.nii.gz")
    save_volume(Volume(np.zeros((60, 60, 60), np.float32), AFFINE), root / "big.nii.gz")
    (root / "truncated.nii.gz").write_bytes((root / "ball.nii.gz").read_bytes()[:300])
    (root / "notes.txt").write_text("not an image")
    os.mkfifo(root / FIFO)
    (root / "passwd.mhd").write_bytes(mhd("/etc/passwd"))
    (root / "dots.nhdr").write_bytes(nhdr("../" * 8 + "etc/passwd"))
    (root / "fifo.mhd").write_bytes(mhd(FIFO))  # the FIFO, beside the header in the root


def zip_with(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, data)
    return buf.getvalue()


def zip_patched(*, flags: int = 0, method: int | None = None) -> bytes:
    """A one-entry stored ZIP whose headers claim ``flags`` (bit 0: encrypted) and the
    compression ``method`` (9: Deflate64, which Python's zipfile cannot read)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a.dcm", bytes(64))
    data = bytearray(buf.getvalue())
    for sig, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local, central header
        start = data.find(sig)
        old_flags, old_method = struct.unpack_from("<HH", data, start + at)
        new = (old_flags | flags, old_method if method is None else method)
        struct.pack_into("<HH", data, start + at, *new)
    return bytes(data)


def mhd(data_file: str) -> bytes:
    """A MetaImage header whose voxels (4x4x2 bytes) are read from ``data_file``."""
    return (
        "ObjectType = Image\nNDims = 3\nDimSize = 4 4 2\nElementType = MET_UCHAR\n"
        f"ElementDataFile = {data_file}\n"
    ).encode()


def nhdr(data_file: str) -> bytes:
    """A NRRD header (detached data) whose voxels (4x4x2 bytes) come from ``data_file``."""
    return (
        "NRRD0004\ntype: uchar\ndimension: 3\nsizes: 4 4 2\nencoding: raw\n"
        f"data file: {data_file}\n\n"
    ).encode()


def nifti(array: np.ndarray) -> bytes:
    """An uncompressed NIfTI-1 file holding ``array`` as it is (RGB, complex...)."""
    return bytes(nib.Nifti1Image(array, AFFINE).to_bytes())


def click(kind: str, xyz: list[Any]) -> dict:
    return {"clicks": [{"kind": kind, "xyz_mm": xyz}]}


JSON = {"content-type": "application/json"}
OCTET = {"content-type": "application/octet-stream"}
OPEN = "/api/sessions"
UP = "/api/sessions/upload?filename="
S = "/api/sessions/{sid}"
INFER = "/infer/random_walker?session_id={msid}"
BALL = "ball.nii.gz"
EVIL = {"host": "evil.example"}
ORIGIN = {"origin": "http://evil.example"}
NUL_PATH = {"root": 0, "path": "ball.nii.gz\0x"}
CENTRE = [14.0, -33.6, 32.0]
"""RAS mm of the ball's centre voxel (20, 18, 10)."""


def up(data: bytes) -> dict[str, Any]:
    """An upload as the page sends it (raw body, application/octet-stream)."""
    return {"content": data, "headers": OCTET}


def in_root(path: str) -> dict[str, Any]:
    """Open ``path`` under root 0."""
    return {"json": {"root": 0, "path": path}}


def monai(name: str, data: bytes) -> dict[str, Any]:
    """MONAI Label's ``PUT /session/`` body: multipart ``files``."""
    return {"files": {"files": (name, data, "application/octet-stream")}}


def infer(points: str) -> dict[str, Any]:
    """MONAI Label's ``POST /infer`` body: a multipart ``params`` JSON text whose
    foreground points are ``points`` (JSON text: NaN and Infinity are allowed)."""
    return {"files": {"params": (None, f'{{"foreground": {points}}}')}}


def multipart_body(name: str, data: bytes) -> dict[str, Any]:
    """What a cross-site HTML form with a file input posts."""
    b = "crosssiteboundary"
    head = (
        f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    body = head.encode() + data + f"\r\n--{b}--\r\n".encode()
    return {"content": body, "headers": {"content-type": f"multipart/form-data; boundary={b}"}}


def csp_problem(reply: httpx.Response) -> str | None:
    """Why the reply's headers do not forbid framing and foreign scripts (None: they do)."""
    csp = reply.headers.get("content-security-policy", "")
    if not csp:
        return "no Content-Security-Policy header"
    if "frame-ancestors 'none'" not in csp:
        return f"CSP without frame-ancestors 'none': {csp[:80]}"
    return None


def docs_problem(reply: httpx.Response) -> str | None:
    """``/docs`` must not load anything from another site (a 404: no docs, also fine)."""
    if reply.status_code == 404:
        return None
    pattern = r"""(?:src|href|url)\s*[=:(]\s*["']?((?:https?:)?//[^"'\s)>]+)"""
    found = re.findall(pattern, reply.text)
    if found:
        return f"loads {len(found)} URL(s) from other sites, e.g. {found[0][:70]}"
    return csp_problem(reply)


def cases(root: Path) -> list[tuple[str, str, str, dict]]:
    """(what was tried, HTTP method, URL with ``{sid}`` for the kept session and ``{msid}``
    for a MONAI Label session, keywords: httpx's, plus ``_client`` ("bare": no headers;
    "noroots": the app with a token and no roots) and ``_expect`` (a check of a reply that
    should succeed, returning what is wrong or None))."""
    nan_click = b'{"clicks": [{"kind": "fg", "xyz_mm": [NaN, 0, 0]}]}'
    escape = zip_with("../e.dcm", b"x")
    bomb = zip_with("a.dcm", bytes(150_000_000))
    far = [[900.0, 900, 900], [901.0, 901, 901]]
    ball = (root / BALL).read_bytes()
    passwd, environ, dots = "/etc/passwd", "/proc/self/environ", "../" * 8 + "etc/passwd"
    rgb = np.zeros((8, 8, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    complex_ = np.ones((8, 8, 4), np.complex64)
    pending = json.dumps({"clicks": [{"kind": "fg", "xyz_mm": CENTRE}], "step": False}).encode()
    no_roots = {"_client": "noroots", "headers": {"authorization": f"Bearer {TOKEN}"}}
    tok = {"_client": "noroots", "headers": {"authorization": "Bearer tök".encode()}}
    tok_query = {"_client": "noroots"}
    huge = "x" * 150_000
    form = multipart_body(BALL, ball)
    plain = {**ORIGIN, "content-type": "text/plain"}
    cross_up = {"_client": "bare", "content": ball, "headers": plain}
    cross_form = {"_client": "bare", **form, "headers": {**form["headers"], **ORIGIN}}
    cross_click = {"_client": "bare", "content": pending, "headers": plain}
    far_roi = {"corners_mm": [[1.7e308, 0, 0], CENTRE]}
    long_export = {"name": "a" * 5000}
    strings = {**click("fg", [str(v) for v in CENTRE]), "step": False}
    boolean = {**click("fg", [True, *CENTRE[1:]]), "step": False}
    string_roi = {"corners_mm": [["10", "-20", "10"], ["20", "-40", "40"]]}
    return [
        ("path escaping the root", "POST", OPEN, {"json": {"root": 0, "path": "../../etc/passwd"}}),
        ("absolute path", "POST", OPEN, {"json": {"root": 0, "path": "/etc/passwd"}}),
        ("root index that does not exist", "POST", OPEN, {"json": {"root": 7, "path": BALL}}),
        ("missing field", "POST", OPEN, {"json": {"root": 0}}),
        ("file that does not exist", "POST", OPEN, {"json": {"root": 0, "path": "none.nii.gz"}}),
        ("text file opened as an image", "POST", OPEN, {"json": {"root": 0, "path": "notes.txt"}}),
        ("truncated NIfTI", "POST", OPEN, {"json": {"root": 0, "path": "truncated.nii.gz"}}),
        ("image over the voxel limit", "POST", OPEN, {"json": {"root": 0, "path": "big.nii.gz"}}),
        ("upload with an executable name", "POST", UP + "a.exe", up(b"MZ")),
        ("upload name with a path", "POST", UP + "../../x.nii.gz", up(b"x")),
        ("upload over the body limit", "POST", UP + "a.nii.gz", up(b"x" * 300_000)),
        ("upload that is not NIfTI", "POST", UP + "a.nii.gz", up(b"not nifti")),
        ("zip with ../ in a member name", "POST", UP + "s.zip", up(escape)),
        ("zip bomb (150 kB -> 150 MB)", "POST", UP + "s.zip", up(bomb)),
        ("zip that is not a zip", "POST", UP + "s.zip", up(b"PK junk")),
        ("unknown session id", "GET", OPEN + "/0123456789abcdef01234567", {}),
        ("session id with ../", "GET", OPEN + "/..%2F..%2Fx", {}),
        ("click outside the image", "POST", S + "/clicks", {"json": click("fg", [900.0, 0, 0])}),
        ("unknown click kind", "POST", S + "/clicks", {"json": click("lasso", [0.0, 0, 0])}),
        ("click with 2 coordinates", "POST", S + "/clicks", {"json": click("fg", [0.0, 0])}),
        ("click with NaN", "POST", S + "/clicks", {"content": nan_click, "headers": JSON}),
        ("malformed JSON", "POST", S + "/clicks", {"content": b"{", "headers": JSON}),
        ("ROI with one corner", "PUT", S + "/roi", {"json": {"corners_mm": [[0.0, 0, 0]]}}),
        ("ROI corners outside the image", "PUT", S + "/roi", {"json": {"corners_mm": far}}),
        ("unknown method", "PUT", S + "/method", {"json": {"method": "nope"}}),
        ("unknown result file", "GET", S + "/secrets.nii.gz", {}),
        ("advice from a method without advice", "GET", S + "/advice.nii.gz", {}),
        ("export name with a bad suffix", "POST", S + "/export", {"json": {"name": "mask.exe"}}),
        ("foreign Host header (DNS rebinding)", "GET", "/api/info", {"headers": EVIL}),
        # headers that name another file for their voxels
        ("MetaImage naming /etc/passwd", "POST", UP + "a.mhd", up(mhd(passwd))),
        ("MetaImage naming ../ to passwd", "POST", UP + "a.mhd", up(mhd(dots))),
        ("MetaImage naming /proc/self/environ", "POST", UP + "a.mhd", up(mhd(environ))),
        ("NRRD .nhdr naming /etc/passwd", "POST", UP + "a.nhdr", up(nhdr(passwd))),
        ("NRRD .nrrd, data file ../ to passwd", "POST", UP + "a.nrrd", up(nhdr(dots))),
        ("NRRD .nhdr naming /proc/self/environ", "POST", UP + "a.nhdr", up(nhdr(environ))),
        ("MetaImage naming a FIFO (hang?)", "POST", UP + "a.mhd", up(mhd(str(root / FIFO)))),
        ("image under the root that is a FIFO", "POST", OPEN, {"json": {"root": 0, "path": FIFO}}),
        ("root's MetaImage naming /etc/passwd", "POST", OPEN, in_root("passwd.mhd")),
        ("root's NRRD naming ../ to passwd", "POST", OPEN, in_root("dots.nhdr")),
        ("root's MetaImage naming a FIFO (hang?)", "POST", OPEN, in_root("fifo.mhd")),
        ("MONAI Label session: .mhd, passwd", "PUT", "/session/", monai("a.mhd", mhd(passwd))),
        ("MONAI Label session: .nhdr, ../", "PUT", "/session/", monai("a.nhdr", nhdr(dots))),
        # other image contents
        ("RGB NIfTI upload", "POST", UP + "a.nii", up(nifti(rgb))),
        ("complex NIfTI upload", "POST", UP + "a.nii", up(nifti(complex_))),
        ("encrypted zip", "POST", UP + "s.zip", up(zip_patched(flags=1))),
        ("zip compressed with Deflate64", "POST", UP + "s.zip", up(zip_patched(method=9))),
        # names and numbers
        ("open path with a NUL byte", "POST", OPEN, {"json": NUL_PATH}),
        ("open path of 1000 characters", "POST", OPEN, {"json": {"root": 0, "path": "a" * 1000}}),
        ("file listing, folder with a NUL byte", "GET", "/api/files?root=0&folder=a%00b", {}),
        ("upload name with a NUL byte", "POST", UP + "a%00.nii.gz", up(ball)),
        ("upload name of 5000 characters", "POST", UP + "a" * 5000 + ".nii.gz", up(ball)),
        ("export name with a NUL byte", "POST", S + "/export", {"json": {"name": "a\0.nii.gz"}}),
        ("export name of 5000 characters", "POST", S + "/export", {"json": long_export}),
        ("click at 1.7e308 mm", "POST", S + "/clicks", {"json": click("fg", [1.7e308, 0, 0])}),
        ("ROI corner at 1.7e308 mm", "PUT", S + "/roi", {"json": far_roi}),
        ("huge click kind (echoed?)", "POST", S + "/clicks", {"json": click(huge, [0.0, 0, 0])}),
        ("huge method name (echoed?)", "PUT", S + "/method", {"json": {"method": huge}}),
        ("huge value in a field (echoed by 422?)", "POST", OPEN, {"json": {"root": huge}}),
        ("huge upload name ending (echoed?)", "POST", UP + "a." + "x" * 20_000, up(b"x")),
        ("MONAI /infer point with NaN", "POST", INFER, infer("[[NaN, 18, 10]]")),
        ("MONAI /infer point with Infinity", "POST", INFER, infer("[[Infinity, 18, 10]]")),
        ("MONAI /infer point with booleans", "POST", INFER, infer("[[true, 18, 10]]")),
        ("MONAI /infer point with strings", "POST", INFER, infer('[["20", 18, 10]]')),
        ("MONAI /infer huge point (echoed?)", "POST", INFER, infer(f'[["{huge}", 1, 1]]')),
        ("file listing root=-1, no roots", "GET", "/api/files?root=-1", no_roots),
        ("open root=-1, no roots", "POST", OPEN, {**no_roots, "json": {"root": -1, "path": BALL}}),
        ("non-ASCII bearer token", "GET", "/api/info", tok),
        ("non-ASCII token in the query", "GET", "/api/info?token=t%C3%B6k", tok_query),
        # should succeed, each with its own check
        ("/docs loads scripts from a CDN", "GET", "/docs", {"_expect": docs_problem}),
        ("page without CSP frame-ancestors 'none'", "GET", "/", {"_expect": csp_problem}),
        ("API reply without CSP frame-ancestors", "GET", "/api/info", {"_expect": csp_problem}),
        # cross-site requests (a foreign Origin, no X-Mecca-Client) and coerced values:
        # accepted, they change the kept session, so they come last
        ("cross-site upload as text/plain", "POST", UP + BALL, cross_up),
        ("cross-site upload as a multipart form", "POST", UP + BALL, cross_form),
        ("cross-site click as text/plain JSON", "POST", S + "/clicks", cross_click),
        ("click with strings as coordinates", "POST", S + "/clicks", {"json": strings}),
        ("click with a boolean as a coordinate", "POST", S + "/clicks", {"json": boolean}),
        ("ROI corners as strings", "PUT", S + "/roi", {"json": string_roi}),
    ]  # fmt: skip


def kept_state(client: TestClient, sid: str) -> tuple:
    state = client.get(f"/api/sessions/{sid}").json()
    return state["steps"], state["pending"], str(state["roi"])


def release(fifo: Path) -> None:
    """Unblock readers of the FIFO: a writer opens it and closes it (they read EOF)."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # no reader waiting
        return
    os.close(fd)


def send(
    client: TestClient, verb: str, url: str, kwargs: dict, fifo: Path
) -> tuple[httpx.Response | None, bool]:
    """(the reply, or None when the request still ran after :data:`HANG_S`; whether it
    still runs after releasing the FIFO's readers)."""
    box: dict[str, Any] = {}

    def go() -> None:
        try:
            box["reply"] = client.request(verb, url, **kwargs)
        except Exception as exc:  # the client itself failed (e.g. a header it cannot send)
            box["error"] = exc

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    thread.join(HANG_S)
    if thread.is_alive():
        for _ in range(20):
            release(fifo)
            thread.join(0.5)
            if not thread.is_alive():
                break
        return None, thread.is_alive()
    if "error" in box:
        raise box["error"]
    reply: httpx.Response = box["reply"]
    return reply, False


def leaked_bytes(client: TestClient, reply: httpx.Response) -> str:
    """For an accepted upload: whether its session's image holds a file's text."""
    try:
        state = reply.json()
        sid = state.get("id") or state.get("session_id")
        image = client.get(f"/api/sessions/{sid}/image.nii.gz")
        img = nib.Nifti1Image.from_bytes(gzip.decompress(image.content))
    except Exception:
        return ""
    voxels = np.asarray(img.dataobj).ravel(order="F")
    text = np.clip(np.round(voxels), 0, 255).astype(np.uint8).tobytes()
    printable = sum(32 <= b < 127 or b == 10 for b in text)
    return f"; its image holds {printable} of {len(text)} text bytes" if printable > 8 else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows: list[tuple[str, int | str, str, str]] = []
    failures = 0
    with tempfile.TemporaryDirectory(prefix="mecca-bad-") as tmp:
        root = Path(tmp) / "images"
        root.mkdir()
        write_root(root)
        settings = ServerSettings(
            roots=(root,), state_dir=Path(tmp) / "state", methods=("random_walker",),
            max_upload_bytes=200_000, max_voxels=200_000, max_decompressed_bytes=10_000_000,
        )  # fmt: skip
        app = create_app(settings)
        client = TestClient(
            app, base_url="http://127.0.0.1", headers={"X-Mecca-Client": "bench"},
            raise_server_exceptions=False,
        )  # fmt: skip
        bare = TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False)
        noroots = TestClient(
            create_app(ServerSettings(state_dir=Path(tmp) / "state2", token=TOKEN)),
            base_url="http://127.0.0.1", headers={"X-Mecca-Client": "bench"},
            raise_server_exceptions=False,
        )  # fmt: skip
        clients = {"main": client, "bare": bare, "noroots": noroots}
        sid = client.post("/api/sessions", json={"root": 0, "path": "ball.nii.gz"}).json()["id"]
        centre = Volume(np.zeros((1, 1, 1)), AFFINE).voxel_to_world(np.array([20, 18, 10]))
        assert np.allclose(centre, CENTRE)
        first = client.post(f"/api/sessions/{sid}/clicks", json=click("fg", centre.tolist()))
        assert first.status_code == 200, first.text
        opened = client.put("/session/", **monai(BALL, (root / BALL).read_bytes()))
        msid = opened.json().get("session_id", sid) if opened.status_code == 200 else sid
        before = kept_state(client, sid)
        stuck = False
        for what, verb, url, kw in cases(root):
            kwargs = {k: v for k, v in kw.items() if not k.startswith("_")}
            who = clients[kw.get("_client", "main")]
            expect: Callable[[httpx.Response], str | None] | None = kw.get("_expect")
            try:
                reply, still = send(who, verb, url.format(sid=sid, msid=msid), kwargs, root / FIFO)
            except Exception as exc:  # the client could not send it: this script's fault
                failures += 1
                rows.append((what, "not sent", f"{type(exc).__name__}: {exc}"[:110], "no"))
                continue
            stuck |= still
            after = kept_state(client, sid)
            lost, before = after != before, after
            if reply is None:
                failures += 1
                rows.append((what, "hang", f"no reply in {HANG_S:.0f} s", "YES" if lost else "no"))
                continue
            status, text = reply.status_code, reply.text
            try:
                message = reply.json().get("error") or reply.json().get("detail")
            except (ValueError, AttributeError):
                message = text[:80]
            problem = expect(reply) if expect is not None else None
            if expect is not None:
                message = problem or "ok"
            elif status < 300:
                message = "accepted" + leaked_bytes(who, reply)
            size = len(reply.content)
            if status >= 400 and size > REPLY_CAP:
                message = f"reply of {size} bytes: {message}"
            bad = (
                status >= 500 or "Traceback" in text or tmp in text or lost
                or (status >= 400 and size > REPLY_CAP)
                or (problem is not None if expect is not None else status < 400)
            )  # fmt: skip
            failures += bad
            message = " ".join(str(message).split())[:110].replace("|", "/")
            rows.append((what, status, message, "no" if not lost else "YES"))
    table = ["| bad input | status | message | kept session changed |", "|---|---|---|---|"]
    table += [f"| {w} | {s} | {m} | {lost} |" for w, s, m, lost in rows]
    text = "\n".join(table) + "\n"
    print(text)
    if args.out:
        args.out.write_text(
            "# Bad inputs tried on the server\n\nProduced by `.venv/bin/python "
            "benchmarks/server_bad_inputs.py --out docs/results/server_bad_inputs.md`.\n\n" + text
        )
    if stuck:  # a request the FIFO release did not end would keep the process alive
        sys.stdout.flush()
        os._exit(1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
