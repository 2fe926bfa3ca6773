"""The dock widget as a person uses it, in a shown napari viewer under a display (Xvfb),
driven with pytest-qt's qtbot: add an image, place points, press Step, wait for the worker.

napari's own ``make_napari_viewer`` comes with napari's pytest plugin, which is off
(``-p no:napari`` in pyproject's addopts): the plugin is loaded into every pytest run once
napari is installed, and its session-wide autouse fixture ``use_leak_safe_log_records``
turns every log record's arguments into strings for the whole suite (a server test's
``%(path)s`` record then fails). :func:`make_viewer` does what that fixture does here: a
viewer with napari's default settings, closed after the test.

These need napari and pytest-qt (``pip install 'mecca[napari-test]'``) and a display:
pytest-xvfb starts Debian's Xvfb when it is installed (``apt-get install xvfb``); without
one they skip with a message (Qt would abort the process with no display). No conftest.py
here: a second module named ``conftest`` would shadow the one the other tests import.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

INSTALL = "pip install 'mecca[napari-test]'"
pytest.importorskip("napari", reason=f"napari is not installed: {INSTALL}")
pytest.importorskip("pytestqt", reason=f"pytest-qt is not installed: {INSTALL}")

from qtpy.QtCore import Qt  # noqa: E402

from mecca.methods import registry  # noqa: E402
from mecca.napari_plugin.widget import ADVICE, CLICKS, MASK, PROB, ROI, MeccaWidget  # noqa: E402


def _display_problem() -> str | None:
    """Why Qt cannot open a display here, or None. There must be an X display (pytest-xvfb
    sets DISPLAY when it starts Xvfb), and Qt is tried in a child process, as Qt aborts the
    process it fails in (a missing xcb library, say)."""
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        return "no display: apt-get install xvfb (pytest-xvfb then starts it), or make display"
    code = "from qtpy.QtWidgets import QApplication; QApplication([])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        return f"Qt cannot open the display (make display): {done.stderr.strip()[-300:]}"
    return None


if (_problem := _display_problem()) is not None:
    pytest.skip(_problem, allow_module_level=True)

pytestmark = pytest.mark.napari

WAIT_MS = 120_000  # a step on a busy shared CPU
SHAPE = (48, 44, 24)
CENTRE = (24, 22, 12)
RADIUS = 7
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
"""Where MECCA_SCREENSHOTS=1 saves the screenshots (else the test's tmp folder)."""


@pytest.fixture
def make_viewer(qtbot):
    """A factory of napari viewers (``napari.Viewer``'s arguments), each closed after the
    test; napari's settings are reset first, as napari's own fixture does."""
    import napari
    from napari.settings import get_settings

    get_settings().reset()
    viewers = []

    def make(**kwargs):
        kwargs.setdefault("show", False)
        viewer = napari.Viewer(show_welcome_screen=False, **kwargs)
        viewers.append(viewer)
        if kwargs["show"]:
            qtbot.wait_exposed(viewer.window._qt_window, timeout=5000)
        return viewer

    yield make
    for viewer in viewers:
        viewer.close()
    get_settings().reset()


@pytest.fixture
def ball() -> tuple[np.ndarray, np.ndarray]:
    """A noisy bright ball (image float32, ground truth bool), (I, J, K) = SHAPE."""
    d2 = sum((g - c) ** 2 for g, c in zip(np.indices(SHAPE), CENTRE, strict=True))
    gt = d2 <= RADIUS**2
    image = (gt * 2.0 + np.random.default_rng(0).normal(0, 0.2, SHAPE)).astype(np.float32)
    return image, gt


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """The folder screenshots go to."""
    return DOCS_SCREENSHOTS if os.environ.get("MECCA_SCREENSHOTS") == "1" else tmp_path


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def _open(make_viewer, image: np.ndarray, method: str = registry.DEFAULT_METHOD):
    """A shown viewer with the image and the docked widget, ``method`` picked."""
    viewer = make_viewer(show=True)
    viewer.window.resize(1200, 720)
    viewer.add_image(image, name="ball")
    widget = MeccaWidget(viewer)
    viewer.window.add_dock_widget(widget, name="MECCA", area="right")
    widget.method_box.setCurrentText(method)
    return viewer, widget


def _place(widget: MeccaWidget, kind: str, ijk) -> None:
    """Place a point as the user does: choose the kind, add it to the clicks layer."""
    widget.set_kind(kind)
    widget.clicks_layer().add(np.asarray([ijk], dtype=float))


def _press(qtbot, widget: MeccaWidget, button) -> None:
    """Press a button and wait until the worker thread is done."""
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)


def _save(viewer, widget: MeccaWidget, path: Path) -> None:
    from PIL import Image

    Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).save(path)
    assert path.stat().st_size > 10_000


def test_points_and_step_segment_the_ball_into_the_labels_layer(make_viewer, qtbot, ball, shots):
    image, gt = ball
    viewer, widget = _open(make_viewer, image)
    assert widget.image_box.currentText() == "ball" and widget.method.name == "generalist"
    _place(widget, "foreground", (24, 22, 12))
    _place(widget, "background", (24, 40, 12))
    layer = viewer.layers[CLICKS]
    assert list(layer.features["kind"]) == ["foreground", "background"]
    # each kind has its colour: foreground lime, background magenta
    assert np.allclose(layer.face_color[:, :3], [[0, 1, 0], [1, 0, 1]])

    qtbot.mouseClick(widget.step_button, Qt.MouseButton.LeftButton)
    assert widget.busy and not widget.step_button.isEnabled()  # the step runs on a worker
    assert not widget.busy_bar.isHidden()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert widget.status.text().startswith("Step done: 1 step"), widget.status.text()

    mask = viewer.layers[MASK].data
    assert mask.shape == gt.shape and set(np.unique(mask)) == {0, 1}
    assert _dice(mask, gt) > 0.9
    # a point's data row is the voxel index (i, j, k) the session got
    session = widget.backend.session
    assert [(c.kind.value, c.position) for c in session.history[0]] == [
        ("foreground", (24, 22, 12)),
        ("background", (24, 40, 12)),
    ]
    assert np.array_equal(layer.data, [[24, 22, 12], [24, 40, 12]])
    assert np.array_equal(viewer.layers[PROB].data, session.result.prob)
    assert ROI in viewer.layers and len(viewer.layers[ROI].data) > 0  # the derived ROI
    assert widget.undo_button.isEnabled() and not widget.redo_button.isEnabled()
    assert not widget.kind_buttons["edge"].isEnabled()  # the generalist takes no edge clicks

    viewer.dims.set_current_step(0, 24)
    _save(viewer, widget, shots / "napari_step.png")
    widget.grab().save(str(shots / "napari_widget.png"))


def test_undo_redo_and_reset_change_the_layers(make_viewer, qtbot, ball):
    image, gt = ball
    viewer, widget = _open(make_viewer, image)
    _place(widget, "foreground", (24, 22, 12))
    _press(qtbot, widget, widget.step_button)
    first = viewer.layers[MASK].data.copy()
    _place(widget, "background", (24, 40, 12))
    _place(widget, "foreground", (20, 22, 12))
    _press(qtbot, widget, widget.step_button)
    second = viewer.layers[MASK].data.copy()
    assert len(viewer.layers[CLICKS].data) == 3 and _dice(second, gt) > 0.9

    _press(qtbot, widget, widget.undo_button)
    assert np.array_equal(viewer.layers[MASK].data, first)
    assert np.array_equal(viewer.layers[CLICKS].data, [[24, 22, 12]])  # last step's points go
    assert widget.redo_button.isEnabled()

    _press(qtbot, widget, widget.redo_button)
    assert np.array_equal(viewer.layers[MASK].data, second)  # bit for bit
    assert len(viewer.layers[CLICKS].data) == 3 and not widget.redo_button.isEnabled()

    _press(qtbot, widget, widget.reset_button)
    assert not viewer.layers[MASK].data.any()
    assert len(viewer.layers[CLICKS].data) == 0 and PROB not in viewer.layers
    assert len(viewer.layers[ROI].data) == 0  # an ROI from clicks is forgotten
    assert not widget.undo_button.isEnabled()


def test_label_value_and_an_existing_labels_layer(make_viewer, qtbot, ball):
    image, gt = ball
    viewer, widget = _open(make_viewer, image)
    other = np.zeros(gt.shape, np.uint16)
    other[:5, :5, :5] = 2  # another structure, already segmented
    viewer.add_labels(other, name="organs")
    widget.labels_box.setCurrentText("organs")
    widget.value_spin.setValue(3)
    _place(widget, "foreground", (24, 22, 12))
    _press(qtbot, widget, widget.step_button)
    data = viewer.layers["organs"].data
    assert MASK not in viewer.layers
    assert _dice(data == 3, gt) > 0.9 and (data[:5, :5, :5] == 2).all()
    widget.value_spin.setValue(4)  # repaints the mask with the new value
    assert _dice(viewer.layers["organs"].data == 4, gt) > 0.9
    assert not (viewer.layers["organs"].data == 3).any()

    _press(qtbot, widget, widget.next_button)  # keep this object, start the next label
    assert widget.value_spin.value() == 5 and len(viewer.layers[CLICKS].data) == 0
    kept = viewer.layers["organs"].data.copy()
    assert _dice(kept == 4, gt) > 0.9
    _place(widget, "foreground", (24, 22, 14))
    _place(widget, "background", (24, 22, 5))
    _press(qtbot, widget, widget.step_button)
    data = viewer.layers["organs"].data
    assert (data == 5).any() and (data[:5, :5, :5] == 2).all()
    assert np.array_equal(data[data != 5], kept[data != 5])  # painted over the labels so far
    _press(qtbot, widget, widget.reset_button)
    assert np.array_equal(viewer.layers["organs"].data, kept)


def test_a_rectangle_tight_round_the_object_is_the_generalists_box_prompt(make_viewer, qtbot, ball):
    image, gt = ball
    viewer, widget = _open(make_viewer, image, "generalist")
    lo, hi = np.subtract(CENTRE, RADIUS) - 0.5, np.add(CENTRE, RADIUS) + 0.5
    i = CENTRE[0]
    rect = np.array([[i, lo[1], lo[2]], [i, lo[1], hi[2]], [i, hi[1], hi[2]], [i, hi[1], lo[2]]])
    widget.roi_layer().add_rectangles(rect)
    _press(qtbot, widget, widget.box_button)
    session = widget.backend.session
    assert session.box is not None and session.n_steps == 1  # segmented at once
    assert session.roi.start[1] < session.box.start[1]  # the crop: the box and a margin
    assert _dice(viewer.layers[MASK].data, gt) > 0.8
    assert widget._view.roi == (session.box.start, session.box.stop)  # the box is shown


def test_the_roi_drawn_as_a_rectangle_bounds_the_session(make_viewer, qtbot, ball, shots):
    image, gt = ball
    viewer, widget = _open(make_viewer, image)
    rect = np.array([[24, 9.5, 2.5], [24, 9.5, 21.5], [24, 34.5, 21.5], [24, 34.5, 2.5]])
    widget.roi_layer().add_rectangles(rect)
    _press(qtbot, widget, widget.roi_button)
    session = widget.backend.session
    assert session.roi.start[1:] == (10, 3) and session.roi.stop[1:] == (35, 22)
    assert session.roi.stop[0] - session.roi.start[0] == 22  # as deep as it is wide
    # shown as one frame per slice along the viewed axis (axis 0 here)
    assert len(viewer.layers[ROI].data) == 22

    _place(widget, "foreground", (24, 22, 12))
    _place(widget, "background", (24, 33, 12))
    _press(qtbot, widget, widget.step_button)
    mask = viewer.layers[MASK].data
    assert _dice(mask, gt) > 0.9 and not mask[:, :10].any()
    viewer.dims.set_current_step(0, 24)
    _save(viewer, widget, shots / "napari_roi.png")

    _place(widget, "foreground", (24, 40, 12))  # outside the drawn ROI: refused, said so
    _press(qtbot, widget, widget.step_button)
    assert "outside the ROI" in widget.status.text()
    assert session.n_steps == 1 and not session.pending


def test_the_method_picker_names_the_model_and_advice_is_shown(make_viewer, qtbot, ball, shots):
    image, gt = ball
    viewer, widget = _open(make_viewer, image)
    names = [widget.method_box.itemText(i) for i in range(widget.method_box.count())]
    assert names[0] == registry.DEFAULT_METHOD and set(names) == set(registry.served())
    assert widget.model_label.text() == "model: generalist"
    widget.method_box.setCurrentText("growcut")
    assert widget.model_label.text() == "no trained model (works on the image)"
    widget.method_box.setCurrentText("mecca")
    assert widget.model_label.text() == f"model: {registry.model_for('mecca')}"

    _place(widget, "foreground", (24, 22, 12))
    _press(qtbot, widget, widget.step_button)  # MECCA takes edge clicks only: said so
    assert "cannot take foreground clicks" in widget.status.text(), widget.status.text()
    assert widget.backend.method.name == "mecca" and widget.kind == "edge"
    assert not widget.kind_buttons["foreground"].isEnabled()

    viewer.layers[CLICKS].data = np.empty((0, 3))
    _place(widget, "edge", (24, 22 + RADIUS, 12))  # on the ball's border
    _press(qtbot, widget, widget.step_button)
    assert widget.status.text().startswith("Step done"), widget.status.text()
    assert ADVICE in viewer.layers and viewer.layers[ADVICE].data.max() >= 1
    assert viewer.layers[MASK].data[24, 22, 12] == 1
    viewer.dims.set_current_step(0, 24)
    _save(viewer, widget, shots / "napari_advice.png")


def test_a_server_url_runs_the_session_on_mecca_serve(
    make_viewer, qtbot, ball, tmp_path, monkeypatch
):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    import secrets

    sys.path.insert(0, str(Path(__file__).parents[1] / "server"))  # the server tests' helpers
    from server_images import served

    from mecca.napari_plugin.backend import RemoteBackend
    from mecca.server.settings import ServerSettings

    image, gt = ball
    token = secrets.token_hex(24)
    monkeypatch.setenv("MECCA_TOKEN", token)  # the client reads it; the widget has no field
    settings = ServerSettings(
        roots=(tmp_path,), state_dir=tmp_path / "state", methods=("random_walker",), token=token
    )
    with served(settings) as url:
        viewer, widget = _open(make_viewer, image)
        widget.url_edit.setText(url)
        widget.url_edit.editingFinished.emit()
        assert [widget.method_box.itemText(i) for i in range(widget.method_box.count())] == [
            "random_walker"
        ]
        _place(widget, "foreground", (24, 22, 12))
        _place(widget, "background", (24, 40, 12))
        _press(qtbot, widget, widget.step_button)
        assert widget.status.text().startswith("Step done"), widget.status.text()
        assert isinstance(widget.backend, RemoteBackend)
        assert widget.backend.session.history[0] == (
            ("foreground", (24, 22, 12)),
            ("background", (24, 40, 12)),
        )
        first = viewer.layers[MASK].data.copy()
        assert _dice(first, gt) > 0.9
        _place(widget, "background", (10, 22, 12))
        _press(qtbot, widget, widget.step_button)
        _press(qtbot, widget, widget.undo_button)
        assert np.array_equal(viewer.layers[MASK].data, first)
        assert len(viewer.layers[CLICKS].data) == 2


def test_napari_opens_a_nifti_with_the_plugins_reader(make_viewer, tmp_path, ball):
    import nibabel as nib

    image, _ = ball
    nib.save(nib.Nifti1Image(image, np.diag([0.8, 1.2, 2.5, 1.0])), tmp_path / "ball.nii.gz")
    viewer = make_viewer()
    [layer] = viewer.open(str(tmp_path / "ball.nii.gz"), plugin="mecca")
    assert layer.name == "ball" and np.array_equal(layer.data, image)
    assert np.allclose(layer.scale, (0.8, 1.2, 2.5))
