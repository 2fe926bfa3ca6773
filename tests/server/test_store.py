"""The session store under failure: step deadlines, broken methods, crashes, full or
read-only disks, racing deletes, and the bounds on sessions and memory."""

import errno
import gzip
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from server_images import AFFINES, CENTRE, SHAPE, ball

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from mecca import io as mecca_io  # noqa: E402
from mecca.io import Volume, save_volume  # noqa: E402
from mecca.methods.classical import RandomWalkerMethod  # noqa: E402
from mecca.server import sessions as sessions_module  # noqa: E402
from mecca.server.app import create_app  # noqa: E402
from mecca.server.settings import ServerSettings  # noqa: E402

AFFINE = AFFINES["lps"]
HEADERS = {"X-Mecca-Client": "test"}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for seed in range(3):
        image, _ = ball(seed)
        save_volume(Volume(image, AFFINE), folder / f"ball{seed}.nii.gz")
    save_volume(Volume(np.full(SHAPE, 7.0, np.float32), AFFINE), folder / "flat.nii.gz")
    return folder


def _client(root: Path, state: Path, **kw) -> TestClient:
    settings = ServerSettings(
        roots=(root,), state_dir=state, methods=("random_walker", "geos"), **kw
    )
    return TestClient(create_app(settings), base_url="http://127.0.0.1", headers=HEADERS)


def _ras(ijk) -> list[float]:
    return (AFFINE[:3, :3] @ np.asarray(ijk, float) + AFFINE[:3, 3]).tolist()


FG = {"kind": "foreground", "xyz_mm": _ras(CENTRE)}
BG = {"kind": "background", "xyz_mm": _ras((3, 3, 3))}


def _open(client: TestClient, name: str = "ball0.nii.gz", method: str = "random_walker") -> str:
    reply = client.post("/api/sessions", json={"root": 0, "path": name, "method": method})
    assert reply.status_code == 200, reply.text
    return reply.json()["id"]


def _click(client: TestClient, sid: str, *clicks: dict):
    return client.post(f"/api/sessions/{sid}/clicks", json={"clicks": list(clicks or (FG, BG))})


def _mask(client: TestClient, sid: str) -> np.ndarray:
    reply = client.get(f"/api/sessions/{sid}/mask.nii.gz")
    assert reply.status_code == 200, reply.text
    return np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(reply.content)).dataobj)


@dataclass
class Slow(RandomWalkerMethod):
    """The random walker after a pause (a step that runs past the deadline)."""

    pause_s: float = 3.0
    release: threading.Event | None = None
    """Set to end the pause early."""

    def from_seeds(self, crop, seeds, extra):
        (self.release or threading.Event()).wait(self.pause_s)
        return super().from_seeds(crop, seeds, extra)


@dataclass
class Broken(RandomWalkerMethod):
    """A method whose probability is NaN (what a solver on NaN weights gives)."""

    def from_seeds(self, crop, seeds, extra):
        prob, extra = super().from_seeds(crop, seeds, extra)
        return np.full_like(prob, np.nan), extra


def test_random_walker_on_a_flat_roi_finishes_with_a_finite_mask(root, tmp_path):
    # scikit-image's weights are NaN on a flat image: the solver then never converged,
    # holding the lock every session waited on
    client = _client(root, tmp_path / "state", step_timeout_s=30)
    sid = _open(client, "flat.nii.gz")
    replies = []
    worker = threading.Thread(target=lambda: replies.append(_click(client, sid)), daemon=True)
    worker.start()
    worker.join(60)
    assert replies, "the step on a flat ROI did not finish"
    assert replies[0].status_code == 200, replies[0].text
    assert _mask(client, sid)[CENTRE] == 1


def test_a_step_past_its_deadline_blocks_no_other_session_and_loses_nothing(root, tmp_path):
    client = _client(root, tmp_path / "state", step_timeout_s=5.0)
    server = client.app.state.server
    release = threading.Event()
    server._methods["geos"] = Slow(pause_s=120.0, release=release)  # until released
    try:
        slow, fast = _open(client, "ball0.nii.gz", "geos"), _open(client, "ball1.nii.gz")
        assert _click(client, fast).status_code == 200
        done: dict[str, float] = {}
        replies = {}

        def slow_click() -> None:
            replies["slow"] = _click(client, slow)
            done["slow"] = time.monotonic()

        worker = threading.Thread(target=slow_click)
        worker.start()
        time.sleep(0.2)
        other = _click(client, fast)  # another session, while the slow step runs
        done["other"] = time.monotonic()
        worker.join()
        assert other.status_code == 200 and done["other"] < done["slow"]
        assert replies["slow"].status_code == 503
        assert "longer than 5 s" in replies["slow"].json()["error"]
        server._methods["geos"] = Slow(pause_s=0.0)  # what the reload below builds on
        state = client.get(f"/api/sessions/{slow}").json()  # back at its saved state
        assert state["steps"] == 0 and state["pending"] == 0
        again = _click(client, slow)
        assert again.status_code == 200, again.text
    finally:
        release.set()  # the abandoned step ends (it works on a dropped copy)


def test_a_method_giving_nan_answers_422_and_keeps_the_session(root, tmp_path):
    client = _client(root, tmp_path / "state")
    server = client.app.state.server
    server._methods["geos"] = Broken()
    sid = _open(client, method="geos")
    reply = _click(client, sid)
    assert reply.status_code == 422 and "non-finite" in reply.json()["error"]
    server._methods["geos"] = RandomWalkerMethod()  # what the reload builds on
    assert client.get(f"/api/sessions/{sid}").json()["steps"] == 0
    assert _click(client, sid).status_code == 200
    before = _mask(client, sid)
    server.store.get(sid).session.predictor.method = Broken()
    reply = _click(client, sid, FG)
    assert reply.status_code == 422 and "non-finite" in reply.json()["error"]
    state = client.get(f"/api/sessions/{sid}").json()
    assert state["steps"] == 1 and state["pending"] == 0
    np.testing.assert_array_equal(_mask(client, sid), before)


def test_after_a_crash_the_download_is_the_mask_of_the_saved_state(root, tmp_path):
    state_dir = tmp_path / "state"
    client = _client(root, state_dir)
    sid = _open(client)
    assert _click(client, sid).status_code == 200
    first = _mask(client, sid)
    assert _click(client, sid, {"kind": "background", "xyz_mm": _ras(CENTRE)}).status_code == 200
    second = _mask(client, sid)
    assert not np.array_equal(first, second)
    folder = state_dir / "sessions" / sid
    # what a kill between the manifest and the mask write leaves: the older mask on disk
    mecca_io.save_mask(first, mecca_io.load(folder / "image.nii.gz"), folder / "mask.nii.gz",
                       force=True)
    restarted = _client(root, state_dir)
    assert restarted.get(f"/api/sessions/{sid}").json()["steps"] == 2
    np.testing.assert_array_equal(_mask(restarted, sid), second)
    on_disk = np.asarray(nib.load(folder / "mask.nii.gz").dataobj)
    np.testing.assert_array_equal(on_disk, second)  # rewritten on reload, not only served


def test_a_kill_before_the_first_mask_was_written_leaves_no_500(root, tmp_path):
    state_dir = tmp_path / "state"
    client = _client(root, state_dir)
    sid = _open(client)
    assert _click(client, sid).status_code == 200
    mask = _mask(client, sid)
    (state_dir / "sessions" / sid / "mask.nii.gz").unlink()  # killed before the writer ran
    np.testing.assert_array_equal(_mask(_client(root, state_dir), sid), mask)
    other = _open(client)  # no step at all: a clear 400, not a 500
    reply = _client(root, state_dir).get(f"/api/sessions/{other}/mask.nii.gz")
    assert reply.status_code == 400 and "no step" in reply.json()["error"]


def test_a_failed_save_rolls_the_step_back_and_says_so(root, tmp_path, monkeypatch):
    client = _client(root, tmp_path / "state")
    sid = _open(client)
    assert _click(client, sid).status_code == 200

    def disk_full(path, write):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(sessions_module, "atomic_write", disk_full)
        reply = _click(client, sid, FG)
    assert reply.status_code == 507 and "not kept" in reply.json()["error"]
    assert client.get(f"/api/sessions/{sid}").json()["steps"] == 1  # memory = disk
    restarted = _client(root, tmp_path / "state")
    assert restarted.get(f"/api/sessions/{sid}").json()["steps"] == 1
    assert _click(client, sid, FG).status_code == 200


def test_a_delete_on_a_read_only_state_folder_fails_and_keeps_the_session(
    root, tmp_path, monkeypatch
):
    client = _client(root, tmp_path / "state")
    sid = _open(client)

    def read_only(src, dst):
        raise OSError(errno.EROFS, "Read-only file system")

    with monkeypatch.context() as patch:
        patch.setattr(sessions_module.os, "rename", read_only)
        reply = client.delete(f"/api/sessions/{sid}")
    assert reply.status_code == 507 and "unchanged" in reply.json()["error"]
    assert client.get(f"/api/sessions/{sid}").status_code == 200
    assert client.delete(f"/api/sessions/{sid}").status_code == 200
    assert client.get(f"/api/sessions/{sid}").status_code == 404
    assert not (tmp_path / "state" / "sessions" / sid).exists()


def test_a_delete_racing_a_step_leaves_no_folder(root, tmp_path):
    client = _client(root, tmp_path / "state")
    server = client.app.state.server
    server._methods["geos"] = Slow(pause_s=1.0)
    sid = _open(client, method="geos")
    worker = threading.Thread(target=lambda: _click(client, sid))
    worker.start()
    time.sleep(0.3)
    assert client.delete(f"/api/sessions/{sid}").status_code == 200
    worker.join()
    time.sleep(0.5)  # the mask writer, had it been queued
    assert not (tmp_path / "state" / "sessions" / sid).exists()
    assert client.get(f"/api/sessions/{sid}").status_code == 404


def test_loaded_sessions_are_bounded_least_recently_used_unloaded(root, tmp_path):
    client = _client(root, tmp_path / "state", max_loaded_sessions=2)
    store = client.app.state.server.store
    ids = [_open(client, f"ball{n}.nii.gz") for n in range(3)]
    assert _click(client, ids[0]).status_code == 200
    assert set(store.loaded()) == {ids[0], ids[2]}  # ids[1] was the least recently used
    assert client.get(f"/api/sessions/{ids[1]}").json()["steps"] == 0  # reloaded from disk
    assert len(store.loaded()) == 2


def test_memory_and_session_bounds_answer_503(root, tmp_path):
    image_bytes = 4 * int(np.prod(SHAPE))
    client = _client(root, tmp_path / "state", max_memory_bytes=image_bytes)
    reply = client.post("/api/sessions", json={"root": 0, "path": "ball0.nii.gz"})
    assert reply.status_code == 503 and "full" in reply.json()["error"]
    client = _client(root, tmp_path / "other", max_sessions=2)
    _open(client), _open(client)
    reply = client.post("/api/sessions", json={"root": 0, "path": "ball0.nii.gz"})
    assert reply.status_code == 503 and "maximum of 2 sessions" in reply.json()["error"]


def test_a_restart_removes_what_a_killed_server_left(root, tmp_path):
    state_dir = tmp_path / "state"
    sid = _open(_client(root, state_dir))
    folder = state_dir / "sessions" / sid
    (folder / ".mask.nii.gz.tmp123.nii.gz").write_bytes(b"half")
    (state_dir / "sessions" / f".deleted-{sid}").mkdir()
    (state_dir / "uploads" / "upload-x").mkdir()  # an upload being read when killed
    _client(root, state_dir)
    assert not (state_dir / "uploads" / "upload-x").exists()
    assert not (folder / ".mask.nii.gz.tmp123.nii.gz").exists()
    assert not (state_dir / "sessions" / f".deleted-{sid}").exists()
    assert (folder / "session.json").exists()


def test_atomic_write_flushes_the_file_and_its_folder(tmp_path, monkeypatch):
    synced = []
    real = mecca_io.os.fsync
    monkeypatch.setattr(mecca_io.os, "fsync", lambda fd: synced.append(fd) or real(fd))
    mecca_io.atomic_write(tmp_path / "a.json", lambda tmp: tmp.write_text("{}"))
    assert len(synced) == 2 and (tmp_path / "a.json").read_text() == "{}"
