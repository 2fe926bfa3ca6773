"""The page's labels with overlap rules (issue 30, item 4), as a person uses them in
headless Chromium (see ``test_page.py`` for the harness): label 1 on one of two touching
balls, locked with the Labels panel's select; label 2 on the other ball never takes a
voxel of label 1; the exported label map holds both, label 1 intact."""

import contextlib
import gzip
import json
import os
import urllib.request

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("fastapi")
from server_images import served  # noqa: E402
from test_page import (  # noqa: E402
    DOCS_SCREENSHOTS,
    LPS_AFFINE,
    SHAPE,
    _browser,
    _open_image,
    _open_page,
    _roi_then_foreground_click,
    _wait,
)

from conftest import sphere  # noqa: E402
from mecca.io import Volume, save_volume  # noqa: E402
from mecca.server.settings import ServerSettings  # noqa: E402

CENTRES = ((18, 24, 12), (30, 24, 12))
"""Two balls of radius 7, 12 voxels apart along i: they touch, equally bright."""
DX = 0.125
"""Each ball's centre from the canvas centre, as a share of the canvas side (6 of 48 mm)."""
STATUS = "document.getElementById('status').textContent"


@contextlib.contextmanager
def touching_balls_served(tmp_path_factory, methods: tuple[str, ...]):
    """A server whose root holds one image of the two touching balls: (url, state folder)."""
    pytest.importorskip("uvicorn")
    root = tmp_path_factory.mktemp("images")
    balls = sphere(SHAPE, CENTRES[0], 7) | sphere(SHAPE, CENTRES[1], 7)
    noise = np.random.default_rng(2).normal(0, 0.2, SHAPE)
    image = (balls * 2.0 + noise).astype(np.float32)
    save_volume(Volume(image, LPS_AFFINE), root / "touching.nii.gz")
    state = tmp_path_factory.mktemp("state")
    settings = ServerSettings(roots=(root,), state_dir=state, methods=methods)
    with served(settings) as url:
        yield url, state


@pytest.fixture(scope="module")
def touching_server(tmp_path_factory):
    with touching_balls_served(tmp_path_factory, ("geos", "random_walker")) as served_at:
        yield served_at


def _mask(url: str, sid: str) -> np.ndarray:
    """A session's current mask, as the API serves it."""
    asked = urllib.request.Request(
        f"{url}/api/sessions/{sid}/mask.nii.gz", headers={"X-Mecca-Client": "test"}
    )
    with urllib.request.urlopen(asked, timeout=30) as reply:
        data = gzip.decompress(reply.read())
    return np.asarray(nib.Nifti1Image.from_bytes(data).dataobj) > 0


def test_a_person_locks_label_1_and_label_2_stays_out_of_it(touching_server, tmp_path):
    sync_api = _browser()
    url, state = touching_server
    with sync_api.sync_playwright() as p:
        browser, page, errors = _open_page(p, url)
        cx, cy, side = _open_image(page, "touching.nii.gz", "geos")
        assert page.is_enabled("#overlap") and page.input_value("#overlap") == "overwrite"
        # label 1: the ball left on screen (a background click on the right one)
        _roi_then_foreground_click(page, cx, cy, side, 0.45, cx - DX * side)
        page.keyboard.press("b")
        page.mouse.click(cx + DX * side, cy)
        _wait(page, "window.mecca.session.steps === 2 && !window.mecca.busy", timeout=60000)
        page.select_option("#overlap", "lock")
        _wait(page, f"{STATUS}.startsWith('Label 1 is locked') && !window.mecca.busy")
        assert "other labels will not take its voxels" in page.text_content("#status")
        assert page.text_content("#labels").strip() == "label 1: geos, 2 steps, locked"
        first = page.evaluate("window.mecca.sid")
        # label 2: the ball right on screen, a foreground click only
        page.click("#newLabel")
        _wait(page, "window.mecca.labels.length === 2 && !window.mecca.busy")
        assert page.input_value("#overlap") == "overwrite"  # the new label's own rule
        page.keyboard.press("r")
        _roi_then_foreground_click(page, cx, cy, side, 0.45, cx + DX * side)
        second = page.evaluate("window.mecca.sid")
        assert "label 1 outline" in page.evaluate("window.mecca.overlays")
        lines = page.evaluate(
            "[...document.querySelectorAll('#labels label')].map((l) => l.textContent)"
        )
        assert lines == [" label 1: geos, 2 steps, locked", " label 2: geos, 1 step, overwrites"]
        shots = DOCS_SCREENSHOTS if os.environ.get("MECCA_SCREENSHOTS") == "1" else tmp_path
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "page_labels_lock.png"))
        page.fill("#labelMapName", "locked.nii.gz")
        page.click("#exportLabels")
        _wait(page, f"{STATUS}.startsWith('Exported')")
        browser.close()
    assert not errors, errors
    saved = {
        sid: json.loads((state / "sessions" / sid / "session.json").read_text())
        for sid in (first, second)
    }
    assert saved[first]["overlap"] == "lock" and saved[second]["overlap"] == "overwrite"
    assert saved[first]["group"] == saved[second]["group"] == first
    one, two = _mask(url, first), _mask(url, second)
    balls = [sphere(SHAPE, c, 7) for c in CENTRES]
    mine = max(range(2), key=lambda b: (one & balls[b]).sum())  # the ball left on screen
    assert (one & balls[mine]).sum() > 0.8 * one.sum() > 400
    assert two.sum() > 300 and (two & balls[1 - mine]).sum() > 0.9 * two.sum()
    assert not (one & two).any()  # label 2 never takes a voxel of the locked label 1
    (path,) = (state / "exports" / "labelmaps" / first).glob("locked.nii.gz")
    written = nib.load(path)
    np.testing.assert_allclose(written.affine, LPS_AFFINE, atol=1e-6)
    data = np.asarray(written.dataobj)
    assert set(np.unique(data)) == {0, 1, 2}
    np.testing.assert_array_equal(data == 1, one)  # label 1 intact
    np.testing.assert_array_equal(data == 2, two)
