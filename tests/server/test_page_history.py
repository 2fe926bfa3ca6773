"""The API behind the page's "nothing destroyed unasked" and "resume" (issue 29):
reset, a method switch and a new ROI can be undone (also after a restart), a method
switch reruns the clicks, and the server lists its sessions."""

from pathlib import Path

import numpy as np
import pytest
from server_images import AFFINES, CENTRE, write_images

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from mecca.server.app import create_app  # noqa: E402
from mecca.server.settings import ServerSettings  # noqa: E402

CLIENT = {"X-Mecca-Client": "test"}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("images"))


def _client(root: Path, state: Path) -> TestClient:
    settings = ServerSettings(roots=(root,), state_dir=state, methods=("random_walker", "geos"))
    return TestClient(create_app(settings), base_url="http://127.0.0.1", headers=CLIENT)


def _mm(ijk) -> list[float]:
    affine = AFFINES["lps"]
    return (affine[:3, :3] @ np.asarray(ijk, float) + affine[:3, 3]).tolist()


def _two_steps(client: TestClient) -> str:
    sid = client.post("/api/sessions", json={"root": 0, "path": "lps.nii.gz"}).json()["id"]
    fg = {"kind": "foreground", "xyz_mm": _mm(CENTRE)}
    bg = {"kind": "background", "xyz_mm": _mm((4, 4, 4))}
    assert client.post(f"/api/sessions/{sid}/clicks", json={"clicks": [fg]}).status_code == 200
    two = client.post(f"/api/sessions/{sid}/clicks", json={"clicks": [bg]}).json()
    assert two["steps"] == 2 and len(two["clicks"]) == 2
    return sid


def test_reset_is_undone_and_redone(root, tmp_path):
    client = _client(root, tmp_path / "state")
    sid = _two_steps(client)
    mask = client.get(f"/api/sessions/{sid}/mask.nii.gz").content
    reset = client.post(f"/api/sessions/{sid}/reset").json()
    assert reset["steps"] == 0 and reset["clicks"] == [] and reset["can_undo"]
    back = client.post(f"/api/sessions/{sid}/undo").json()
    assert back["steps"] == 2 and [c["step"] for c in back["clicks"]] == [1, 2]
    assert back["can_redo"] and client.get(f"/api/sessions/{sid}/mask.nii.gz").content == mask
    assert client.post(f"/api/sessions/{sid}/redo").json()["steps"] == 0
    assert client.post(f"/api/sessions/{sid}/undo").json()["steps"] == 2
    assert client.post(f"/api/sessions/{sid}/undo").json()["steps"] == 1  # then steps as usual


def test_a_method_switch_reruns_the_clicks_as_one_undoable_step(root, tmp_path):
    state = tmp_path / "state"
    client = _client(root, state)
    sid = _two_steps(client)
    switched = client.put(f"/api/sessions/{sid}/method", json={"method": "geos"}).json()
    assert switched["method"] == "geos" and switched["steps"] == 1
    assert {c["kind"] for c in switched["clicks"]} == {"foreground", "background"}
    assert switched["last"]["mask_voxels"] > 0 and switched["can_undo"]
    restarted = _client(root, state)  # the checkpoint is in the manifest
    back = restarted.post(f"/api/sessions/{sid}/undo").json()
    assert back["method"] == "random_walker" and back["steps"] == 2
    assert back["last"]["mask_voxels"] > 0


def test_a_new_roi_is_undone_and_an_empty_session_keeps_no_checkpoint(root, tmp_path):
    client = _client(root, tmp_path / "state")
    sid = _two_steps(client)
    corners = [_mm((10, 10, 5)), _mm((30, 28, 15))]
    roi = client.put(f"/api/sessions/{sid}/roi", json={"corners_mm": corners}).json()
    assert roi["steps"] == 0 and roi["roi"] == [[10, 10, 5], [31, 29, 16]] and roi["can_undo"]
    back = client.post(f"/api/sessions/{sid}/undo").json()
    assert back["steps"] == 2 and back["roi"] != roi["roi"]
    fresh = client.post("/api/sessions", json={"root": 0, "path": "las.nii.gz"}).json()["id"]
    assert not client.post(f"/api/sessions/{fresh}/reset").json()["can_undo"]
    assert client.post(f"/api/sessions/{fresh}/undo").status_code == 400


def test_the_server_lists_its_sessions_last_changed_first(root, tmp_path):
    client = _client(root, tmp_path / "state")
    first = client.post("/api/sessions", json={"root": 0, "path": "las.nii.gz"}).json()["id"]
    second = _two_steps(client)
    listed = client.get("/api/sessions")
    assert listed.status_code == 200
    rows = listed.json()["sessions"]
    assert [r["id"] for r in rows] == [second, first]
    assert rows[0]["name"] == "lps.nii.gz" and rows[0]["steps"] == 2
    assert rows[0]["method"] == "random_walker" and rows[0]["changed"].endswith("Z")
    client.delete(f"/api/sessions/{first}")
    assert [r["id"] for r in client.get("/api/sessions").json()["sessions"]] == [second]
    assert client.post("/api/sessions").status_code == 422  # no body: refused, not a 500


def test_removing_one_click_replays_the_rest_and_is_undone(root, tmp_path):
    client = _client(root, tmp_path / "state")
    sid = _two_steps(client)
    removed = client.post(f"/api/sessions/{sid}/clicks/remove", json={"index": 0})
    assert removed.status_code == 200, removed.text
    after = removed.json()
    assert after["steps"] == 1 and [c["kind"] for c in after["clicks"]] == ["background"]
    back = client.post(f"/api/sessions/{sid}/undo").json()
    assert back["steps"] == 2 and [c["kind"] for c in back["clicks"]] == [
        "foreground",
        "background",
    ]
    remove = f"/api/sessions/{sid}/clicks/remove"
    assert client.post(remove, json={"index": 2}).status_code == 400  # no such click
    for bad in ({"index": -1}, {"index": "0"}, {"index": 1e9}, {}):
        assert client.post(remove, json=bad).status_code == 422, bad
    assert client.get(f"/api/sessions/{sid}").json()["steps"] == 2  # unchanged
