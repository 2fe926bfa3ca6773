"""Several label values in one labels layer: the widget's overlap rules (overwrite, keep
existing, lock), the locked values as the session's background evidence, and exact undo.

Two touching balls of the same brightness: a click in one spills into the other unless
the other is locked. The viewer, the points and the buttons are test_widget.py's helpers
(its module-level skip without napari or a display applies here too).
"""

from __future__ import annotations

import numpy as np
import pytest
import test_widget
from test_widget import _dice, _open, _place, _press, _save

from mecca.napari_plugin import geometry
from mecca.napari_plugin.widget import MASK, PROB, RULES_KEY

make_viewer, shots = test_widget.make_viewer, test_widget.shots  # its fixtures, here too

pytestmark = pytest.mark.napari

SHAPE = (40, 30, 20)
LEFT, RIGHT = (13, 15, 10), (26, 15, 10)
RADIUS = 7


def _ball(centre) -> np.ndarray:
    d2 = sum((g - c) ** 2 for g, c in zip(np.indices(SHAPE), centre, strict=True))
    return d2 <= RADIUS**2


@pytest.fixture
def touching() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two touching, equally bright noisy balls: (image, left ball, right ball)."""
    left, right = _ball(LEFT), _ball(RIGHT)
    noise = np.random.default_rng(1).normal(0, 0.2, SHAPE)
    return ((left | right) * 3.0 + noise).astype(np.float32), left, right


def _first_label(qtbot, viewer, widget, rule: str) -> np.ndarray:
    """Value 1 on the left ball with ``rule``, then Next object (value 2): the layer."""
    widget.set_overlap(rule)
    _place(widget, "foreground", LEFT)
    _place(widget, "background", RIGHT)  # not the other ball
    _place(widget, "background", (2, 2, 2))
    _press(qtbot, widget, widget.step_button)
    assert widget.status.text().startswith("Step done"), widget.status.text()
    _press(qtbot, widget, widget.next_button)
    assert widget.value_spin.value() == 2 and widget.overlap == "overwrite"
    return viewer.layers[MASK].data.copy()


def _second_label(qtbot, viewer, widget) -> np.ndarray:
    """Value 2 clicked in the right ball: the layer."""
    _place(widget, "foreground", (27, 15, 10))
    _place(widget, "background", (37, 27, 18))
    _press(qtbot, widget, widget.step_button)
    assert widget.status.text().startswith("Step done"), widget.status.text()
    return viewer.layers[MASK].data.copy()


def test_paint_follows_the_rules():
    base = np.array([0, 1, 2, 3, 0, 3], np.uint16)
    mask = np.array([1, 1, 1, 1, 0, 0], np.uint8)
    assert geometry.paint(base, mask, 3).tolist() == [3, 3, 3, 3, 0, 3]
    assert geometry.paint(base, mask, 3, "overwrite", {1}).tolist() == [3, 1, 3, 3, 0, 3]
    assert geometry.paint(base, mask, 3, "lock", {1, 3}).tolist() == [3, 1, 3, 3, 0, 3]
    assert geometry.paint(base, mask, 3, "keep").tolist() == [3, 1, 2, 3, 0, 3]
    assert geometry.paint(base, None, 3, "keep", {1}).tolist() == base.tolist()
    with pytest.raises(Exception, match="unknown overlap rule"):
        geometry.paint(base, mask, 3, "sometimes")


@pytest.mark.parametrize("case", ["locked", "not_locked", "locked_no_evidence"])
def test_a_locked_value_keeps_its_voxels_and_is_background_evidence(
    make_viewer, qtbot, touching, shots, monkeypatch, case
):
    image, left, right = touching
    locked = case != "not_locked"
    viewer, widget = _open(make_viewer, image, "random_walker")
    if case == "locked_no_evidence":  # as a server session: the method is not told
        monkeypatch.setattr(widget, "_background", lambda: None)
    before = _first_label(qtbot, viewer, widget, "lock" if locked else "overwrite")
    first = before == 1
    assert set(np.unique(before)) == {0, 1} and _dice(first, left) > 0.7
    assert widget.locked_values() == ({1} if locked else set())
    rules = viewer.layers[MASK].metadata[RULES_KEY]  # remembered by the labels layer
    assert rules.get(1, "overwrite") == ("lock" if locked else "overwrite")

    after = _second_label(qtbot, viewer, widget)
    session = widget.backend.session
    mask = session.result.mask.astype(bool)
    if case == "locked":
        # the session's background evidence is the locked value, on its (i, j, k) grid
        np.testing.assert_array_equal(session._background_now(), after == 1)
        given = session._grid_clicks(session.predictor.crop, [])
        assert given and {c.kind.value for c in given} == {"background"}
        assert not (mask & first).any()  # the method was told: no spill
    else:  # nothing tells the method: its mask spills into value 1's ball
        assert session._background_now() is None and (mask & first).any()
    if locked:
        np.testing.assert_array_equal(after == 1, first)  # no voxel of value 1 changed
        assert not ((after == 2) & first).any()
    else:  # value 2 takes part of value 1's ball
        assert ((after == 2) & first).any()
    assert _dice(after == 2, right) > 0.6
    np.testing.assert_array_equal(after[after != 2], before[after != 2])

    # undo gives back the layer of before the step, bit for bit (value 1's voxels too);
    # redo the layer of after it; and the same after a second step
    _press(qtbot, widget, widget.undo_button)
    np.testing.assert_array_equal(viewer.layers[MASK].data, before)
    _press(qtbot, widget, widget.redo_button)
    np.testing.assert_array_equal(viewer.layers[MASK].data, after)
    _place(widget, "foreground", (30, 15, 10))
    _press(qtbot, widget, widget.step_button)
    second = viewer.layers[MASK].data.copy()
    _press(qtbot, widget, widget.undo_button)
    np.testing.assert_array_equal(viewer.layers[MASK].data, after)
    _press(qtbot, widget, widget.redo_button)
    np.testing.assert_array_equal(viewer.layers[MASK].data, second)
    if locked:
        np.testing.assert_array_equal(second == 1, first)
    if case == "locked":
        viewer.dims.order = (2, 0, 1)  # a slice across k: both balls side by side
        viewer.dims.set_current_step(2, LEFT[2])
        viewer.layers[PROB].visible = False  # the labels' colours, not the probability
        _save(viewer, widget, shots / "napari_labels_lock.png")


def test_keep_existing_leaves_the_other_values_voxels(make_viewer, qtbot, touching):
    image, left, right = touching
    viewer, widget = _open(make_viewer, image, "random_walker")
    before = _first_label(qtbot, viewer, widget, "overwrite")
    first = before == 1
    widget.set_overlap("keep")
    assert widget.overlap_rules().get(1, "overwrite") == "overwrite"
    assert widget.overlap_rules()[2] == "keep"
    after = _second_label(qtbot, viewer, widget)
    mask = widget.backend.session.result.mask.astype(bool)
    assert (mask & first).any()  # the mask spills over (value 1 is not locked) ...
    np.testing.assert_array_equal(after == 1, first)  # ... yet value 1 keeps every voxel
    np.testing.assert_array_equal(after == 2, mask & (before == 0))
    # the rule applies at once: overwrite takes value 1's voxels, keep gives them back
    widget.set_overlap("overwrite")
    np.testing.assert_array_equal(viewer.layers[MASK].data == 2, mask)
    widget.set_overlap("keep")
    np.testing.assert_array_equal(viewer.layers[MASK].data, after)
    # each value shows its own rule; another labels layer has its own rules
    widget.value_spin.setValue(1)
    assert widget.overlap == "overwrite"
    widget.value_spin.setValue(2)
    assert widget.overlap == "keep"
    viewer.add_labels(np.zeros(SHAPE, np.uint16), name="other")
    widget.labels_box.setCurrentText("other")
    assert widget.overlap == "overwrite" and widget.overlap_rules() == {}
    widget.labels_box.setCurrentText(MASK)
    assert widget.overlap == "keep"
