"""A client-given background mask (``PUT /api/sessions/{id}/background``): the session's
masks never hold its voxels, methods that take background clicks are steered by it, it
is saved and comes back after a restart, clearing it works, and a body that is not a
gzip of exactly one 0/1 byte a voxel gets a 400 (a gzip bomb included, never inflated
past the image's size)."""

import gzip
import json
import zlib

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("fastapi")
import test_labels_api as two_balls  # noqa: E402  (the touching balls, their server)
from fastapi.testclient import TestClient  # noqa: E402

from conftest import sphere  # noqa: E402

OCTETS = {"Content-Type": "application/octet-stream"}
AFFINE, LEFT, METHODS, RIGHT, SHAPE = (
    two_balls.AFFINE, two_balls.LEFT, two_balls.METHODS, two_balls.RIGHT, two_balls.SHAPE
)
_client = two_balls._client
root = two_balls.root  # the image folder fixture


def _open(client: TestClient, method: str) -> str:
    opened = client.post("/api/sessions", json={"root": 0, "path": "two.nii.gz", "method": method})
    assert opened.status_code == 200, opened.text
    return opened.json()["id"]


def _click(kind: str, ijk) -> dict:
    xyz = AFFINE[:3, :3] @ np.asarray(ijk, float) + AFFINE[:3, 3]
    return {"kind": kind, "xyz_mm": xyz.tolist()}


def _step(client: TestClient, sid: str, *clicks: dict) -> dict:
    reply = client.post(f"/api/sessions/{sid}/clicks", json={"clicks": list(clicks)})
    assert reply.status_code == 200, reply.text
    return reply.json()


def _mask(client: TestClient, sid: str) -> np.ndarray:
    reply = client.get(f"/api/sessions/{sid}/mask.nii.gz")
    assert reply.status_code == 200, reply.text
    return np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(reply.content)).dataobj) > 0


def _put(client: TestClient, sid: str, body: bytes, headers: dict | None = None):
    return client.put(f"/api/sessions/{sid}/background", content=body, headers=headers or OCTETS)


def _body(mask: np.ndarray) -> bytes:
    return gzip.compress(np.ascontiguousarray(mask, np.uint8).tobytes())


def _set(client: TestClient, sid: str, mask: np.ndarray | None) -> dict:
    reply = _put(client, sid, b"" if mask is None else _body(mask))
    assert reply.status_code == 200, reply.text
    return reply.json()


def _far_part() -> np.ndarray:
    """The right ball's far part (i >= RIGHT[0] + 2): the background mask given."""
    right = sphere(SHAPE, RIGHT, 7)
    right[: RIGHT[0] + 2] = False
    return right


@pytest.mark.parametrize("method", METHODS)
def test_a_given_background_is_never_in_the_mask_and_steers_the_method(root, tmp_path, method):
    state = tmp_path / "state"
    client = _client(root, state)
    background = _far_part()
    near = sphere(SHAPE, RIGHT, 7) & ~sphere(SHAPE, LEFT, 7) & ~background
    # no background: a click in the left ball spills over the right one
    free = _open(client, method)
    _step(client, free, _click("fg", LEFT))
    spilled = _mask(client, free)
    assert (spilled & background).sum() > 100 and (spilled & near).sum() > 100
    # the same click with the right ball's far part as background
    sid = _open(client, method)
    given = _set(client, sid, background)
    assert given["background"] is True and given["steps"] == 0
    _step(client, sid, _click("fg", LEFT))
    mask = _mask(client, sid)
    assert not (mask & background).any()  # never a voxel of it
    assert (mask & sphere(SHAPE, LEFT, 7)).sum() > 0.8 * sphere(SHAPE, LEFT, 7).sum()
    # steered: the method got background points on its surface, so the near part of the
    # right ball (not in the mask given) does not spill either
    assert (mask & near).sum() < 0.5 * (spilled & near).sum(), (
        (mask & near).sum(),
        (spilled & near).sum(),
    )
    manifest = json.loads((state / "sessions" / sid / "session.json").read_text())
    assert manifest["background"] and (state / "sessions" / sid / manifest["background"]).is_file()
    # a restart (a new app on the same state folder) replays to the same mask
    restarted = _client(root, state)
    assert restarted.get(f"/api/sessions/{sid}").json()["background"] is True
    np.testing.assert_array_equal(_mask(restarted, sid), mask)
    # a setting, not an undo step: undo and redo keep it, and the mask stays out of it
    assert restarted.post(f"/api/sessions/{sid}/undo").json()["steps"] == 0
    _step(restarted, sid, _click("fg", LEFT), _click("fg", (RIGHT[0] - 2, *RIGHT[1:])))
    assert not (_mask(restarted, sid) & background).any()


def test_clearing_it_lets_the_mask_spill_again_and_removes_the_file(root, tmp_path):
    state = tmp_path / "state"
    client = _client(root, state)
    background = _far_part()
    sid = _open(client, "random_walker")
    _set(client, sid, background)
    _step(client, sid, _click("fg", LEFT))
    assert not (_mask(client, sid) & background).any()
    cleared = _set(client, sid, None)  # an empty body
    assert cleared["background"] is False and cleared["steps"] == 1 and not cleared["can_redo"]
    assert not (_mask(client, sid) & background).any()  # the current mask stays as it was
    folder = state / "sessions" / sid
    assert not list(folder.glob("background-*"))
    assert json.loads((folder / "session.json").read_text())["background"] is None
    assert client.post(f"/api/sessions/{sid}/undo").json()["steps"] == 0
    _step(client, sid, _click("fg", LEFT))  # from the next step on: no background
    assert (_mask(client, sid) & background).sum() > 100
    # set twice: only the last file stays
    _set(client, sid, background)
    last = background & (np.indices(SHAPE)[2] > 10)
    _set(client, sid, last)
    assert len(list(folder.glob("background-*"))) == 1
    # a replay uses the background saved last for every step (documented): a step run
    # before it was set comes back without its voxels
    restarted = _client(root, state)
    assert restarted.get(f"/api/sessions/{sid}").json()["background"] is True
    replayed = _mask(restarted, sid)
    assert not (replayed & last).any() and replayed.sum() > 500


def _bomb(nbytes: int) -> bytes:
    """gzip of ``nbytes`` zeros, made chunk by chunk (a few hundred kB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    parts = [packer.compress(zeros) for _ in range(nbytes >> 20)]
    return b"".join([*parts, packer.flush()])


def test_bad_bodies_get_400_and_change_nothing(root, tmp_path):
    client = _client(root, tmp_path / "state")
    sid = _open(client, "random_walker")
    size = int(np.prod(SHAPE))
    good = np.zeros(SHAPE, np.uint8)
    cases = {
        "too small": (gzip.compress(bytes(size - 1)), "holds 30719 bytes"),
        "too large": (gzip.compress(bytes(size + 1)), "more than 30720 bytes"),
        "not gzip": (good.tobytes(), "not gzip"),
        "zlib, not gzip": (zlib.compress(good.tobytes()), "not gzip"),
        "cut short": (_body(good)[:-12], "not a complete gzip stream"),
        "data after it": (_body(good) + b"more", "data after its gzip stream"),
        "a value 2": (_body(np.where(sphere(SHAPE, RIGHT, 3), 2, 0)), "only 0 and 1"),
        "a gzip bomb": (_bomb(200 << 20), "more than 30720 bytes"),
    }
    for name, (body, words) in cases.items():
        reply = _put(client, sid, body)
        assert reply.status_code == 400, (name, reply.text)
        assert words in reply.json()["error"], (name, reply.json())
    assert len(cases["a gzip bomb"][0]) < 1 << 20  # 200 MB of zeros, under 1 MB sent
    reply = _put(client, sid, _body(good), {"Content-Type": "text/plain"})
    assert reply.status_code == 415, reply.text
    assert _put(client, "0" * 24, _body(good)).status_code == 404
    state = client.get(f"/api/sessions/{sid}").json()
    assert state["background"] is False and state["steps"] == 0
    # the compressed body is bounded by max_upload_bytes (413)
    small = _client(root, tmp_path / "small", max_upload_bytes=100_000)
    other = _open(small, "random_walker")
    assert _put(small, other, _bomb(200 << 20)).status_code == 413
    assert _put(small, other, _body(good)).status_code == 200
