"""mecca.client.RemoteSession against a real `mecca serve` (uvicorn in a thread)."""

from __future__ import annotations

import gzip
import secrets
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
sys.path.insert(0, str(Path(__file__).parent / "server"))  # the server tests' helpers

from server_images import AFFINES, CENTRE, ball, served, write_images  # noqa: E402

from mecca.client import RemoteError, RemoteSession, Server  # noqa: E402
from mecca.errors import InputError, OverwriteError  # noqa: E402
from mecca.server.settings import ServerSettings  # noqa: E402

METHOD = "random_walker"


def test_importing_the_client_loads_no_torch():
    code = (
        "import sys, mecca.client\n"
        "heavy = [m for m in ('torch', 'scipy', 'mecca.methods', 'mecca.session') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def server(root, tmp_path_factory):
    token = secrets.token_hex(24)
    state = tmp_path_factory.mktemp("state")
    settings = ServerSettings(roots=(root,), state_dir=state, methods=(METHOD,), token=token)
    with served(settings) as url:
        yield url, token


def _server_mask(url: str, token: str, sid: str) -> np.ndarray:
    """The mask as the server's own API gives it (a plain request, not the client)."""
    content, _ = Server(url, token).request("GET", f"/api/sessions/{sid}/mask.nii.gz")
    return np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(content)).dataobj)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_clicks_steps_undo_redo_reset_and_export(server, tmp_path, monkeypatch):
    url, token = server
    monkeypatch.setenv("MECCA_TOKEN", token)  # the default token
    session = RemoteSession.open("oblique.nii.gz", url=url)
    assert session.shape == ball()[1].shape and session.method == METHOD
    np.testing.assert_allclose(session.affine, AFFINES["oblique"], atol=1e-5)
    assert session.result is None and session.n_steps == 0 and not session.can_undo

    assert session.add_click("foreground", CENTRE) == ("foreground", CENTRE)
    assert session.pending == (("foreground", CENTRE),)
    first = session.step()
    assert first.step == 1 and session.n_steps == 1 and session.pending == ()
    assert session.history == ((("foreground", CENTRE),),)
    mask1 = first.mask
    np.testing.assert_array_equal(mask1, _server_mask(url, token, session.id))
    assert int(mask1.sum()) == first.mask_voxels > 0
    assert mask1.shape == session.shape
    prob = first.prob
    assert prob.shape == session.shape and prob.dtype == np.float32
    np.testing.assert_array_equal(prob > 0.5, mask1.astype(bool))
    assert _dice(mask1, ball()[1]) > 0.8

    i, j, k = CENTRE
    session.add_clicks([("bg", (i + 9, j, k)), ("bg", (i - 9, j, k))])
    second = session.step()
    mask2 = second.mask
    assert second.step == 2 and session.can_undo
    np.testing.assert_array_equal(mask2, _server_mask(url, token, session.id))
    back = session.undo()
    assert back is not None and back.step == 1 and session.can_redo
    with pytest.raises(InputError, match="no longer"):
        second.prob  # noqa: B018 - fetched on first access, and step 2 is undone
    np.testing.assert_array_equal(back.mask, mask1)  # undo gives step 1's mask bit for bit
    again = session.redo()
    assert again.step == 2 and not session.can_redo
    np.testing.assert_array_equal(again.mask, mask2)  # redo gives step 2's bit for bit
    np.testing.assert_array_equal(again.mask, _server_mask(url, token, session.id))

    out = session.export_mask(tmp_path / "mask.nii.gz")
    exported = nib.load(out)
    np.testing.assert_array_equal(np.asarray(exported.dataobj), mask2)
    np.testing.assert_allclose(exported.affine, AFFINES["oblique"], atol=1e-5)
    with pytest.raises(OverwriteError):
        session.export_mask(out)
    session.export_mask(out, force=True)
    assert session.export_on_server("liver.nii.gz")["exported"] == "liver.nii.gz"

    session.reset()
    assert session.result is None and session.n_steps == 0
    with pytest.raises(InputError):
        session.export_mask(tmp_path / "none.nii.gz")
    session.undo()  # the server's undo brings the history back after a reset
    assert session.n_steps == 2
    np.testing.assert_array_equal(session.result.mask, mask2)

    attached = RemoteSession(session.id, url=url)  # another client on the same session
    assert attached.n_steps == 2 and attached.history == session.history
    np.testing.assert_array_equal(attached.result.mask, mask2)
    rerun = session.set_method(METHOD)  # the clicks so far, rerun as one step
    assert rerun is not None and rerun.step == session.n_steps == 1 and session.can_undo
    np.testing.assert_array_equal(rerun.mask, _server_mask(url, token, session.id))
    assert session.id in [s["id"] for s in Server(url).sessions()]
    assert Server(url).info()["methods"][0]["name"] == METHOD
    session.delete()
    with pytest.raises(RemoteError, match="404"):
        session.refresh()


def test_roi_world_clicks_and_upload(server, root):
    url, token = server
    session = RemoteSession.upload(root / "lps.nii.gz", url=url, token=token, method=METHOD)
    i, j, k = CENTRE
    session.set_roi((i - 10, j - 10, k - 8), (i + 10, j + 10, k + 8))
    assert session.roi == ((i - 10, j - 10, k - 8), (i + 10, j + 10, k + 8))
    xyz = AFFINES["lps"][:3, :3] @ np.array(CENTRE, float) + AFFINES["lps"][:3, 3]
    assert session.add_click_world("fg", xyz) == ("foreground", CENTRE)
    result = session.step()
    assert result.box == session.roi
    assert session.history == ((("foreground", CENTRE),),)
    np.testing.assert_array_equal(result.mask, _server_mask(url, token, session.id))
    session.set_roi((i - 8, j - 8, k - 6), (i + 8, j + 8, k + 6), as_box=True)
    assert session.box == ((i - 8, j - 8, k - 6), (i + 8, j + 8, k + 6))
    assert session.roi == ((i - 12, j - 12, k - 9), (i + 12, j + 12, k + 9))  # + a quarter
    assert session.n_steps == 0  # the random walker takes no box prompt: nothing run yet
    session.delete()


def test_refusals(server, root, monkeypatch):
    url, token = server
    monkeypatch.delenv("MECCA_TOKEN", raising=False)
    with pytest.raises(RemoteError, match="401") as refused:
        RemoteSession.open("lps.nii.gz", url=url)
    assert refused.value.status == 401
    session = RemoteSession.open("lps.nii.gz", url=url, token=token)
    with pytest.raises(InputError):
        session.undo()  # nothing to undo
    with pytest.raises(InputError):
        session.add_clicks([("fg", CENTRE), ("fg", (999, 0, 0))])  # outside: none queued
    assert session.refresh()["pending"] == 0
    with pytest.raises(InputError, match="click kind"):
        session.add_click("lasso", CENTRE)
    with pytest.raises(RemoteError, match="404"):
        RemoteSession("no-such-session", url=url, token=token)
    with pytest.raises(RemoteError, match="cannot reach"):
        RemoteSession.open("lps.nii.gz", url="http://127.0.0.1:9", token=token)
