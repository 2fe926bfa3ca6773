"""Proposals through the API: propose, preview (overlay, thumbnail), accept, replay."""

import gzip
import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from server_images import AFFINES, CENTRE, proposing_partial_run, write_images

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from mecca.server.app import create_app  # noqa: E402
from mecca.server.settings import ServerSettings  # noqa: E402


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def partial_run(tmp_path_factory) -> Path:
    return proposing_partial_run(tmp_path_factory.mktemp("run") / "p")


def _client(root: Path, state: Path, run: Path) -> TestClient:
    settings = ServerSettings(
        roots=(root,),
        state_dir=state,
        methods=("partial", "random_walker"),
        weights=(("partial", str(run)),),
    )
    return TestClient(
        create_app(settings), base_url="http://127.0.0.1", headers={"X-Mecca-Client": "test"}
    )


def _ras(ijk) -> list[float]:
    affine = AFFINES["las"]
    return (affine[:3, :3] @ np.asarray(ijk, float) + affine[:3, 3]).tolist()


def _mask(client: TestClient, sid: str) -> np.ndarray:
    content = client.get(f"/api/sessions/{sid}/mask.nii.gz").content
    return np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(content)).dataobj)


def _box_labels(reply) -> tuple[np.ndarray, list[int]]:
    i0, j0, k0, ni, nj, nk = (int(v) for v in reply.headers["X-Mecca-Box"].split(","))
    labels = np.frombuffer(reply.content, np.uint8).reshape((ni, nj, nk), order="F")
    return labels, [i0, j0, k0]


def test_propose_preview_accept_correct_and_replay_after_restart(root, partial_run, tmp_path):
    state = tmp_path / "state"
    client = _client(root, state, partial_run)
    info = client.get("/api/info").json()
    assert {m["name"]: m["proposes"] for m in info["methods"]} == {
        "partial": True,
        "random_walker": False,
    }
    sid = client.post("/api/sessions", json={"root": 0, "path": "las.nii.gz"}).json()["id"]
    lo, hi = np.subtract(CENTRE, 9), np.add(CENTRE, 9)
    roi = {"corners_mm": [_ras(lo), _ras(hi)]}
    assert client.put(f"/api/sessions/{sid}/roi", json=roi).is_success

    click = {"kind": "foreground", "xyz_mm": _ras(CENTRE)}
    assert client.post(f"/api/sessions/{sid}/clicks", json={"clicks": [click]}).is_success
    reply = client.post(f"/api/sessions/{sid}/propose", json={"k": 3})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert [p["index"] for p in body["proposals"]] == [0, 1, 2]
    first = body["proposals"][0]  # the largest: replaying its clicks alone would not give it
    assert first["added_foreground"] > 0
    roi = client.get(f"/api/sessions/{sid}").json()["roi"]
    assert roi[0][2] <= body["thumbnail_slice"] < roi[1][2]

    png = client.get(f"/api/sessions/{sid}/proposals/0/thumbnail.png")
    assert png.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(png.content))
    assert picture.mode == "RGB" and max(picture.size) >= 64
    preview, start = _box_labels(client.get(f"/api/sessions/{sid}/proposals/0/overlay"))

    accepted = client.post(f"/api/sessions/{sid}/accept", json={"index": 0}).json()
    assert accepted["steps"] == 2 and accepted["can_undo"]
    mask = _mask(client, sid)
    expected = np.zeros_like(mask)
    region = tuple(slice(s, s + n) for s, n in zip(start, preview.shape, strict=True))
    expected[region] = preview > 0
    assert expected[CENTRE], "a proposal keeps the decided foreground of the click"
    np.testing.assert_array_equal(mask, expected)
    assert (state / "sessions" / sid / "accepted" / "2.npz").is_file()

    corner = tuple(int(v) for v in np.add(CENTRE, 5))
    click = {"kind": "background", "xyz_mm": _ras(corner)}
    corrected = client.post(f"/api/sessions/{sid}/clicks", json={"clicks": [click]}).json()
    assert corrected["steps"] == 3
    before = _mask(client, sid)
    assert before[corner] == 0 and before[CENTRE] == 1

    restarted = _client(root, state, partial_run)  # a new server on the same state folder
    assert restarted.get(f"/api/sessions/{sid}").json()["steps"] == 3
    np.testing.assert_array_equal(_mask(restarted, sid), before)
    assert restarted.post(f"/api/sessions/{sid}/undo").json()["steps"] == 2
    np.testing.assert_array_equal(_mask(restarted, sid), mask)


def test_proposal_refusals_are_4xx_with_a_message(root, partial_run, tmp_path):
    client = _client(root, tmp_path / "state", partial_run)
    sid = client.post("/api/sessions", json={"root": 0, "path": "las.nii.gz"}).json()["id"]
    cases = [
        ("post", f"/api/sessions/{sid}/propose", {"k": 2}, "no ROI"),
        ("post", f"/api/sessions/{sid}/accept", {"index": 0}, "no proposal"),
        ("get", f"/api/sessions/{sid}/proposals/0/overlay", None, "no proposal"),
        ("post", f"/api/sessions/{sid}/propose", {"k": 0}, None),
        ("post", f"/api/sessions/{sid}/propose", {"k": 99}, None),
    ]
    for verb, url, body, message in cases:
        reply = getattr(client, verb)(url, **({} if body is None else {"json": body}))
        assert 400 <= reply.status_code < 500, (url, reply.status_code)
        if message:
            assert message in reply.text
    lo, hi = np.subtract(CENTRE, 9), np.add(CENTRE, 9)
    client.put(f"/api/sessions/{sid}/roi", json={"corners_mm": [_ras(lo), _ras(hi)]})
    client.post(f"/api/sessions/{sid}/propose", json={"k": 2})
    far = client.get(f"/api/sessions/{sid}/proposals/0/thumbnail.png?k=999")
    assert far.status_code == 400 and "outside the ROI" in far.text
    client.put(f"/api/sessions/{sid}/method", json={"method": "random_walker"})
    other = client.post(f"/api/sessions/{sid}/propose", json={"k": 2})
    assert other.status_code == 400 and "makes no proposals" in other.text
