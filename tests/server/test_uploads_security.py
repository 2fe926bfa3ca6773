"""Reading what a client sends, safely: an image can never make the server read a file it
was not given (MetaImage/NRRD data files, links, FIFOs), uploads take only the page's
content types and run off the event loop, and bad archives, names or pixel types get a
4xx with a message."""

import gzip
import io
import os
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from server_images import served  # noqa: E402

from mecca.errors import InputError  # noqa: E402
from mecca.server.app import Server, create_app  # noqa: E402
from mecca.server.settings import ServerSettings  # noqa: E402

METHOD = "random_walker"
CLIENT = {"X-Mecca-Client": "test"}
OCTET = {"content-type": "application/octet-stream"}
SECRET = bytes(range(256)) * 2
"""What an attacker wants: 512 bytes, an 8 x 8 x 8 uchar image when read as one."""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "root"
    folder.mkdir()
    return folder


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file outside every root and upload."""
    path = tmp_path / "outside" / "secret.raw"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    (path.parent / "secret1.raw").write_bytes(SECRET)  # for the numbered-pattern forms
    return path


def _client(root: Path, state: Path) -> TestClient:
    settings = ServerSettings(roots=(root,), state_dir=state, methods=(METHOD,))
    return TestClient(create_app(settings), base_url="http://127.0.0.1", headers=CLIENT)


def _upload(client: TestClient, name: str, body: bytes, headers: dict | None = None):
    headers = OCTET if headers is None else headers
    return client.post("/api/sessions/upload", params={"filename": name}, content=body,
                       headers=headers)  # fmt: skip


def metaimage(data_file: str, size: int = 8) -> bytes:
    return (
        f"ObjectType = Image\nNDims = 3\nDimSize = {size} {size} {size}\n"
        f"ElementType = MET_UCHAR\nElementDataFile = {data_file}\n"
    ).encode()


def nrrd(data_file_line: str, size: int = 8) -> bytes:
    return (
        f"NRRD0004\ntype: uchar\ndimension: 3\nsizes: {size} {size} {size}\nencoding: raw\n"
        f"{data_file_line}\n\n"
    ).encode()


def nifti_bytes(array: np.ndarray) -> bytes:
    return nib.Nifti1Image(array, np.eye(4)).to_bytes()


def _served_image(client: TestClient, sid: str) -> np.ndarray:
    content = client.get(f"/api/sessions/{sid}/image.nii.gz").content
    return np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(content)).dataobj)


@contextmanager
def fifo_feeding(path: Path, data: bytes, times: int = 2) -> Iterator[Path]:
    """A FIFO at ``path`` whose first ``times`` readers get ``data``: code that reads it
    gets bytes instead of hanging the test. Any writer still waiting is released at the end."""
    os.mkfifo(path)

    def feed() -> None:
        for _ in range(times):
            try:
                with open(path, "wb") as fh:
                    fh.write(data)
            except OSError:
                return

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        for _ in range(times + 2):
            if not thread.is_alive():
                break
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            time.sleep(0.05)
            try:
                os.read(fd, 1 << 16)
            except BlockingIOError:
                pass
            os.close(fd)
            thread.join(0.2)


# ----------------------------------------------------------------------------- data files


def _attacks(secret: Path) -> dict[str, tuple[str, bytes]]:
    """Upload name and content of each header that names a file outside the upload."""
    up = "../" + os.path.relpath(secret, tempfile.gettempdir())  # from the upload's folder
    pattern = str(secret.parent / "secret%d.raw")
    return {
        "mha absolute": ("a.mha", metaimage(str(secret))),
        "mha ../": ("a.mha", metaimage(up)),
        "mha /proc": ("a.mha", metaimage("/proc/self/environ", size=2)),
        "mha pattern": ("a.mha", metaimage(f"{pattern} 1 1 1", size=8)),
        "nrrd data file": ("a.nrrd", nrrd(f"data file: {secret}")),
        "nrrd datafile ../": ("a.nrrd", nrrd(f"datafile: {up}")),
        "nrrd any case": ("a.nrrd", nrrd(f"Data File: {secret}")),
        "nrrd LIST": ("a.nrrd", nrrd(f"data file: LIST 3\n{secret}").rstrip(b"\n") + b"\n"),
        "nrrd format": ("a.nrrd", nrrd(f"data file: {pattern} 1 1 1 3")),
    }


@pytest.mark.parametrize(
    "attack",
    ["mha absolute", "mha ../", "mha /proc", "mha pattern", "nrrd data file",
     "nrrd datafile ../", "nrrd any case", "nrrd LIST", "nrrd format"],
)  # fmt: skip
def test_an_uploaded_header_cannot_read_a_server_file(root, tmp_path, secret, attack):
    """An uploaded .mha/.nrrd naming a file outside the upload is refused before any read,
    so GET image.nii.gz can never return that file's bytes."""
    name, body = _attacks(secret)[attack]
    client = _client(root, tmp_path / "state")
    reply = _upload(client, name, body)
    if reply.status_code == 200:  # the old hole: show what leaked
        leaked = _served_image(client, reply.json()["id"])
        pytest.fail(f"{attack}: served {leaked.size} voxels read from the named file")
    assert reply.status_code == 400, reply.text
    message = reply.json()["error"]
    assert "outside" in message or "plain file name" in message or "LIST" in message
    assert str(secret.parent) not in message


def test_a_detached_header_alone_is_refused(root, tmp_path, secret):
    client = _client(root, tmp_path / "state")
    for name, body in (("a.mhd", metaimage(str(secret))), ("a.nhdr", nrrd(f"data file: {secret}"))):
        reply = _upload(client, name, body)
        assert reply.status_code == 400, reply.text
        assert "header" in reply.json()["error"] and ".zip" in reply.json()["error"]


def test_slicer_session_upload_cannot_read_a_server_file(root, tmp_path, secret):
    """MONAI Label's ``PUT /session/`` (3D Slicer's upload) has the same rule."""
    client = _client(root, tmp_path / "state")
    for name, body in (("v.nrrd", nrrd(f"data file: {secret}")), ("v.mha", metaimage(str(secret)))):
        reply = client.put("/session/", files={"files": (name, body, "application/octet-stream")})
        assert reply.status_code == 400, reply.text
        assert "outside" in reply.json()["error"]


def test_a_header_naming_a_fifo_is_refused_without_reading_it(root, tmp_path):
    """A data file that is a FIFO would block the reader (and the server) forever."""
    client = _client(root, tmp_path / "state")
    with fifo_feeding(root / "pipe.raw", SECRET):
        (root / "pipe.mha").write_bytes(metaimage("pipe.raw"))
        reply = client.post("/api/sessions", json={"root": 0, "path": "pipe.mha"})
    assert reply.status_code == 400, reply.text
    assert "not a regular file" in reply.json()["error"]


def test_an_image_under_a_root_cannot_name_a_file_outside_it(root, tmp_path, secret):
    client = _client(root, tmp_path / "state")
    (root / "evil.mha").write_bytes(metaimage(str(secret)))
    (root / "evil.nhdr").write_bytes(nrrd("data file: ../outside/secret.raw"))
    for name in ("evil.mha", "evil.nhdr"):
        reply = client.post("/api/sessions", json={"root": 0, "path": name})
        assert reply.status_code == 400, reply.text
        assert "outside" in reply.json()["error"] and str(secret.parent) not in reply.text
    # a detached header with its data beside it, under the root, still opens
    (root / "fine.raw").write_bytes(SECRET)
    (root / "fine.nhdr").write_bytes(nrrd("data file: fine.raw"))
    fine = client.post("/api/sessions", json={"root": 0, "path": "fine.nhdr"})
    assert fine.status_code == 200, fine.text
    assert fine.json()["shape"] == [8, 8, 8]


def test_links_and_bad_root_indices_under_roots_are_refused(root, tmp_path):
    client = _client(root, tmp_path / "state")
    (root / "real.nii").write_bytes(nifti_bytes(np.zeros((8, 8, 8), np.float32)))
    (root / "link.nii").symlink_to(root / "real.nii")
    assert client.post("/api/sessions", json={"root": 0, "path": "real.nii"}).status_code == 200
    linked = client.post("/api/sessions", json={"root": 0, "path": "link.nii"})
    assert linked.status_code == 400 and "symbolic link" in linked.json()["error"]
    negative = client.get("/api/files", params={"root": -1})
    assert negative.status_code == 400 and "no image root" in negative.json()["error"]
    nul = client.post("/api/sessions", json={"root": 0, "path": "real\u0000.nii"})
    assert nul.status_code == 400, nul.text


def test_check_image_file_rules(tmp_path):
    """The one rule both upload routes and the roots use, case by case."""
    from mecca.server.uploads import check_image_file

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "data.raw").write_bytes(SECRET)
    (folder / "ok.mha").write_bytes(metaimage("data.raw"))
    (folder / "local.mha").write_bytes(metaimage("LOCAL") + SECRET)
    (folder / "attached.nrrd").write_bytes(nrrd("# data file: /etc/passwd is only a comment"))
    for ok in ("ok.mha", "local.mha", "attached.nrrd"):
        check_image_file(folder / ok, inside=folder)
    os.mkfifo(folder / "fifo.nii.gz")
    (folder / "link.raw").symlink_to(folder / "data.raw")
    series = folder / "series"
    series.mkdir()
    os.mkfifo(series / "slice.dcm")
    refused = {
        "fifo.nii.gz": "not a regular file",
        "list.mhd": ("LIST", metaimage("LIST\ndata.raw\ndata.raw")),
        "pattern.mha": ("plain file name", metaimage("data%03d.raw 1 8 1")),
        "drive.nrrd": ("plain file name", nrrd("data file: C:data.raw")),
        "spaces.nhdr": ("plain file name", nrrd("data file: data.raw 1 2 3")),
        "cr.nhdr": ("carriage return", nrrd("data file: data.raw\rdata file: /etc/passwd")),
        "linked.mha": ("symbolic link", metaimage("link.raw")),
        "missing.mha": ("does not exist", metaimage("nothing.raw")),
        "long.mha": ("longer than", b"Comment = " + b"x" * (2 << 20) + b"\n"),
        "series": "not a regular file",
    }
    for name, expected in refused.items():
        if isinstance(expected, tuple):
            expected, content = expected
            (folder / name).write_bytes(content)
        with pytest.raises(InputError, match=expected):
            check_image_file(folder / name, inside=folder)
    with pytest.raises(InputError, match="outside"):
        check_image_file(folder / "ok.mha", inside=series)


# ----------------------------------------------------------------------------- zip


def _zip(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_a_zip_brings_a_detached_header_with_its_data(root, tmp_path, secret):
    client = _client(root, tmp_path / "state")
    body = _zip(
        {
            "case/img.nhdr": nrrd("data file: img.raw"),
            "case/img.raw": SECRET,
            "__MACOSX/case/._img.nhdr": b"resource fork",
        }
    )
    reply = _upload(client, "case.zip", body, {"content-type": "application/zip"})
    assert reply.status_code == 200, reply.text
    served = _served_image(client, reply.json()["id"])
    assert served.shape == (8, 8, 8)
    np.testing.assert_array_equal(np.sort(served.ravel()), np.sort(np.frombuffer(SECRET, np.uint8)))
    bad = [
        ("outside", {"img.mhd": metaimage(str(secret))}),
        ("outside", {"img.mhd": metaimage("../upload.zip")}),  # the archive is not inside
        ("two files named", {"a/img.mhd": metaimage("img.raw"), "a/img.raw": SECRET,
                             "b/img.raw": SECRET}),
        ("2 .mhd/.nhdr headers", {"a.mhd": metaimage("a.raw"), "b.nhdr": nrrd("data file: a.raw"),
                                  "a.raw": SECRET}),
    ]  # fmt: skip
    for expected, entries in bad:
        reply = _upload(client, "case.zip", _zip(entries))
        assert reply.status_code == 400 and expected in reply.json()["error"], reply.text


def _patched(data: bytes, flag: int = 0, method: int | None = None) -> bytes:
    """A one-entry ZIP with general-purpose flag bits or the method changed in both the
    local and the central header."""
    b = bytearray(data)
    local, central = b.find(b"PK\x03\x04"), b.find(b"PK\x01\x02")
    b[local + 6] |= flag
    b[central + 8] |= flag
    if method is not None:
        b[local + 8 : local + 10] = method.to_bytes(2, "little")
        b[central + 10 : central + 12] = method.to_bytes(2, "little")
    return bytes(b)


def test_unreadable_zips_get_400_with_a_message(root, tmp_path):
    client = _client(root, tmp_path / "state")
    plain = _zip({"000.dcm": b"x" * 1000})
    damaged = bytearray(_zip({"000.dcm": bytes(range(256)) * 40}))
    start = damaged.find(b"PK\x03\x04") + 30 + len("000.dcm")
    damaged[start : start + 40] = b"\xff" * 40  # the deflate stream, not the headers
    cases = {
        "encrypted": _patched(plain, flag=0x1),
        "compression method": _patched(plain, method=99),  # AES, as 7-Zip writes it
        "damaged": bytes(damaged),
    }
    for expected, body in cases.items():
        reply = _upload(client, "s.zip", body)
        assert reply.status_code == 400, (expected, reply.text)
        assert expected in reply.json()["error"], reply.text


# ----------------------------------------------------------------------------- requests


def test_uploads_take_only_the_page_content_types(root, tmp_path):
    """A cross-site form or fetch can send text/plain (or no type) without a preflight."""
    client = _client(root, tmp_path / "state")
    body = gzip.compress(nifti_bytes(np.zeros((8, 8, 8), np.float32)))
    for bad in ({"content-type": "text/plain"}, {"content-type": "multipart/form-data; b=x"},
                {"content-type": "application/x-www-form-urlencoded"}, {}):  # fmt: skip
        reply = _upload(client, "a.nii.gz", body, bad)
        assert reply.status_code == 415, (bad, reply.text)
        assert "application/octet-stream" in reply.json()["error"]
    for good in ("application/octet-stream", "application/gzip", "application/x-gzip",
                 "application/zip", "Application/Octet-Stream; charset=binary"):  # fmt: skip
        reply = _upload(client, "a.nii.gz", body, {"content-type": good})
        assert reply.status_code == 200, (good, reply.text)


def _multipart(filename: str, data: bytes) -> tuple[bytes, dict]:
    """A multipart body with the file name as raw bytes (httpx would %-escape a NUL)."""
    head = f'--b\r\nContent-Disposition: form-data; name="files"; filename="{filename}"\r\n'
    body = head.encode() + b"Content-Type: application/octet-stream\r\n\r\n" + data
    return body + b"\r\n--b--\r\n", {"content-type": "multipart/form-data; boundary=b"}


def test_bad_file_names_get_400(root, tmp_path):
    client = _client(root, tmp_path / "state")
    body = nifti_bytes(np.zeros((8, 8, 8), np.float32))
    for name in ("a\u0000b.nii", "a" * 300 + ".nii", "a\tb.nii"):
        reply = _upload(client, name, body)
        assert reply.status_code == 400, (name[:10], reply.text)
        content, headers = _multipart(name, body)
        slicer = client.put("/session/", content=content, headers=headers)
        assert slicer.status_code == 400, (name[:10], slicer.text)
        assert "file name" in reply.json()["error"] and "file name" in slicer.json()["error"]


def test_rgb_and_complex_nifti_get_400(root, tmp_path):
    client = _client(root, tmp_path / "state")
    rgb = np.zeros((8, 8, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgba = np.zeros((8, 8, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1"), ("A", "u1")])
    complex_ = (np.ones((8, 8, 8)) + 2j).astype(np.complex64)
    for array, expected in ((rgb, "3 channels"), (rgba, "4 channels"), (complex_, "complex")):
        reply = _upload(client, "a.nii", nifti_bytes(array))
        assert reply.status_code == 400, reply.text
        assert expected in reply.json()["error"]


def test_an_upload_does_not_stall_other_requests(root, tmp_path, monkeypatch):
    """Reading an upload runs off the event loop: /api/info answers meanwhile."""
    import httpx

    entered, release = threading.Event(), threading.Event()
    original = Server.open_image

    def slow_load(self, *args, **kwargs):
        entered.set()
        release.wait(4.0)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Server, "open_image", slow_load)
    settings = ServerSettings(roots=(root,), state_dir=tmp_path / "state", methods=(METHOD,))
    body = nifti_bytes(np.zeros((8, 8, 8), np.float32))
    replies: dict[str, httpx.Response] = {}
    with served(settings) as url:

        def upload() -> None:
            replies["upload"] = httpx.post(
                f"{url}/api/sessions/upload?filename=a.nii", content=body,
                headers={**OCTET, **CLIENT}, timeout=30,
            )  # fmt: skip

        thread = threading.Thread(target=upload)
        thread.start()
        assert entered.wait(10), "the upload never reached the image reading"
        start = time.perf_counter()
        info = httpx.get(f"{url}/api/info", timeout=30)
        waited = time.perf_counter() - start
        release.set()
        thread.join(30)
    assert info.status_code == 200
    assert waited < 1.0, f"/api/info waited {waited:.1f} s for the upload"
    assert replies["upload"].status_code == 200, replies["upload"].text
