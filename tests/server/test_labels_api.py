"""Labels with overlap rules on the server (issue 30, item 4): each session's rule is
saved and comes back after a restart, a locked label's voxels are background for the
other labels of its group (never in their masks), the label map honours the rules, and
undo/redo stay exact."""

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from conftest import sphere  # noqa: E402
from mecca.io import Volume, save_volume  # noqa: E402
from mecca.server.app import create_app  # noqa: E402
from mecca.server.settings import ServerSettings  # noqa: E402

CLIENT = {"X-Mecca-Client": "test"}
SHAPE = (48, 32, 20)
LEFT, RIGHT = (17, 16, 10), (29, 16, 10)
"""Two balls of radius 7, 12 voxels apart: they touch (one bright blob, no edge between)."""
AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])
METHODS = ("random_walker", "geos")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    balls = sphere(SHAPE, LEFT, 7) | sphere(SHAPE, RIGHT, 7)
    noise = np.random.default_rng(0).normal(0, 0.2, SHAPE)
    save_volume(Volume((balls * 2.0 + noise).astype(np.float32), AFFINE), folder / "two.nii.gz")
    return folder


def _client(root: Path, state: Path, **kw) -> TestClient:
    settings = ServerSettings(roots=(root,), state_dir=state, methods=METHODS, **kw)
    return TestClient(create_app(settings), base_url="http://127.0.0.1", headers=CLIENT)


def _click(kind: str, ijk) -> dict:
    xyz = AFFINE[:3, :3] @ np.asarray(ijk, float) + AFFINE[:3, 3]
    return {"kind": kind, "xyz_mm": xyz.tolist()}


def _mask(client: TestClient, sid: str) -> np.ndarray:
    reply = client.get(f"/api/sessions/{sid}/mask.nii.gz")
    assert reply.status_code == 200, reply.text
    return np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(reply.content)).dataobj) > 0


def _step(client: TestClient, sid: str, *clicks: dict) -> dict:
    reply = client.post(f"/api/sessions/{sid}/clicks", json={"clicks": list(clicks)})
    assert reply.status_code == 200, reply.text
    return reply.json()


def _rule(client: TestClient, sid: str, rule: str) -> dict:
    reply = client.put(f"/api/sessions/{sid}/overlap", json={"rule": rule})
    assert reply.status_code == 200, reply.text
    return reply.json()


def _two_labels(client: TestClient, method: str, lock: bool) -> tuple[str, str]:
    """Label 1 clicked in the left ball (a background click in the right one), locked
    when ``lock``; then label 2, a sibling, clicked in the right ball only."""
    opened = client.post("/api/sessions", json={"root": 0, "path": "two.nii.gz", "method": method})
    assert opened.status_code == 200, opened.text
    first = opened.json()["id"]
    _step(client, first, _click("fg", LEFT), _click("bg", RIGHT))
    if lock:
        _rule(client, first, "lock")
    second = client.post(f"/api/sessions/{first}/sibling", json={}).json()["id"]
    _step(client, second, _click("fg", RIGHT))
    return first, second


def test_rules_are_saved_and_come_back_after_a_restart(root, tmp_path):
    state = tmp_path / "state"
    client = _client(root, state)
    first = client.post("/api/sessions", json={"root": 0, "path": "two.nii.gz"}).json()
    assert first["overlap"] == "overwrite" and first["group"] == first["id"]
    a = first["id"]
    sibling = client.post(f"/api/sessions/{a}/sibling", json={}).json()
    b = sibling["id"]
    assert sibling["overlap"] == "overwrite" and sibling["group"] == a  # the same label group
    third = client.post(f"/api/sessions/{b}/sibling", json={}).json()
    assert third["group"] == a
    _step(client, a, _click("fg", LEFT))
    locked = _rule(client, a, "lock")
    assert locked["overlap"] == "lock"
    assert locked["steps"] == 1 and locked["can_redo"] is False  # a setting, not a step
    undone = client.post(f"/api/sessions/{a}/undo").json()
    assert undone["steps"] == 0 and undone["overlap"] == "lock"  # undo leaves the rule
    _rule(client, b, "keep")
    saved = json.loads((state / "sessions" / a / "session.json").read_text())
    assert saved["overlap"] == "lock" and saved["group"] == a
    restarted = _client(root, state)  # a new server process on the same state folder
    rules = {sid: restarted.get(f"/api/sessions/{sid}").json() for sid in (a, b, third["id"])}
    assert {sid: s["overlap"] for sid, s in rules.items()} == {
        a: "lock",
        b: "keep",
        third["id"]: "overwrite",
    }
    assert {s["group"] for s in rules.values()} == {a}
    # a state file written before labels had rules: overwrite, a group of its own
    old = tmp_path / "old"
    c = _client(root, old).post("/api/sessions", json={"root": 0, "path": "two.nii.gz"}).json()
    manifest = old / "sessions" / c["id"] / "session.json"
    data = json.loads(manifest.read_text())
    del data["overlap"], data["group"]
    manifest.write_text(json.dumps(data))
    back = _client(root, old).get(f"/api/sessions/{c['id']}").json()
    assert back["overlap"] == "overwrite" and back["group"] == c["id"]


def test_a_rule_that_is_not_one_of_the_three_gets_400(root, tmp_path):
    client = _client(root, tmp_path / "state")
    sid = client.post("/api/sessions", json={"root": 0, "path": "two.nii.gz"}).json()["id"]
    for bad in ("Lock", "merge", "", "lock "):
        reply = client.put(f"/api/sessions/{sid}/overlap", json={"rule": bad})
        assert reply.status_code == 400, (bad, reply.text)
        error = reply.json()["error"]
        assert "overlap rule" in error and "overwrite, keep, lock" in error, error
    assert client.put(f"/api/sessions/{sid}/overlap", json={}).status_code == 422
    assert client.put("/api/sessions/nope/overlap", json={"rule": "lock"}).status_code == 404
    assert client.get(f"/api/sessions/{sid}").json()["overlap"] == "overwrite"


@pytest.mark.parametrize("method", METHODS)
def test_a_locked_label_keeps_its_voxels_and_without_the_lock_they_spill(root, tmp_path, method):
    state = tmp_path / "state"
    client = _client(root, state)
    a, b = _two_labels(client, method, lock=True)
    one, two = _mask(client, a), _mask(client, b)
    right = sphere(SHAPE, RIGHT, 7)
    assert one.sum() > 500 and two.sum() > 300
    assert not (one & two).any()  # label 2 never takes a voxel of the locked label 1
    assert (two & right).sum() > 0.9 * two.sum()  # it is the right ball
    # the same clicks without the lock: label 2 spills over the left ball
    free_a, free_b = _two_labels(client, method, lock=False)
    assert (_mask(client, free_a) & _mask(client, free_b)).sum() > 300
    # a restart: label 2 is replayed with the locked label 1 as background (label 1 is
    # loaded for it, on the step thread: one step worker is enough)
    restarted = _client(root, state, step_workers=1)
    np.testing.assert_array_equal(_mask(restarted, b), two)
    np.testing.assert_array_equal(_mask(restarted, a), one)
    # both locked (each is the other's background), reloaded: both come back, label 1
    # replayed with label 2 as background now (so its mask may differ), still apart
    _rule(restarted, b, "lock")
    again = _client(root, state, step_workers=1)
    one_again = _mask(again, a)
    assert one_again.sum() > 500 and not (one_again & _mask(again, b)).any()
    again = _client(root, state, step_workers=1)
    stepped = _step(again, b, _click("fg", RIGHT))  # a step that loads the other label
    assert stepped["steps"] == 2
    assert not (_mask(again, b) & _mask(again, a)).any()


def test_the_label_map_honours_each_sessions_rule(root, tmp_path):
    state = tmp_path / "state"
    client = _client(root, state)
    a, b = _two_labels(client, "random_walker", lock=False)  # overlapping masks
    one, two = _mask(client, a), _mask(client, b)
    both = one & two
    assert both.sum() > 300

    def label_map(name: str) -> np.ndarray:
        labels = [{"session": a, "value": 1}, {"session": b, "value": 2}]
        reply = client.post("/api/labelmap", json={"labels": labels, "name": name})
        assert reply.status_code == 200, reply.text
        return np.asarray(nib.load(state / reply.json()["folder"] / name).dataobj)

    _rule(client, a, "lock")  # label 1 keeps every voxel of its mask
    locked = label_map("locked.nii.gz")
    np.testing.assert_array_equal(locked == 1, one)
    np.testing.assert_array_equal(locked == 2, two & ~one)
    _rule(client, a, "keep")  # label 1 gives way to label 2 (overwrite) everywhere
    kept = label_map("kept.nii.gz")
    np.testing.assert_array_equal(kept == 2, two)
    np.testing.assert_array_equal(kept == 1, one & ~two)
    _rule(client, b, "lock")  # both ranks differ again: label 2 over label 1
    np.testing.assert_array_equal(label_map("b_locked.nii.gz") == 2, two)


def test_undo_then_redo_gives_the_same_mask_bit_for_bit(root, tmp_path):
    client = _client(root, tmp_path / "state")
    a, b = _two_labels(client, "geos", lock=True)
    first = _mask(client, b)
    _step(client, b, _click("fg", (RIGHT[0] + 3, RIGHT[1], RIGHT[2])))
    second = _mask(client, b)
    assert client.post(f"/api/sessions/{b}/undo").json()["steps"] == 1
    np.testing.assert_array_equal(_mask(client, b), first)
    assert client.post(f"/api/sessions/{b}/redo").json()["steps"] == 2
    np.testing.assert_array_equal(_mask(client, b), second)
    assert not (second & _mask(client, a)).any()
