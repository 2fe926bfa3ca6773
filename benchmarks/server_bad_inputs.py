"""Every bad input we throw at the server, and what each got back.

Usage: ``.venv/bin/python benchmarks/server_bad_inputs.py [--out FILE.md]``

Runs the real app (FastAPI TestClient, no network) on small images under a temporary
root, with small limits (200 kB body, 20,000 voxels for the "too big" cases), sends each
request of :func:`cases` and records the status and the error message. A session with one
finished step is kept open throughout: after every bad request its state (steps, pending
clicks, ROI) is compared with the state before, so "nothing lost" is checked, not assumed.
Prints a Markdown table; exits non-zero when a reply is a 5xx, carries a traceback or a
server path, or the kept session changed.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from mecca.io import Volume, save_volume
from mecca.server.app import create_app
from mecca.server.settings import ServerSettings

AFFINE = np.array([[-0.8, 0, 0, 30.0], [0, -1.2, 0, -12.0], [0, 0, 2.5, 7.0], [0, 0, 0, 1]])


def write_root(root: Path) -> None:
    """A 40x36x20 ball image, a 60x60x60 one (over the voxel limit) and junk files."""
    rng = np.random.default_rng(0)
    grid = np.indices((40, 36, 20)).astype(np.float32)
    ball = ((grid - np.array([20, 18, 10])[:, None, None, None]) ** 2).sum(0) < 36
    save_volume(Volume(ball * 2 + rng.normal(0, 0.2, ball.shape), AFFINE), root / "ball.nii.gz")
    save_volume(Volume(np.zeros((60, 60, 60), np.float32), AFFINE), root / "big.nii.gz")
    (root / "truncated.nii.gz").write_bytes((root / "ball.nii.gz").read_bytes()[:300])
    (root / "notes.txt").write_text("not an image")


def zip_with(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, data)
    return buf.getvalue()


def click(kind: str, xyz: list[float]) -> dict:
    return {"clicks": [{"kind": kind, "xyz_mm": xyz}]}


JSON = {"content-type": "application/json"}
OPEN = "/api/sessions"
UP = "/api/sessions/upload?filename="
S = "/api/sessions/{sid}"
BALL = "ball.nii.gz"
EVIL = {"host": "evil.example"}


def cases() -> list[tuple[str, str, str, dict]]:
    """(what was tried, HTTP method, URL with ``{sid}`` for the kept session, keywords)."""
    nan_click = b'{"clicks": [{"kind": "fg", "xyz_mm": [NaN, 0, 0]}]}'
    escape = zip_with("../e.dcm", b"x")
    bomb = zip_with("a.dcm", bytes(150_000_000))
    far = [[900.0, 900, 900], [901.0, 901, 901]]
    return [
        ("path escaping the root", "POST", OPEN, {"json": {"root": 0, "path": "../../etc/passwd"}}),
        ("absolute path", "POST", OPEN, {"json": {"root": 0, "path": "/etc/passwd"}}),
        ("root index that does not exist", "POST", OPEN, {"json": {"root": 7, "path": BALL}}),
        ("missing field", "POST", OPEN, {"json": {"root": 0}}),
        ("file that does not exist", "POST", OPEN, {"json": {"root": 0, "path": "none.nii.gz"}}),
        ("text file opened as an image", "POST", OPEN, {"json": {"root": 0, "path": "notes.txt"}}),
        ("truncated NIfTI", "POST", OPEN, {"json": {"root": 0, "path": "truncated.nii.gz"}}),
        ("image over the voxel limit", "POST", OPEN, {"json": {"root": 0, "path": "big.nii.gz"}}),
        ("upload with an executable name", "POST", UP + "a.exe", {"content": b"MZ"}),
        ("upload name with a path", "POST", UP + "../../x.nii.gz", {"content": b"x"}),
        ("upload over the body limit", "POST", UP + "a.nii.gz", {"content": b"x" * 300_000}),
        ("upload that is not NIfTI", "POST", UP + "a.nii.gz", {"content": b"not nifti"}),
        ("zip with ../ in a member name", "POST", UP + "s.zip", {"content": escape}),
        ("zip bomb (150 kB -> 150 MB)", "POST", UP + "s.zip", {"content": bomb}),
        ("zip that is not a zip", "POST", UP + "s.zip", {"content": b"PK junk"}),
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
    ]  # fmt: skip


def kept_state(client: TestClient, sid: str) -> tuple:
    state = client.get(f"/api/sessions/{sid}").json()
    return state["steps"], state["pending"], str(state["roi"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows, failures = [], 0
    with tempfile.TemporaryDirectory(prefix="mecca-bad-") as tmp:
        root = Path(tmp) / "images"
        root.mkdir()
        write_root(root)
        settings = ServerSettings(
            roots=(root,), state_dir=Path(tmp) / "state", methods=("random_walker",),
            max_upload_bytes=200_000, max_voxels=200_000, max_decompressed_bytes=10_000_000,
        )  # fmt: skip
        client = TestClient(create_app(settings), base_url="http://127.0.0.1")
        sid = client.post("/api/sessions", json={"root": 0, "path": "ball.nii.gz"}).json()["id"]
        centre = Volume(np.zeros((1, 1, 1)), AFFINE).voxel_to_world(np.array([20, 18, 10]))
        first = client.post(f"/api/sessions/{sid}/clicks", json=click("fg", centre.tolist()))
        assert first.status_code == 200, first.text
        before = kept_state(client, sid)
        for what, verb, url, kwargs in cases():
            reply = client.request(verb, url.format(sid=sid), **kwargs)
            status, text = reply.status_code, reply.text
            try:
                message = reply.json().get("error") or reply.json().get("detail")
            except ValueError:
                message = text[:80]
            lost = kept_state(client, sid) != before
            bad = status >= 500 or "Traceback" in text or tmp in text or lost or status < 400
            failures += bad
            rows.append(
                (what, status, str(message)[:110].replace("|", "/"), "no" if not lost else "YES")
            )
    table = ["| bad input | status | message | kept session changed |", "|---|---|---|---|"]
    table += [f"| {w} | {s} | {m} | {lost} |" for w, s, m, lost in rows]
    text = "\n".join(table) + "\n"
    print(text)
    if args.out:
        args.out.write_text(
            "# Bad inputs tried on the server\n\nProduced by `.venv/bin/python "
            "benchmarks/server_bad_inputs.py --out docs/results/server_bad_inputs.md`.\n\n" + text
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
