"""The web page: vendored viewer, no CDN, and a person's session in headless Chromium.

The browser test needs Debian's ``chromium`` (``/usr/bin/chromium``) and the Python
``playwright`` package (it drives the installed browser, it downloads none); it skips
with a message where either is missing.
"""

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from server_images import proposing_partial_run, served  # noqa: E402

from conftest import sphere  # noqa: E402
from mecca.io import Volume, save_mask, save_volume  # noqa: E402
from mecca.server.app import STATIC, create_app  # noqa: E402
from mecca.server.settings import ServerSettings  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "9f2c4e7a1b8d3f6a0c5e2b7d4a1f8c3e"
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
"""Where MECCA_SCREENSHOTS=1 saves the page's screenshot (else the test's tmp folder)."""
SHAPE = (48, 48, 24)
LPS_AFFINE = np.array([[-1.0, 0, 0, 47.0], [0, -1.0, 0, 40.0], [0, 0, 2.0, -5.0], [0, 0, 0, 1]])
"""Voxel axes run right-to-left and anterior-to-posterior: NiiVue reorders this image."""
RAS_MAPPING_ERRORS = """() => {
  // the page's native-voxel -> drawing-index tables against NiiVue's own img2RAS
  const [lx, ly, lz] = window.mecca.rasLut, d = nv.back.hdr.dims;
  const img = nv.back.img, ras = nv.back.img2RAS();
  let bad = 0, n = 0;
  for (let k = 0; k < d[3]; k++) for (let j = 0; j < d[2]; j++) for (let i = 0; i < d[1]; i++, n++)
    if (ras[lx[i] + ly[j] + lz[k]] !== img[n]) bad++;
  return bad;
}"""
DRAWN_AT_CROSSHAIR = """() => {
  const v = nv.frac2vox(nv.scene.crosshairPos), d = nv.back.dimsRAS;
  return nv.drawBitmap[v[0] + v[1] * d[1] + v[2] * d[1] * d[2]];
}"""
DRAWN_CHECKSUM = """() => window.mecca.base.reduce(
  (h, v, i) => (h * 31 + v * (i % 97 + 1)) % 1000000007, 0)"""
"""A checksum of the overlay drawn (the drawing layer under the input markers)."""
OVERLAY_AT_CROSSHAIR = """() => {
  // the overlay under the input markers (the page keeps it as window.mecca.base)
  const v = nv.frac2vox(nv.scene.crosshairPos), d = nv.back.dimsRAS;
  return window.mecca.base[v[0] + v[1] * d[1] + v[2] * d[1] * d[2]];
}"""


def test_vendored_niivue_matches_its_recorded_checksum():
    vendor = json.loads((STATIC / "VENDOR.json").read_text())["niivue.umd.js"]
    digest = hashlib.sha256((STATIC / "niivue.umd.js").read_bytes()).hexdigest()
    assert digest == vendor["sha256"] and vendor["license"] == "BSD-2-Clause"


def test_page_loads_only_local_scripts(tmp_path):
    client = TestClient(
        create_app(ServerSettings(state_dir=tmp_path, token=TOKEN)),
        base_url="http://127.0.0.1",
        headers={"X-Mecca-Client": "test"},
    )
    page = client.get("/")  # the page itself needs no token; the API does
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    sources = re.findall(r'<script src="([^"]+)"', page.text)
    assert sources and all(s.startswith("/static/") for s in sources)
    for src in sources:
        assert client.get(src).status_code == 200
    assert "http" not in (STATIC / "app.js").read_text().replace("http://127.0.0.1", "")


def _centred_ball(root: Path) -> tuple[Path, np.ndarray]:
    gt = sphere(SHAPE, tuple(s // 2 for s in SHAPE), 8)
    image = (gt * 2.0 + np.random.default_rng(0).normal(0, 0.2, SHAPE)).astype(np.float32)
    affine = LPS_AFFINE
    save_mask(gt, Volume(image, affine), root / "ball_label.nii.gz")
    return save_volume(Volume(image, affine), root / "ball.nii.gz"), gt


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    pytest.importorskip("uvicorn")
    root = tmp_path_factory.mktemp("images")
    _, gt = _centred_ball(root)
    _two_balls(root)
    state = tmp_path_factory.mktemp("state")
    settings = ServerSettings(roots=(root,), state_dir=state, methods=("random_walker", "geos"))
    with served(settings) as url:
        yield url, gt, state


TWO_BALL_CENTRES = ((13, 24, 12), (34, 24, 12))
"""Symmetric about the image centre along i: on screen, one left and one right of it."""


def _two_balls(root: Path) -> None:
    balls = [sphere(SHAPE, c, 6) for c in TWO_BALL_CENTRES]
    noise = np.random.default_rng(1).normal(0, 0.2, SHAPE)
    image = ((balls[0] | balls[1]) * 2.0 + noise).astype(np.float32)
    save_volume(Volume(image, LPS_AFFINE), root / "two_balls.nii.gz")


def _wait(page, condition: str, timeout: int = 30000) -> None:
    """Wait for a JS condition; on timeout fail with what the page says. (Given as a
    function: Playwright polls an expression string with eval, which the page's CSP
    refuses.)"""
    try:
        page.wait_for_function(f"() => ({condition})", timeout=timeout)
    except Exception:  # playwright's TimeoutError
        said = page.text_content("#status"), page.text_content("#error")
        pytest.fail(f"page never reached {condition!r}: status/error {said}")


def _browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium at /usr/bin/chromium (apt-get install chromium)")
    return sync_api


def _open_image(page, path: str, method: str | None = None) -> tuple[float, float, float]:
    """Open ``path`` from the file list (with ``method``): the canvas centre and side."""
    if method:
        page.select_option("#method", method)
    page.click(f"#files li[data-path='{path}']")
    _wait(page, "window.mecca.loaded === true")
    page.wait_for_timeout(500)
    box = page.locator("#gl").bounding_box()
    side = min(box["width"], box["height"])
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, side


def _roi_then_foreground_click(page, cx: float, cy: float, side: float, half: float, x: float):
    """Draw an ROI of half-width ``half * side`` round the canvas centre, then click
    foreground at (``x``, ``cy``) and wait for the first step."""
    page.check("input[value=roi]")
    page.mouse.click(cx - half * side, cy - half * side)
    page.mouse.click(cx + half * side, cy + half * side)
    _wait(page, "window.mecca.session.roi !== null && !window.mecca.busy", timeout=20000)
    page.check("input[value=foreground]")
    page.mouse.click(x, cy)
    _wait(page, "window.mecca.session.steps === 1 && !window.mecca.busy", timeout=60000)


def test_a_person_opens_draws_clicks_undoes_and_exports(live_server, tmp_path):
    sync_api = _browser()
    url, gt, state = live_server
    with sync_api.sync_playwright() as p:
        browser, page, errors = _open_page(p, url)
        cx, cy, side = _open_image(page, "ball.nii.gz", "geos")
        _roi_then_foreground_click(page, cx, cy, side, 0.3, cx)
        assert page.evaluate("window.mecca.overlays.length") >= 1
        assert page.evaluate(RAS_MAPPING_ERRORS) == 0
        assert page.evaluate(OVERLAY_AT_CROSSHAIR) >= 5  # the clicked centre: p >= 0.5 or outline
        assert page.evaluate("window.mecca.lastLatencyMs") > 0
        first_drawn = page.evaluate(DRAWN_CHECKSUM)
        page.fill("#exportName", "step1.nii.gz")
        page.click("#export")
        _wait(page, "document.getElementById('status').textContent.startsWith('Exported')")
        shots = DOCS_SCREENSHOTS if os.environ.get("MECCA_SCREENSHOTS") == "1" else tmp_path
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "page_after_click.png"))
        assert (shots / "page_after_click.png").stat().st_size > 10_000
        page.keyboard.press("x")  # scribble background: one drag outside the ball, one step
        assert page.is_checked("input[value=scribble_bg]")
        page.mouse.move(cx - 0.25 * side, cy - 0.25 * side)
        page.mouse.down()
        page.mouse.move(cx + 0.25 * side, cy - 0.25 * side, steps=12)
        page.mouse.up()
        _wait(page, "window.mecca.session.steps === 2 && !window.mecca.busy", timeout=60000)
        assert page.evaluate("window.mecca.session.pending") == 0
        saved = json.loads(
            (state / "sessions" / page.evaluate("window.mecca.sid") / "session.json").read_text()
        )
        stroke = saved["store"]["steps"][1]
        assert len(stroke) >= 5 and {c["kind"] for c in stroke} == {"background"}
        page.click("#undo")
        _wait(page, "window.mecca.session.steps === 1 && !window.mecca.busy")
        page.click("#undo")
        _wait(page, "window.mecca.session.steps === 0 && !window.mecca.busy")
        page.click("#redo")
        _wait(page, "window.mecca.session.steps === 1 && !window.mecca.busy")
        assert page.evaluate(DRAWN_CHECKSUM) == first_drawn  # the same overlay on screen
        page.fill("#exportName", "ball_mask.nii.gz")
        page.click("#export")
        _wait(page, "document.getElementById('status').textContent.startsWith('Exported')")
        sid = page.evaluate("window.mecca.sid")
        browser.close()
    assert not errors, errors
    exported = nib.load(state / "exports" / sid / "ball_mask.nii.gz")
    np.testing.assert_allclose(exported.affine, LPS_AFFINE, atol=1e-6)
    mask = np.asarray(exported.dataobj) > 0
    dice = 2 * (mask & gt).sum() / (mask.sum() + gt.sum())
    assert dice > 0.85, dice
    step1 = np.asarray(nib.load(state / "exports" / sid / "step1.nii.gz").dataobj)
    np.testing.assert_array_equal(np.asarray(exported.dataobj), step1)  # undo/redo: exact


def _open_page(p, url: str):
    """Headless Chromium on the page, ready, axial view: (browser, page, page errors and
    Content-Security-Policy violations)."""
    browser = p.chromium.launch(
        executable_path=CHROMIUM,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    )
    page = browser.new_page(viewport={"width": 1100, "height": 700})
    errors = _watch(page)
    page.goto(url)
    _wait(page, "window.mecca && window.mecca.ready")
    page.select_option("#view", "axial")
    return browser, page, errors


def _watch(page) -> list[str]:
    """The page's uncaught errors and CSP violations, as they come (Chromium reports a
    violation on the console: "Refused to ... Content Security Policy")."""
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(
        "console",
        lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
    )
    return errors


def test_after_one_click_the_page_suggests_a_box_for_a_large_organ(tmp_path_factory):
    pytest.importorskip("uvicorn")
    sync_api = _browser()
    root = tmp_path_factory.mktemp("images")
    _centred_ball(root)
    settings = ServerSettings(
        roots=(root,), state_dir=tmp_path_factory.mktemp("state"), methods=("generalist", "geos")
    )
    tip = "draw a tight box round it (Box tool, key o)"
    with served(settings) as url, sync_api.sync_playwright() as p:
        browser, page, errors = _open_page(p, url)
        cx, cy, _ = _open_image(page, "ball.nii.gz")
        page.check("input[value=foreground]")
        page.mouse.click(cx, cy)
        _wait(page, "window.mecca.session.steps === 1 && !window.mecca.busy", timeout=60000)
        assert tip in page.text_content("#status")
        page.check("input[value=background]")  # a second click: the tip has done its work
        page.mouse.click(cx + 0.3 * page.locator("#gl").bounding_box()["height"], cy)
        _wait(page, "window.mecca.session.steps === 2 && !window.mecca.busy", timeout=60000)
        assert tip not in page.text_content("#status")
        browser.close()
    assert not errors, errors


def test_a_person_draws_a_box_and_the_generalist_segments_it_at_once(tmp_path_factory, tmp_path):
    pytest.importorskip("uvicorn")
    sync_api = _browser()
    root = tmp_path_factory.mktemp("images")
    _, gt = _centred_ball(root)
    settings = ServerSettings(
        roots=(root,), state_dir=tmp_path_factory.mktemp("state"), methods=("generalist", "geos")
    )
    with served(settings) as url, sync_api.sync_playwright() as p:
        browser, page, errors = _open_page(p, url)
        cx, cy, side = _open_image(page, "ball.nii.gz")
        page.keyboard.press("o")
        assert page.is_checked("input[value=box]")
        page.mouse.click(cx - 0.17 * side, cy - 0.17 * side)  # tight round the ball
        page.mouse.click(cx + 0.17 * side, cy + 0.17 * side)
        _wait(page, "window.mecca.session.steps === 1 && !window.mecca.busy", timeout=60000)
        said = page.text_content("#status")
        assert said.startswith("Box set: generalist segmented the object in it"), said
        box, roi = page.evaluate("[window.mecca.session.box, window.mecca.session.roi]")
        assert box is not None and all(r < b for r, b in zip(roi[0], box[0], strict=True))
        voxels = page.evaluate("window.mecca.session.last.mask_voxels")
        assert 0.3 * gt.sum() < voxels < 1.5 * gt.sum(), (voxels, gt.sum())
        shots = DOCS_SCREENSHOTS if os.environ.get("MECCA_SCREENSHOTS") == "1" else tmp_path
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "page_box_prompt.png"))
        page.keyboard.press("b")  # a correction click in the margin round the box is taken
        page.mouse.click(cx - 0.19 * side, cy)
        _wait(page, "window.mecca.session.steps === 2 && !window.mecca.busy", timeout=60000)
        browser.close()
    assert not errors, errors


def test_a_person_picks_one_of_k_proposals_and_accepts_it(tmp_path_factory, tmp_path):
    pytest.importorskip("uvicorn")
    sync_api = _browser()
    root = tmp_path_factory.mktemp("images")
    _centred_ball(root)
    state = tmp_path_factory.mktemp("state")
    run = proposing_partial_run(tmp_path_factory.mktemp("run") / "partial")
    settings = ServerSettings(
        roots=(root,),
        state_dir=state,
        methods=("partial", "random_walker"),
        weights=(("partial", str(run)),),
    )
    with served(settings) as url, sync_api.sync_playwright() as p:
        browser, page, errors = _open_page(p, url)
        cx, cy, side = _open_image(page, "ball.nii.gz")
        assert page.is_visible("#proposalsBox")
        page.mouse.click(cx - 0.3 * side, cy - 0.3 * side)  # ROI mode is the default
        page.mouse.click(cx + 0.3 * side, cy + 0.3 * side)
        _wait(page, "window.mecca.session.roi !== null && !window.mecca.busy")
        page.keyboard.press("f")
        page.mouse.click(cx, cy)
        _wait(page, "window.mecca.session.steps === 1 && !window.mecca.busy", timeout=60000)
        page.fill("#proposalCount", "3")
        page.click("#propose")
        _wait(page, "document.querySelectorAll('#proposals img').length === 3")
        loaded = "[...document.querySelectorAll('#proposals img')].every((i) => i.naturalWidth)"
        _wait(page, loaded)
        page.click("#proposals img[data-index='0']")
        _wait(page, "window.mecca.picked === 0")
        assert page.evaluate("window.mecca.overlays") == ["proposal 1"]
        assert page.evaluate(OVERLAY_AT_CROSSHAIR) >= 9  # the clicked centre is in the preview
        shots = DOCS_SCREENSHOTS if os.environ.get("MECCA_SCREENSHOTS") == "1" else tmp_path
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "page_proposals.png"))
        page.click("#accept")
        _wait(page, "window.mecca.session.steps === 2 && !window.mecca.busy")
        assert page.evaluate("document.querySelectorAll('#proposals img').length") == 0
        asked: list[str] = []  # undo cannot bring an accepted proposal back: the page asks
        page.on("dialog", lambda d: (asked.append(d.message), d.dismiss()))
        page.select_option("#method", "random_walker")
        assert asked and "accepted proposal" in asked[0], asked
        assert page.input_value("#method") == "partial"
        assert page.evaluate("window.mecca.session.method") == "partial"
        sid = page.evaluate("window.mecca.sid")
        browser.close()
    assert not errors, errors
    folder = state / "sessions" / sid
    assert (folder / "accepted" / "2.npz").is_file()
    saved = json.loads((folder / "session.json").read_text())
    assert saved["store"]["steps"][1] == []  # the accepted proposal: a step without clicks


def test_a_person_segments_two_labels_and_exports_one_label_map(live_server, tmp_path):
    sync_api = _browser()
    url, _, state = live_server
    with sync_api.sync_playwright() as p:
        browser, page, errors = _open_page(p, url)
        cx, cy, side = _open_image(page, "two_balls.nii.gz", "geos")
        for n, dx in enumerate((-0.21, 0.21)):  # one ball per label, each with its own ROI
            if n:
                page.click("#newLabel")
                _wait(page, "window.mecca.labels.length === 2 && !window.mecca.busy")
                assert page.evaluate("window.mecca.session.steps") == 0
            _roi_then_foreground_click(page, cx, cy, side, 0.45, cx + dx * side)
        assert "label 1 outline" in page.evaluate("window.mecca.overlays")
        assert page.evaluate("document.querySelectorAll('#labels input').length") == 2
        first = page.evaluate("window.mecca.labels[0].sid")
        page.check(f"#labels input[value='{first}']")  # back to label 1: its own state
        _wait(page, f"window.mecca.sid === '{first}' && !window.mecca.busy")
        assert "label 2 outline" in page.evaluate("window.mecca.overlays")
        shots = DOCS_SCREENSHOTS if os.environ.get("MECCA_SCREENSHOTS") == "1" else tmp_path
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "page_two_labels.png"))
        page.fill("#labelMapName", "balls.nii.gz")
        page.click("#exportLabels")
        _wait(page, "document.getElementById('status').textContent.startsWith('Exported')")
        browser.close()
    assert not errors, errors
    (written_path,) = (state / "exports" / "labelmaps").glob("*/balls.nii.gz")
    written = nib.load(written_path)
    np.testing.assert_allclose(written.affine, LPS_AFFINE, atol=1e-6)
    data = np.asarray(written.dataobj)
    balls = [sphere(SHAPE, c, 6) for c in TWO_BALL_CENTRES]
    # which ball each label got depends on the screen's left-right convention: either way,
    # each label covers one ball and not the other
    scores = {
        (value, b): 2 * ((data == value) & ball).sum() / ((data == value).sum() + ball.sum())
        for value in (1, 2)
        for b, ball in enumerate(balls)
    }
    best = max(scores[1, 0] + scores[2, 1], scores[1, 1] + scores[2, 0])
    assert best > 1.6, scores


EVIL_FILE = "<img src=x onerror=window.pwned=1>.nii.gz"
EVIL_FOLDER = "<svg onload=window.pwned=2>"


def test_names_from_the_server_show_as_text_and_run_nothing(tmp_path_factory):
    """Stored XSS: file and folder names with HTML in them are shown as text."""
    pytest.importorskip("uvicorn")
    sync_api = _browser()
    root = tmp_path_factory.mktemp("images")
    ball, _ = _centred_ball(root)
    shutil.copy(ball, root / EVIL_FILE)
    (root / EVIL_FOLDER).mkdir()
    shutil.copy(ball, root / EVIL_FOLDER / "<b>inner<b>.nii.gz")
    state = tmp_path_factory.mktemp("state")
    settings = ServerSettings(roots=(root,), state_dir=state, methods=("geos",))
    with served(settings) as url, sync_api.sync_playwright() as p:
        browser, page, errors = _open_page(p, url)
        page.wait_for_timeout(300)  # time for an injected handler to run
        assert page.evaluate("window.pwned") is None
        names = page.eval_on_selector_all("#files li", "(items) => items.map((i) => i.textContent)")
        assert EVIL_FILE in names and any(n.endswith(EVIL_FOLDER) for n in names), names
        assert page.evaluate("document.querySelectorAll('#side img, #side svg').length") == 0
        page.get_by_text(EVIL_FOLDER).click()  # into the folder, and back
        _wait(page, "document.querySelector('#files li').textContent === '..'")
        assert "<b>inner<b>.nii.gz" in page.text_content("#files")
        page.get_by_text("..", exact=True).click()
        _wait(page, "document.querySelectorAll('#files li').length === 4")
        page.get_by_text(EVIL_FILE).click()  # opens as any image
        _wait(page, "window.mecca.loaded === true")
        assert page.evaluate("window.pwned") is None
        browser.close()
    assert not errors, errors


def test_the_token_stays_out_of_urls_and_images_come_as_blobs(tmp_path):
    """The token comes in the link's fragment (or a prompt), leaves the address bar at
    once, and goes only in headers: the image reaches NiiVue and the mask the disk as
    blob: URLs. The strict CSP holds: no violation while opening, clicking, downloading."""
    pytest.importorskip("uvicorn")
    sync_api = _browser()
    root = tmp_path / "images"
    root.mkdir()
    _centred_ball(root)
    settings = ServerSettings(
        roots=(root,), state_dir=tmp_path / "state", methods=("geos",), token=TOKEN
    )
    with served(settings) as url, sync_api.sync_playwright() as p:
        browser, page, errors = _open_page(p, f"{url}/#token={TOKEN}")
        assert "token" not in page.evaluate("location.href")
        assert page.evaluate("sessionStorage.getItem('meccaToken')") == TOKEN
        seen: list[str] = []
        page.on("request", lambda r: seen.append(r.url))
        cx, cy, side = _open_image(page, "ball.nii.gz")
        _roi_then_foreground_click(page, cx, cy, side, 0.3, cx)
        assert page.evaluate("window.mecca.imageUrl").startswith("blob:")
        assert page.evaluate("nv.volumes.length") == 1
        with page.expect_download() as download:
            page.click("#download")
        saved = tmp_path / "downloaded.nii.gz"
        download.value.save_as(saved)
        assert nib.load(saved).shape == SHAPE
        page.screenshot(path=str(tmp_path / "page_with_token.png"))
        asked = browser.new_page()  # a new tab without the token: the page asks for it
        asked_errors = _watch(asked)
        asked.on("dialog", lambda d: d.accept(TOKEN))
        asked.goto(url)
        _wait(asked, "window.mecca && window.mecca.ready")
        assert asked.evaluate("sessionStorage.getItem('meccaToken')") == TOKEN
        browser.close()
    assert not errors and not asked_errors, (errors, asked_errors)
    assert seen and not [u for u in seen if TOKEN in u], seen
