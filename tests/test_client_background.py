"""mecca.client.RemoteSession.set_background against a real `mecca serve` (uvicorn in a
thread): the server's masks never hold the given voxels, None clears it, and bad masks
are refused (here first, and by the server)."""

from __future__ import annotations

import gzip
import secrets
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
sys.path.insert(0, str(Path(__file__).parent / "server"))  # the server tests' helpers

from server_images import served  # noqa: E402

from conftest import sphere  # noqa: E402
from mecca.client import RemoteSession  # noqa: E402
from mecca.errors import InputError  # noqa: E402
from mecca.io import Volume, save_volume  # noqa: E402
from mecca.server.settings import ServerSettings  # noqa: E402

SHAPE = (48, 32, 20)
LEFT, RIGHT = (17, 16, 10), (29, 16, 10)
"""Two touching balls of radius 7: a click in one spills into the other."""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    balls = sphere(SHAPE, LEFT, 7) | sphere(SHAPE, RIGHT, 7)
    noise = np.random.default_rng(0).normal(0, 0.2, SHAPE)
    image = (balls * 2.0 + noise).astype(np.float32)
    save_volume(Volume(image, np.diag([1.0, 1.0, 2.0, 1.0])), root / "two.nii.gz")
    token = secrets.token_hex(24)
    state = tmp_path_factory.mktemp("state")
    settings = ServerSettings(
        roots=(root,), state_dir=state, methods=("random_walker",), token=token
    )
    with served(settings) as url:
        yield url, token


def test_set_background_keeps_its_voxels_out_and_none_clears_it(server):
    url, token = server
    right = sphere(SHAPE, RIGHT, 7) & ~sphere(SHAPE, LEFT, 7)
    free = RemoteSession.open("two.nii.gz", url=url, token=token)
    free.add_click("foreground", LEFT)
    assert (free.step().mask.astype(bool) & right).sum() > 100  # it spills

    session = RemoteSession.open("two.nii.gz", url=url, token=token)
    assert session.state["background"] is False
    session.set_background(right)  # a bool mask
    assert session.state["background"] is True and session.n_steps == 0
    session.add_click("foreground", LEFT)
    first = session.step()
    assert not (first.mask.astype(bool) & right).any()
    assert first.mask.sum() > 500
    session.set_background(None)  # cleared: the current result stays valid
    assert session.state["background"] is False and session.result is first
    assert not (first.mask.astype(bool) & right).any()
    session.undo()
    session.add_click("foreground", LEFT)
    assert (session.step().mask.astype(bool) & right).sum() > 100  # spills again
    session.set_background(right.astype(np.uint8))  # 0/1 integers do too
    assert session.state["background"] is True


def test_bad_masks_are_refused(server):
    url, token = server
    session = RemoteSession.open("two.nii.gz", url=url, token=token)
    with pytest.raises(InputError, match="not on the image grid"):
        session.set_background(np.zeros((4, 4, 4), bool))
    with pytest.raises(InputError, match="only 0 and 1"):
        session.set_background(np.full(SHAPE, 2, np.uint8))
    # what the server says to a body the client would not send (its 400: InputError)
    with pytest.raises(InputError, match="holds 10 bytes"):
        session.server.request(
            "PUT",
            f"/api/sessions/{session.id}/background",
            data=gzip.compress(bytes(10)),
            headers={"Content-Type": "application/octet-stream"},
        )
    assert session.refresh()["background"] is False
