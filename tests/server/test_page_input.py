"""The page as an annotator uses it (issue 29): no click lost, a true status line, input
drawn in the viewer, three planes and 3D, nothing destroyed unasked, sessions resumed.

Each test drives the real page in headless Chromium (see ``test_page.py`` for the
harness) and checks what a person sees: the page's DOM, NiiVue's drawing layer, the
session the server saved.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
from server_images import served  # noqa: E402
from test_page import (  # noqa: E402
    DOCS_SCREENSHOTS,
    DRAWN_AT_CROSSHAIR,
    _browser,
    _centred_ball,
    _open_image,
    _open_page,
    _wait,
)

from conftest import sphere  # noqa: E402
from mecca.io import Volume, save_volume  # noqa: E402
from mecca.server.settings import ServerSettings  # noqa: E402

BURST = 10
COLOURS_IN_TILES = """([lo, hi]) => {
  // pixels on screen whose colour lies in [lo, hi], per view tile (axCorSag: 0 axial,
  // 1 coronal, 2 sagittal, 4 the 3D render), read back right after a draw
  nv.drawScene();
  const gl = nv.gl, w = gl.drawingBufferWidth, h = gl.drawingBufferHeight;
  const px = new Uint8Array(w * h * 4);
  gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, px);
  const out = {};
  for (const s of nv.screenSlices) {
    const [l, t, sw, sh] = s.leftTopWidthHeight.map(Math.round);
    let n = 0;
    for (let y = Math.max(0, t); y < Math.min(h, t + sh); y++) {
      for (let x = Math.max(0, l); x < Math.min(w, l + sw); x++) {
        const o = ((h - 1 - y) * w + x) * 4;
        if ([0, 1, 2].every((c) => px[o + c] >= lo[c] && px[o + c] <= hi[c])) n++;
      }
    }
    out[s.axCorSag] = (out[s.axCorSag] || 0) + n;
  }
  return out;
}"""
CYAN = [[0, 190, 190], [70, 255, 255]]
"""A foreground click's marker (drawn at 80 % opacity over the grey image)."""
MAGENTA = [[190, 0, 190], [255, 70, 255]]
"""A background click's marker."""
LABEL_COUNT = "(label) => nv.drawBitmap.reduce((n, v) => n + (v === label), 0)"
STATUS = "document.getElementById('status').textContent"


@pytest.fixture(scope="module")
def ball_server(tmp_path_factory):
    pytest.importorskip("uvicorn")
    root = tmp_path_factory.mktemp("images")
    _, gt = _centred_ball(root)
    state = tmp_path_factory.mktemp("state")
    settings = ServerSettings(roots=(root,), state_dir=state, methods=("random_walker", "geos"))
    with served(settings) as url:
        yield url, gt, state


def _saved(state: Path, sid: str) -> dict:
    return json.loads((state / "sessions" / sid / "session.json").read_text())


def _idle(page) -> None:
    """Wait until the page has nothing queued and nothing in flight."""
    _wait(page, "!window.mecca.busy && !(window.mecca.queue && window.mecca.queue.length)", 90000)


def _roi(page, cx: float, cy: float, side: float, half: float = 0.3) -> None:
    page.check("input[value=roi]")
    page.mouse.click(cx - half * side, cy - half * side)
    page.mouse.click(cx + half * side, cy + half * side)
    _wait(page, "window.mecca.session.roi !== null && !window.mecca.busy")


def test_a_burst_of_quick_clicks_loses_none(ball_server):
    """10 foreground clicks as fast as a mouse gives them, while steps run: every one
    reaches the server's session (queued clicks go as the next, batched step), and the
    busy indicator shows meanwhile."""
    sync_api = _browser()
    url, _, state = ball_server
    with sync_api.sync_playwright() as p:
        browser, page, errors = _open_page(p, url)
        cx, cy, side = _open_image(page, "ball.nii.gz", "random_walker")
        _roi(page, cx, cy, side)
        page.evaluate(
            """() => { window.busySeen = 0; const busy = document.getElementById('busy');
            new MutationObserver(() => { if (!busy.hidden) window.busySeen++; })
              .observe(busy, { attributes: true, childList: true }); }"""
        )
        page.check("input[value=foreground]")
        for n in range(BURST):
            dx, dy = (n % 5 - 2) * 0.1 * side, (n // 5 - 0.5) * 0.2 * side
            page.mouse.click(cx + dx, cy + dy)
        _idle(page)
        page.wait_for_timeout(1000)
        _idle(page)
        saved = _saved(state, page.evaluate("window.mecca.sid"))
        busy_seen = page.evaluate("window.busySeen")
        said = page.evaluate(STATUS)
        assert page.is_hidden("#busy")
        browser.close()
    clicks = [c for step in saved["store"]["steps"] for c in step] + saved["store"]["pending"]
    dropped = BURST - len(clicks)
    print(f"burst of {BURST} clicks: {dropped} dropped, {len(saved['store']['steps'])} steps")
    assert not errors, errors
    assert dropped == 0, saved["store"]
    assert len(saved["store"]["steps"]) < BURST and "clicks in one step" in said, said
    assert busy_seen > 0


def test_no_input_is_taken_before_the_image_is_drawn(ball_server):
    """Clicks and scrolls on the viewer while the image loads are ignored (NiiVue's own
    handlers failed on a half-loaded volume: "reading 'dimsRAS'")."""
    sync_api = _browser()
    url, _, state = ball_server
    with sync_api.sync_playwright() as p:
        browser, page, errors = _open_page(p, url)
        box = page.locator("#gl").bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.evaluate(  # the image arrives 2 s late, as a large one over a slow link
            """() => { const plain = window.fetch;
            window.fetch = async (...a) => { if (String(a[0]).endsWith('image.nii.gz'))
              await new Promise((r) => setTimeout(r, 2000)); return plain(...a); }; }"""
        )
        page.check("input[value=foreground]")
        page.mouse.click(cx, cy)  # nothing open yet
        page.click("#files li[data-path='ball.nii.gz']")
        _wait(page, "window.mecca.loading === true")
        for n in range(8):  # while it opens and loads
            page.mouse.click(cx + 3 * n, cy)
            page.mouse.wheel(0, 100)
        assert page.evaluate("window.mecca.loaded") is False and page.is_visible("#busy")
        _wait(page, "window.mecca.loaded === true")
        sid = page.evaluate("window.mecca.sid")
        page.wait_for_timeout(500)
        browser.close()
    assert not errors, errors
    saved = _saved(state, sid)["store"]
    assert saved["steps"] == [] and saved["pending"] == []


def test_the_status_line_says_what_is_now_the_case(ball_server, tmp_path):
    """After undo, reset, a method switch and a failed upload the status line tells the
    state that holds now (never a stale "Uploading...")."""
    sync_api = _browser()
    url, _, _ = ball_server
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not an image at all")
    with sync_api.sync_playwright() as p:
        browser, page, errors = _open_page(p, url)
        cx, cy, side = _open_image(page, "ball.nii.gz", "geos")
        assert page.evaluate(STATUS).startswith("Opened ball.nii.gz")
        _roi(page, cx, cy, side)
        page.check("input[value=foreground]")
        page.mouse.click(cx, cy)
        _idle(page)
        page.check("input[value=background]")
        page.mouse.click(cx + 0.25 * side, cy + 0.25 * side)
        _idle(page)
        assert page.evaluate(STATUS).startswith("step 2: geos: 2 steps")
        page.click("#undo")
        _idle(page)
        assert page.evaluate(STATUS).startswith("Undone step 2. geos: 1 step,")
        page.click("#reset")
        _idle(page)
        said = page.evaluate(STATUS)
        assert said.startswith("Reset: no clicks, the ROI stays; Undo brings 1 step back"), said
        page.click("#undo")
        _idle(page)
        assert page.evaluate(STATUS).startswith("Undone: back to geos with 1 step"), said
        page.select_option("#method", "random_walker")
        _idle(page)
        said = page.evaluate(STATUS)
        assert said.startswith("Method random_walker: 1 click rerun as one step"), said
        assert "Undo: back to geos" in said
        page.set_input_files("#upload", str(bad))
        _wait(page, f"{STATUS}.startsWith('Could not open the upload broken.nii.gz')")
        said = page.evaluate(STATUS)
        assert "Still on the previous image: random_walker: 1 step," in said, said
        assert page.evaluate("window.mecca.loaded") is True  # clicks are taken again
        browser.close()
    assert not errors, errors


def _shots(tmp_path: Path) -> Path:
    shots = DOCS_SCREENSHOTS if os.environ.get("MECCA_SCREENSHOTS") == "1" else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    return shots


def test_the_roi_and_every_click_are_drawn_in_every_plane(ball_server, tmp_path):
    """The first ROI corner, then the box, a background and a foreground click show in
    NiiVue's drawing layer with their own colours; in the three-plane view each click's
    marker is on screen in the axial, coronal and sagittal planes through it."""
    sync_api = _browser()
    url, _, _ = ball_server
    with sync_api.sync_playwright() as p:
        browser, page, errors = _open_page(p, url)
        cx, cy, side = _open_image(page, "ball.nii.gz", "geos")
        page.check("input[value=roi]")
        page.mouse.click(cx - 0.3 * side, cy - 0.3 * side)
        assert page.evaluate(LABEL_COUNT, 21) > 0  # the first corner, before the box exists
        page.mouse.click(cx + 0.3 * side, cy + 0.3 * side)
        _idle(page)
        assert page.evaluate(LABEL_COUNT, 20) > 0 and page.evaluate(LABEL_COUNT, 21) > 0
        page.check("input[value=edge]")  # geos takes no edge points: said, not sent
        page.mouse.click(cx + 0.1 * side, cy)
        assert page.evaluate(STATUS).startswith("Click not sent: geos takes no edge clicks")
        page.check("input[value=background]")
        page.mouse.click(cx + 0.22 * side, cy + 0.22 * side)
        page.check("input[value=foreground]")
        page.mouse.click(cx, cy)  # last: NiiVue's crosshair (the planes shown) is here
        _idle(page)
        assert page.evaluate("window.mecca.session.clicks.length") == 2
        assert page.evaluate(LABEL_COUNT, 22) > 0 and page.evaluate(LABEL_COUNT, 23) > 0
        assert page.evaluate(DRAWN_AT_CROSSHAIR) == 22  # the marker, over the mask
        page.click("#toggleView")  # three planes and 3D
        page.wait_for_timeout(300)
        cyan = page.evaluate(COLOURS_IN_TILES, CYAN)
        magenta = page.evaluate(COLOURS_IN_TILES, MAGENTA)
        page.screenshot(path=str(_shots(tmp_path) / "page_input_markers.png"))
        browser.close()
    assert not errors, errors
    assert all(cyan[str(plane)] > 20 for plane in (0, 1, 2)), cyan
    assert magenta["0"] > 20, magenta  # the background click: on the axial slice clicked


def test_three_planes_and_3d_by_default_with_a_one_view_toggle(ball_server):
    sync_api = _browser()
    url, _, _ = ball_server
    with sync_api.sync_playwright() as p:
        browser, page, errors = _open_page(p, url)
        page.select_option("#view", "multiplanar")  # the harness picked axial: back
        assert page.evaluate("document.querySelector('#view option').value") == "multiplanar"
        page.click("#files li[data-path='ball.nii.gz']")
        _wait(page, "window.mecca.loaded === true")
        page.wait_for_timeout(300)
        tiles = "nv.screenSlices.map((s) => s.axCorSag).sort()"
        assert page.evaluate(tiles) == [0, 1, 2, 4]  # axial, coronal, sagittal, 3D render
        assert page.text_content("#toggleView") == "One view (axial)"
        page.click("#toggleView")
        page.wait_for_timeout(300)
        assert page.evaluate(tiles) == [0] and page.input_value("#view") == "axial"
        page.select_option("#view", "coronal")
        page.click("#toggleView")
        page.wait_for_timeout(300)
        assert page.evaluate(tiles) == [0, 1, 2, 4]
        assert page.text_content("#toggleView") == "One view (coronal)"
        browser.close()
    assert not errors, errors


def test_a_method_switch_keeps_the_clicks_and_undo_brings_everything_back(ball_server):
    """Switching the method reruns the clicks with it (one step: the markers stay); undo
    brings the old method and steps back; reset is undone the same way; removing a label
    (which undo cannot bring back) asks first."""
    sync_api = _browser()
    url, _, state = ball_server
    with sync_api.sync_playwright() as p:
        browser, page, errors = _open_page(p, url)
        cx, cy, side = _open_image(page, "ball.nii.gz", "geos")
        _roi(page, cx, cy, side)
        page.check("input[value=foreground]")
        page.mouse.click(cx, cy)
        _idle(page)
        page.check("input[value=background]")
        page.mouse.click(cx + 0.25 * side, cy - 0.25 * side)
        _idle(page)
        markers = [page.evaluate(LABEL_COUNT, label) for label in (22, 23)]
        assert min(markers) > 0
        page.select_option("#method", "random_walker")
        _idle(page)
        now = page.evaluate("window.mecca.session")
        assert now["method"] == "random_walker" and now["steps"] == 1
        assert len(now["clicks"]) == 2  # both markers still drawn:
        assert [page.evaluate(LABEL_COUNT, label) for label in (22, 23)] == markers
        sid = page.evaluate("window.mecca.sid")
        assert _saved(state, sid)["method"] == "random_walker"
        page.click("#undo")
        _idle(page)
        assert page.evaluate("[window.mecca.session.method, window.mecca.session.steps]") == [
            "geos",
            2,
        ]
        assert page.input_value("#method") == "geos"
        page.click("#reset")
        _idle(page)
        assert page.evaluate(LABEL_COUNT, 22) == 0 and page.is_enabled("#undo")
        page.keyboard.press("z")  # undo, by key
        _idle(page)
        assert page.evaluate("window.mecca.session.steps") == 2
        assert page.evaluate(LABEL_COUNT, 22) > 0
        page.click("#newLabel")
        _idle(page)
        asked: list[str] = []

        def dismiss(dialog) -> None:
            asked.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", dismiss)
        page.click("#removeLabel")
        _idle(page)
        assert asked and "Undo cannot bring a removed label back" in asked[0]
        assert page.evaluate("window.mecca.labels.length") == 2
        browser.close()
    assert not errors, errors


def test_a_reload_lists_the_sessions_and_reopens_one(ball_server, tmp_path):
    sync_api = _browser()
    url, _, _ = ball_server
    with sync_api.sync_playwright() as p:
        browser, page, errors = _open_page(p, url)
        cx, cy, side = _open_image(page, "ball.nii.gz", "geos")
        _roi(page, cx, cy, side)
        page.check("input[value=foreground]")
        page.mouse.click(cx, cy)
        _idle(page)
        sid = page.evaluate("window.mecca.sid")
        page.reload()
        _wait(page, "window.mecca && window.mecca.ready")
        assert page.evaluate("window.mecca.sid") is None
        row = page.locator(f"#sessions li[data-sid='{sid}']")
        assert row.text_content().startswith("ball.nii.gz \u00b7 geos \u00b7 1 step \u00b7 ")
        page.select_option("#view", "axial")
        row.click()
        _wait(page, f"window.mecca.loaded === true && window.mecca.sid === '{sid}'")
        _idle(page)
        assert page.evaluate("window.mecca.session.steps") == 1
        assert page.evaluate(LABEL_COUNT, 22) > 0  # its click, drawn again
        assert page.evaluate("window.mecca.overlays").count("probability") == 1
        assert "current" in row.get_attribute("class")
        assert page.evaluate(STATUS).startswith("Opened ball.nii.gz")
        page.screenshot(path=str(_shots(tmp_path) / "page_resumed.png"))
        browser.close()
    assert not errors, errors


def test_a_click_on_a_marker_in_remove_mode_removes_that_click(ball_server):
    sync_api = _browser()
    url, _, _ = ball_server
    with sync_api.sync_playwright() as p:
        browser, page, errors = _open_page(p, url)
        cx, cy, side = _open_image(page, "ball.nii.gz", "geos")
        _roi(page, cx, cy, side)
        page.check("input[value=foreground]")
        page.mouse.click(cx, cy)
        _idle(page)
        page.check("input[value=background]")
        page.mouse.click(cx + 0.25 * side, cy + 0.25 * side)
        _idle(page)
        page.keyboard.press("d")
        page.mouse.click(cx + 0.1 * side, cy - 0.1 * side)  # no marker there
        assert page.evaluate(STATUS).startswith("No click marker there")
        page.mouse.click(cx + 2, cy + 2)  # on the foreground marker
        _idle(page)
        said = page.evaluate(STATUS)
        assert said.startswith("Removed the foreground click at voxel") and "Undo" in said
        assert page.evaluate("window.mecca.session.clicks.map((c) => c.kind)") == ["background"]
        assert page.evaluate(LABEL_COUNT, 22) == 0 and page.evaluate(LABEL_COUNT, 23) > 0
        page.click("#undo")
        _idle(page)
        assert page.evaluate("window.mecca.session.steps") == 2
        assert page.evaluate(LABEL_COUNT, 22) > 0
        browser.close()
    assert not errors, errors


CROSSHAIR_VOXEL = "() => Array.from(nv.frac2vox(nv.scene.crosshairPos))"
NIIVUE_SAW = """() => {
  // count the mouse-downs that reach the canvas, where NiiVue's own listener is
  window.niivueDowns = 0;
  nv.gl.canvas.addEventListener("mousedown", () => window.niivueDowns++);
}"""


def test_a_click_is_the_pages_alone_and_moves_the_crosshair_with_the_next_redraw(ball_server):
    # NiiVue's own click handling would redraw a whole frame before the step's reply could
    # be read (in software WebGL, ~200 ms of the page's main thread): in the click modes
    # the page keeps left clicks from it and moves the crosshair itself; "look" mode
    # leaves them to NiiVue
    sync_api = _browser()
    url, _, _ = ball_server
    with sync_api.sync_playwright() as p:
        browser, page, errors = _open_page(p, url)
        cx, cy, side = _open_image(page, "ball.nii.gz", "geos")
        _roi(page, cx, cy, side)
        page.evaluate(NIIVUE_SAW)
        page.check("input[value=foreground]")
        before = page.evaluate(CROSSHAIR_VOXEL)
        page.mouse.click(cx + 0.1 * side, cy)
        _idle(page)
        assert page.evaluate("window.niivueDowns") == 0
        moved = page.evaluate(CROSSHAIR_VOXEL)
        assert moved != before and page.evaluate(DRAWN_AT_CROSSHAIR) == 22  # the marker
        assert page.evaluate("window.mecca.session.clicks.length") == 1
        page.check("input[value=look]")
        page.mouse.click(cx - 0.1 * side, cy)
        page.wait_for_timeout(200)
        assert page.evaluate("window.niivueDowns") == 1  # NiiVue navigates
        assert page.evaluate(CROSSHAIR_VOXEL) != moved
        assert page.evaluate("window.mecca.session.clicks.length") == 1  # no click sent
        browser.close()
    assert not errors, errors


SCREEN_XY = "mm => window.screenPointOf(mm)"  # the page's own helper (app.js)


def test_a_click_outside_an_roi_from_clicks_or_a_box_grows_it_one_outside_a_drawn_roi_is_refused(
    tmp_path,
):
    """Two balls 80 mm apart: after a click into one, the other lies outside the ROI the
    session derived (the click plus 40 mm). A click there is sent and grows the ROI (as
    the session does for 3D Slicer and the CLI); after an ROI is drawn, it is refused;
    after a box is drawn round the first ball (a prompt: the object may go on beyond
    it), it is sent and grows the box's ROI."""
    pytest.importorskip("uvicorn")
    sync_api = _browser()
    root = tmp_path / "images"
    root.mkdir()
    shape, centres = (120, 40, 12), ((90, 20, 6), (10, 20, 6))
    image = np.random.default_rng(0).normal(0, 0.2, shape)
    for c in centres:
        image[sphere(shape, c, 5)] += 2.0
    save_volume(Volume(image.astype(np.float32), np.eye(4)), root / "two_far.nii.gz")
    settings = ServerSettings(roots=(root,), state_dir=tmp_path / "state", methods=("geos",))
    with served(settings) as url, sync_api.sync_playwright() as p:
        browser, page, errors = _open_page(p, url)
        page.select_option("#view", "axial")
        _open_image(page, "two_far.nii.gz", "geos")
        page.check("input[value=foreground]")
        page.mouse.click(*page.evaluate(SCREEN_XY, list(centres[0])))
        _wait(page, "window.mecca.session.steps === 1 && !window.mecca.busy")
        roi = page.evaluate("window.mecca.session.roi")
        assert roi[0][0] > centres[1][0]
        assert page.evaluate("window.mecca.session.roi_follows_clicks")
        page.mouse.click(*page.evaluate(SCREEN_XY, list(centres[1])))
        _wait(page, "window.mecca.session.steps === 2 && !window.mecca.busy")
        grown = page.evaluate("window.mecca.session.roi")
        assert grown[0][0] <= centres[1][0] < grown[1][0]
        page.check("input[value=roi]")  # an ROI drawn round the first ball: clicks stay in it
        for corner in ((75, 5, 6), (105, 35, 6)):
            page.mouse.click(*page.evaluate(SCREEN_XY, list(corner)))
        _wait(page, "window.mecca.session.roi[0][0] >= 70 && !window.mecca.busy")
        assert not page.evaluate("window.mecca.session.roi_follows_clicks")
        page.check("input[value=foreground]")
        page.mouse.click(*page.evaluate(SCREEN_XY, list(centres[1])))
        _wait(page, f"{STATUS}.includes('outside the ROI box')")
        assert page.evaluate("window.mecca.session.clicks.length") == 0
        page.check("input[value=box]")  # a box round the first ball is a prompt, not a limit
        for corner in ((84, 14, 6), (97, 27, 6)):
            page.mouse.click(*page.evaluate(SCREEN_XY, list(corner)))
        _wait(page, "window.mecca.session.box !== null && !window.mecca.busy")
        assert page.evaluate("window.mecca.session.roi_follows_clicks")
        steps = page.evaluate("window.mecca.session.steps")
        page.check("input[value=foreground]")
        page.mouse.click(*page.evaluate(SCREEN_XY, list(centres[1])))
        _wait(page, f"window.mecca.session.steps === {steps + 1} && !window.mecca.busy")
        roi = page.evaluate("window.mecca.session.roi")
        assert roi[0][0] <= centres[1][0] and roi[1][0] > centres[0][0]
        browser.close()
    assert not errors, errors
