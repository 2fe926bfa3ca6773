"""Words for people (issue 29): the server's errors say what to do in the page's terms
(3D Slicer's on the MONAI Label routes), never in Python's; a label map opened as an
image gets a warning; the method picker names each learned method's model and what it
was trained on, and warns when that is one dataset only.

The API tests use TestClient; the browser tests drive the page in headless Chromium
(harness: ``test_page.py``) and check what a person reads in the status line.
"""

import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from server_images import AFFINES, served, write_images

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from test_page import (  # noqa: E402
    DOCS_SCREENSHOTS,
    _browser,
    _centred_ball,
    _open_image,
    _open_page,
    _wait,
)

from mecca.errors import InputError  # noqa: E402
from mecca.server.app import create_app  # noqa: E402
from mecca.server.messages import SERVER_HINTS, server_message  # noqa: E402
from mecca.server.settings import ServerSettings  # noqa: E402

CLIENT = {"X-Mecca-Client": "test"}
PYTHON_TERMS = re.compile(r"set_roi\(|\broi=|channel=|force=True|model=|\w\(\)")
"""What a page or Slicer user cannot act on: keyword arguments and call syntax."""
STATUS = "document.getElementById('status').textContent"


def _four_d(root: Path) -> None:
    data = np.random.default_rng(0).normal(size=(12, 12, 8, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), root / "two_channels.nii.gz")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    folder = write_images(tmp_path_factory.mktemp("images"))
    _four_d(folder)
    return folder


def _client(root: Path, state: Path, methods=("random_walker", "geos")) -> TestClient:
    settings = ServerSettings(roots=(root,), state_dir=state, methods=methods)
    return TestClient(create_app(settings), base_url="http://127.0.0.1", headers=CLIENT)


def _mm(ijk) -> list[float]:
    affine = AFFINES["lps"]
    return (affine[:3, :3] @ np.asarray(ijk, float) + affine[:3, 3]).tolist()


def _refused(reply) -> str:
    assert 400 <= reply.status_code < 500, (reply.status_code, reply.text)
    text = reply.json()["error"]
    assert not PYTHON_TERMS.search(text), text
    return text


def test_every_python_hint_has_page_and_slicer_words():
    for pattern, page, slicer in SERVER_HINTS:
        assert not PYTHON_TERMS.search(page) and not PYTHON_TERMS.search(slicer), pattern
    err = InputError("no ROI yet", hint="pass roi= or call set_roi() first")
    assert server_message(err) == "no ROI yet (draw an ROI box first (ROI mode, key r))"
    assert "set_roi" not in server_message(err, slicer=True)


def test_common_errors_come_back_in_the_page_words(root, tmp_path):
    client = _client(root, tmp_path)
    four_d = client.post("/api/sessions", json={"root": 0, "path": "two_channels.nii.gz"})
    assert "open a 3D image, or one channel of it" in _refused(four_d)
    sid = client.post("/api/sessions", json={"root": 0, "path": "lps.nii.gz"}).json()["id"]
    nothing = client.post(f"/api/sessions/{sid}/step")
    assert "click on the object, or draw an ROI box (ROI mode, key r)" in _refused(nothing)
    assert "press Propose" in _refused(
        client.post(f"/api/sessions/{sid}/accept", json={"index": 0})
    )
    assert "Method list" in _refused(client.post(f"/api/sessions/{sid}/propose", json={"k": 2}))
    corners = [_mm((14, 12, 6)), _mm((26, 24, 14))]
    assert client.put(f"/api/sessions/{sid}/roi", json={"corners_mm": corners}).status_code == 200
    outside = {"kind": "foreground", "xyz_mm": _mm((3, 3, 3))}
    refused = _refused(client.post(f"/api/sessions/{sid}/clicks", json={"clicks": [outside]}))
    assert "draw a larger ROI box (ROI mode, key r)" in refused
    assert client.get(f"/api/sessions/{sid}/mask.nii.gz").status_code == 400
    python = client.post(
        f"/api/sessions/{sid}/clicks",
        json={"clicks": [outside]},
        headers={"X-Mecca-Client": "mecca.client"},  # mecca.client: its users call set_roi()
    )
    assert "set_roi() a larger box" in python.json()["error"]


def test_slicer_gets_its_own_words(root, tmp_path):
    client = _client(root, tmp_path)
    data = (root / "two_channels.nii.gz").read_bytes()
    reply = client.put(
        "/session/", files={"files": ("two_channels.nii.gz", data, "application/octet-stream")}
    )
    assert "load a 3D volume, or one channel of it" in _refused(reply)


def test_a_label_map_opened_as_an_image_is_answered_with_a_warning(root, tmp_path):
    client = _client(root, tmp_path)
    image = client.post("/api/sessions", json={"root": 0, "path": "lps.nii.gz"}).json()
    assert image["warning"] is None
    label = client.post("/api/sessions", json={"root": 0, "path": "lps_label.nii.gz"}).json()
    assert "this file looks like a label map" in label["warning"]
    assert "values 0, 1" in label["warning"]
    upload = client.post(
        "/api/sessions/upload?filename=up_label.nii.gz",
        content=(root / "lps_label.nii.gz").read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
    ).json()
    assert "looks like a label map" in upload["warning"]


def test_info_names_each_model_and_what_it_was_trained_on(root, tmp_path):
    info = _client(root, tmp_path, ("random_walker", "intercnn", "generalist")).get("/api/info")
    methods = {m["name"]: m for m in info.json()["methods"]}
    assert methods["random_walker"]["model"] is None and methods["random_walker"]["any_target"]
    assert methods["intercnn"]["model"] == "intercnn_hippocampus"
    assert methods["intercnn"]["trained_on"] == "hippocampus MRI"
    assert methods["intercnn"]["any_target"] is False
    assert methods["generalist"]["any_target"] is True
    assert "for any target" in methods["generalist"]["trained_on"]


@pytest.fixture(scope="module")
def words_server(tmp_path_factory):
    pytest.importorskip("uvicorn")
    images = tmp_path_factory.mktemp("images")
    _centred_ball(images)  # ball.nii.gz and ball_label.nii.gz
    _four_d(images)
    settings = ServerSettings(
        roots=(images,),
        state_dir=tmp_path_factory.mktemp("state"),
        methods=("random_walker", "intercnn", "geos"),
    )
    with served(settings) as url:
        yield url


def test_a_refused_click_and_a_label_map_are_told_in_the_page_words(words_server):
    sync_api = _browser()
    with sync_api.sync_playwright() as p:
        browser, page, errors = _open_page(p, words_server)
        page.click("#files li[data-path='two_channels.nii.gz']")
        _wait(page, f"{STATUS}.startsWith('Could not open')")
        assert "open a 3D image, or one channel of it" in page.text_content("#status")
        _open_image(page, "ball_label.nii.gz", "geos")
        said = page.text_content("#status")
        assert "Warning: this file looks like a label map" in said, said
        cx, cy, side = _open_image(page, "ball.nii.gz", "geos")
        assert "Warning" not in page.text_content("#status")
        page.check("input[value=roi]")
        page.mouse.click(cx - 0.3 * side, cy - 0.3 * side)
        page.mouse.click(cx + 0.3 * side, cy + 0.3 * side)
        _wait(page, "window.mecca.session.roi !== null && !window.mecca.busy")
        # another tab on this session draws a small ROI away from the centre: this tab's
        # next click, inside the ROI it shows, is refused by the server
        sid = page.evaluate("window.mecca.sid")
        small = [[40.0, 30.0, -5.0], [45.0, 35.0, 41.0]]  # voxels i 2-7, j 5-10
        moved = page.request.put(
            f"{words_server}/api/sessions/{sid}/roi",
            data={"corners_mm": small},
            headers={"X-Mecca-Client": "other tab"},
        )
        assert moved.ok, moved.text()
        page.check("input[value=foreground]")
        page.mouse.click(cx, cy)
        _wait(page, f"{STATUS}.startsWith('Not done')")
        said = page.text_content("#status")
        assert "draw a larger ROI box (ROI mode, key r)" in said, said
        assert not PYTHON_TERMS.search(said), said
        browser.close()
    assert not errors, errors


def test_the_picker_names_the_model_and_warns_before_it_runs(words_server, tmp_path):
    sync_api = _browser()
    with sync_api.sync_playwright() as p:
        browser, page, errors = _open_page(p, words_server)
        options = page.eval_on_selector_all("#method option", "os => os.map(o => o.textContent)")
        assert any("intercnn_hippocampus (hippocampus MRI)" in o for o in options), options
        assert "no trained model" in page.text_content("#methodNote")  # random_walker
        page.select_option("#method", "intercnn")
        note = page.text_content("#methodNote")
        assert note == (
            "intercnn runs intercnn_hippocampus, trained on hippocampus MRI only: "
            "on another anatomy expect poor results."
        )
        assert page.get_attribute("#methodNote", "class") == "warn"
        _open_image(page, "ball.nii.gz", "intercnn")  # the note stays with the session's method
        assert page.text_content("#methodNote") == note
        assert "(model intercnn_hippocampus)" in page.text_content("#info")
        shots = DOCS_SCREENSHOTS if os.environ.get("MECCA_SCREENSHOTS") == "1" else tmp_path
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "page_models.png"))
        browser.close()
    assert not errors, errors
