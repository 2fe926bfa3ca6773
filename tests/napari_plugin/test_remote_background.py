"""The widget's locked values on a server session (Server URL): the remote backend sends
them to ``mecca serve`` as the session's background evidence, so the second value's mask
(the server's own) stays out of a locked first value, as on a local session; unlocked,
it spills. The viewer, the points and the buttons are test_widget.py's helpers, the
touching balls test_labels_rules.py's (their module-level skips apply here too).
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import numpy as np
import pytest
import test_labels_rules
import test_widget
from test_labels_rules import _first_label, _second_label
from test_widget import _dice, _open

from mecca.napari_plugin.widget import MASK

make_viewer, touching = test_widget.make_viewer, test_labels_rules.touching  # fixtures

pytestmark = pytest.mark.napari


@pytest.mark.parametrize("locked", [True, False], ids=["locked", "not_locked"])
def test_a_locked_value_keeps_a_server_sessions_mask_from_spilling(
    make_viewer, qtbot, touching, tmp_path, monkeypatch, locked
):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    sys.path.insert(0, str(Path(__file__).parents[1] / "server"))  # the server tests' helpers
    from server_images import served

    from mecca.client import Server
    from mecca.napari_plugin.backend import RemoteBackend
    from mecca.server.settings import ServerSettings

    image, left, right = touching
    token = secrets.token_hex(24)
    monkeypatch.setenv("MECCA_TOKEN", token)  # the client reads it; the widget has no field
    settings = ServerSettings(
        roots=(tmp_path,), state_dir=tmp_path / "state", methods=("random_walker",), token=token
    )
    with served(settings) as url:
        viewer, widget = _open(make_viewer, image)
        widget.url_edit.setText(url)
        widget.url_edit.editingFinished.emit()
        before = _first_label(qtbot, viewer, widget, "lock" if locked else "overwrite")
        first = before == 1
        assert isinstance(widget.backend, RemoteBackend)
        assert _dice(first, left) > 0.7
        after = _second_label(qtbot, viewer, widget)
        backend = widget.backend
        assert isinstance(backend, RemoteBackend)
        mask = backend.session.result.mask.astype(bool)  # the server's mask
        state = Server(url).json("GET", f"/api/sessions/{backend.session.id}")
        assert state["background"] is locked
        if locked:
            assert not (mask & first).any()  # the server's method was told: no spill
            np.testing.assert_array_equal(after == 1, first)
        else:
            assert (mask & first).any() and ((after == 2) & first).any()
        assert _dice(after == 2, right) > 0.6
        # undo and redo send nothing new (the mask is unchanged) and keep the layer exact
        sent = backend._sent
        qtbot.mouseClick(widget.undo_button, test_widget.Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: not widget.busy, timeout=test_widget.WAIT_MS)
        np.testing.assert_array_equal(viewer.layers[MASK].data, before)
        assert backend._sent == sent
