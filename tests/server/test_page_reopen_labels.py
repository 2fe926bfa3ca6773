"""Reopening one label of a label group brings the group's other labels back, as a person
uses the page in headless Chromium (see ``test_page.py`` for the harness): two labels on
two touching balls, label 1 locked; after a reload, label 2's session reopened from the
"Sessions on this server" list shows both labels with their values and rules, label 2
edited and label 1 outlined, and "Export label map" still writes both values."""

import json
import urllib.request

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("fastapi")
from test_page import (  # noqa: E402
    _browser,
    _open_image,
    _open_page,
    _roi_then_foreground_click,
    _wait,
)
from test_page_labels import DX, STATUS, _mask, touching_balls_served  # noqa: E402

from mecca.server.viewer_overlay import OTHER_OUTLINE  # noqa: E402

LABEL_COUNT = "(label) => nv.drawBitmap.reduce((n, v) => n + (v === label), 0)"
LINES = "[...document.querySelectorAll('#labels label')].map((l) => l.textContent)"


@pytest.fixture(scope="module")
def touching_server(tmp_path_factory):
    with touching_balls_served(tmp_path_factory, ("geos",)) as served_at:
        yield served_at


def _listing(url: str) -> dict[str, dict]:
    """The rows of ``GET /api/sessions`` by session id."""
    asked = urllib.request.Request(f"{url}/api/sessions", headers={"X-Mecca-Client": "test"})
    with urllib.request.urlopen(asked, timeout=30) as reply:
        return {row["id"]: row for row in json.load(reply)["sessions"]}


def test_reopening_label_2_after_a_reload_brings_label_1_back(touching_server):
    sync_api = _browser()
    url, state = touching_server
    with sync_api.sync_playwright() as p:
        browser, page, errors = _open_page(p, url)
        cx, cy, side = _open_image(page, "touching.nii.gz", "geos")
        # label 1: the ball left on screen, locked
        _roi_then_foreground_click(page, cx, cy, side, 0.45, cx - DX * side)
        page.keyboard.press("b")
        page.mouse.click(cx + DX * side, cy)
        _wait(page, "window.mecca.session.steps === 2 && !window.mecca.busy", timeout=60000)
        page.select_option("#overlap", "lock")
        _wait(page, f"{STATUS}.startsWith('Label 1 is locked') && !window.mecca.busy")
        first = page.evaluate("window.mecca.sid")
        # label 2: the ball right on screen
        page.click("#newLabel")
        _wait(page, "window.mecca.labels.length === 2 && !window.mecca.busy")
        page.keyboard.press("r")
        _roi_then_foreground_click(page, cx, cy, side, 0.45, cx + DX * side)
        second = page.evaluate("window.mecca.sid")
        before = page.evaluate(LINES)
        assert before == [" label 1: geos, 2 steps, locked", " label 2: geos, 1 step, overwrites"]
        # a reload: no session open, then label 2 reopened from the sessions list
        page.reload()
        _wait(page, "window.mecca && window.mecca.ready")
        assert page.evaluate("window.mecca.sid") is None
        page.select_option("#view", "axial")
        _wait(page, f"document.querySelector(\"#sessions li[data-sid='{second}']\") !== null")
        listed = page.text_content(f"#sessions li[data-sid='{second}']")
        assert listed.endswith("\u00b7 label 2"), listed  # the list says which label
        assert page.text_content(f"#sessions li[data-sid='{first}']").endswith("\u00b7 label 1")
        page.locator(f"#sessions li[data-sid='{second}']").click()
        _wait(page, f"window.mecca.loaded === true && window.mecca.sid === '{second}'")
        _wait(page, "!window.mecca.busy && window.mecca.overlays.includes('label 1 outline')")
        assert page.evaluate(LINES) == before  # both labels, their values and rules
        assert page.evaluate("window.mecca.labels.map((l) => [l.sid, l.value])") == [
            [first, 1],
            [second, 2],
        ]
        checked = page.evaluate("document.querySelector('#labels input:checked').value")
        assert checked == second  # label 2 is the edited one
        assert page.input_value("#overlap") == "overwrite"  # label 2's own rule
        assert page.evaluate(LABEL_COUNT, OTHER_OUTLINE) > 0  # label 1's outline, drawn
        assert "Editing label 2 of 2 labels" in page.text_content("#status")
        assert page.is_enabled("#removeLabel") and page.is_enabled("#exportLabels")
        page.fill("#labelMapName", "reopened.nii.gz")
        page.click("#exportLabels")
        _wait(page, f"{STATUS}.startsWith('Exported')")
        assert "(2 labels)" in page.text_content("#status")
        browser.close()
    assert not errors, errors
    rows = _listing(url)
    assert rows[first]["group"] == rows[second]["group"] == first
    assert (rows[first]["label"], rows[second]["label"]) == (None, 2)  # label 1: the first
    assert (rows[first]["overlap"], rows[second]["overlap"]) == ("lock", "overwrite")
    assert rows[first]["created"] < rows[second]["created"]
    one, two = _mask(url, first), _mask(url, second)
    assert one.sum() > 400 and two.sum() > 300 and not (one & two).any()
    (path,) = (state / "exports" / "labelmaps" / first).glob("reopened.nii.gz")
    data = np.asarray(nib.load(path).dataobj)
    assert set(np.unique(data)) == {0, 1, 2}
    np.testing.assert_array_equal(data == 1, one)
    np.testing.assert_array_equal(data == 2, two)
