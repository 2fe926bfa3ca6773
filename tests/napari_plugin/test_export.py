"""*Export label map*: the widget writes the whole labels layer on the image's own grid,
as a mask file (the file's affine, kept by the plugin's reader) or as a DICOM SEG that
references the DICOM series the image was read from. The write runs on a worker thread:
each export waits for it (refusals are said at once, on Qt's thread). The save dialog is
replaced by a function giving the file name; the viewer, points and buttons are
test_widget.py's helpers (its module-level skip without napari or a display applies here
too).
"""

from __future__ import annotations

import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import test_widget
from qtpy.QtCore import Qt
from test_widget import WAIT_MS, _dice, _place, _press

import mecca.io
from mecca.io import load
from mecca.napari_plugin import widget as widget_module
from mecca.napari_plugin.backend import grid_affine
from mecca.napari_plugin.widget import MASK, NEW_LABELS, MeccaWidget

make_viewer, ball = test_widget.make_viewer, test_widget.ball  # its fixtures, here too

pytestmark = pytest.mark.napari

AFFINE = np.array(  # spacing (0.8, 1.2, 2.5), an origin, and the i axis flipped (LAS)
    [[-0.8, 0, 0, 40.0], [0, 1.2, 0, -25.5], [0, 0, 2.5, 12.25], [0, 0, 0, 1]]
)


def _dock(viewer) -> MeccaWidget:
    widget = MeccaWidget(viewer)
    viewer.window.add_dock_widget(widget, name="MECCA", area="right")
    return widget


def _dialog(monkeypatch, path: Path | str) -> list[str]:
    """The save dialog answers ``path``; the list gets the start path it was shown."""
    shown: list[str] = []

    def ask(parent, start: str) -> str:
        shown.append(start)
        return str(path)

    monkeypatch.setattr(widget_module, "ask_export_path", ask)
    return shown


def _export(qtbot, widget: MeccaWidget) -> str:
    """Press *Export label map*, wait until its worker is done; the status line."""
    qtbot.mouseClick(widget.export_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not widget.exporting, timeout=WAIT_MS)
    assert widget.export_button.isEnabled()
    return widget.status.text()


def test_a_segmented_nifti_is_exported_on_the_files_grid(
    make_viewer, qtbot, ball, tmp_path, monkeypatch
):
    image, gt = ball
    source = tmp_path / "ball.nii.gz"
    nib.save(nib.Nifti1Image(image, AFFINE), source)
    viewer = make_viewer(show=True)
    [layer] = viewer.open(str(source), plugin="mecca")
    assert layer.metadata["format"] == "nifti" and layer.metadata["source"] == str(source)
    widget = _dock(viewer)
    _place(widget, "foreground", test_widget.CENTRE)
    _press(qtbot, widget, widget.step_button)
    assert widget.status.text().startswith("Step done"), widget.status.text()
    labels = viewer.layers[MASK]
    assert _dice(labels.data, gt) > 0.9
    labels.data[:3, :3, :3] = 300  # a second value, above uint8: the whole map is written
    labels.refresh()

    out = tmp_path / "out" / "labels.nii.gz"
    out.parent.mkdir()
    shown = _dialog(monkeypatch, out)
    text = _export(qtbot, widget)
    assert shown == [str(tmp_path / f"{MASK}.nii.gz")]  # beside the image, the layer's name
    assert text.startswith(f"Exported {MASK!r} to {out}") and "values 1, 300" in text, text
    saved = nib.load(out)
    assert np.allclose(saved.affine, AFFINE) and saved.get_data_dtype() == np.uint16
    assert np.array_equal(np.asarray(saved.dataobj), labels.data)
    back = load(out, dtype=None)
    assert np.allclose(back.affine, load(source).affine)
    assert np.array_equal(back.array, labels.data)

    labels.data[:] = 0  # an export replaces the file the dialog named
    labels.data[5, 6, 7] = 2
    assert _export(qtbot, widget).startswith("Exported"), widget.status.text()
    assert np.array_equal(np.asarray(nib.load(out).dataobj), labels.data)


def test_an_image_without_a_file_affine_uses_its_scale_and_translate(
    make_viewer, qtbot, ball, tmp_path, monkeypatch
):
    image, _ = ball
    viewer = make_viewer(show=True)
    viewer.add_image(image, name="ball", scale=(0.8, 1.2, 2.5), translate=(-3.0, 4.0, 10.0))
    labels = np.zeros(image.shape, np.uint16)
    labels[20:28, 18:26, 10:14] = 4
    labels[0, 0, 0] = 9
    viewer.add_labels(labels, name="organs", scale=(0.8, 1.2, 2.5), translate=(-3.0, 4.0, 10.0))
    widget = _dock(viewer)
    widget.labels_box.setCurrentText("organs")
    out = tmp_path / "organs.nrrd"
    _dialog(monkeypatch, out)
    assert "NRRD label map" in _export(qtbot, widget), widget.status.text()
    back = load(out, dtype=None)
    assert np.allclose(back.affine, grid_affine((0.8, 1.2, 2.5), (-3.0, 4.0, 10.0)))
    assert np.array_equal(back.array, labels)


def _series(folder: Path) -> Path:
    from test_dicom_seg import source_slices, write_series

    return write_series(folder, source_slices())


def test_a_dicom_series_is_exported_as_a_dicom_seg(make_viewer, qtbot, tmp_path, monkeypatch):
    from mecca.dicom_seg import read_dicom_seg

    folder = _series(tmp_path / "ct_series")
    viewer = make_viewer(show=True)
    [image] = viewer.open(str(folder), plugin="mecca")  # the reader, on a folder
    assert image.metadata["format"] == "dicom" and image.metadata["source"] == str(folder)
    assert image.metadata["series_uid"]
    data = image.data
    labels = np.zeros(data.shape, np.uint8)
    labels[1:4, 2:5, 1:3] = 1
    labels[5:, :2, 3:] = 2
    viewer.add_labels(labels, name="organs", scale=image.scale)
    widget = _dock(viewer)
    widget.labels_box.setCurrentText("organs")

    seg = tmp_path / "out" / "organs.dcm"
    seg.parent.mkdir()
    shown = _dialog(monkeypatch, seg)
    text = _export(qtbot, widget)
    assert shown == [str(tmp_path / "organs.dcm")]  # beside the series, a SEG
    assert text.startswith(f"Exported 'organs' to {seg} (DICOM SEG"), text
    assert "values 1, 2" in text and "numbers segments" not in text
    back, names = read_dicom_seg(seg, folder)
    assert np.array_equal(back, labels)
    assert names == {1: "label 1", 2: "label 2"}

    relabelled = np.where(labels == 2, 5, labels * 2)  # values 2 and 5: numbered 1 and 2
    viewer.layers["organs"].data = relabelled
    text = _export(qtbot, widget)
    assert "value 2 -> 1, 5 -> 2" in text, text
    back, names = read_dicom_seg(seg, folder)
    assert np.array_equal(back, labels) and names == {1: "label 2", 2: "label 5"}


def test_refusals_write_nothing(make_viewer, qtbot, ball, tmp_path, monkeypatch):
    image, _ = ball
    source = tmp_path / "ball.nii.gz"
    nib.save(nib.Nifti1Image(image, AFFINE), source)
    viewer = make_viewer(show=True)
    viewer.open(str(source), plugin="mecca")
    widget = _dock(viewer)
    assert widget.labels_box.currentText() == NEW_LABELS
    out = tmp_path / "labels.nii.gz"
    _dialog(monkeypatch, out)
    assert "no labels layer to export" in _export(qtbot, widget)
    assert MASK not in viewer.layers  # the export makes no layer

    viewer.add_labels(np.zeros(image.shape, np.uint16), name="organs")
    widget.labels_box.setCurrentText("organs")
    assert "is empty (all 0)" in _export(qtbot, widget)
    viewer.layers["organs"].data[3, 3, 3] = 1

    seg = tmp_path / "labels.dcm"
    _dialog(monkeypatch, seg)
    text = _export(qtbot, widget)
    assert text.startswith("Nothing exported: the image 'ball' was not read from a DICOM")
    assert "export as .nii.gz, .nrrd or .mha instead" in text

    png = tmp_path / "labels.png"
    _dialog(monkeypatch, png)
    text = _export(qtbot, widget)
    assert "'labels.png' has no ending the export writes" in text and ".nii.gz" in text
    assert widget.export_labels(png) is None and not widget.exporting  # refused at once

    _dialog(monkeypatch, "")  # the dialog cancelled
    assert _export(qtbot, widget) == "Export cancelled: nothing written."

    viewer.add_labels(np.ones((3, 3, 3), np.uint16), name="small")
    widget.labels_box.setCurrentText("small")
    _dialog(monkeypatch, out)
    assert "choose a labels layer of the image's grid" in _export(qtbot, widget)

    beyond = viewer.layers["organs"].data.astype(np.int32)
    beyond[4, 4, 4] = 70000  # beyond uint16: the writer refuses, on the worker
    viewer.layers["organs"].data = beyond
    widget.labels_box.setCurrentText("organs")
    text = _export(qtbot, widget)
    assert text.startswith("Nothing exported:") and "65535" in text, text
    assert not any(p.exists() for p in (out, seg, png))


def test_the_export_writes_on_a_worker_thread(make_viewer, qtbot, tmp_path, monkeypatch):
    viewer = make_viewer(show=True)
    viewer.add_image(np.zeros((8, 9, 10), np.float32), name="image")
    labels = np.zeros((8, 9, 10), np.uint8)
    labels[2:5, 3:6, 4:7] = 3
    viewer.add_labels(labels.copy(), name="organs")
    widget = _dock(viewer)
    widget.labels_box.setCurrentText("organs")
    save_mask, release, threads = mecca.io.save_mask, threading.Event(), []

    def held_save_mask(*args, **kwargs):
        threads.append(threading.current_thread())
        release.wait(timeout=10)  # on Qt's thread, this would hold export_labels
        return save_mask(*args, **kwargs)

    monkeypatch.setattr(mecca.io, "save_mask", held_save_mask)
    out = tmp_path / "organs.nii.gz"
    assert threading.current_thread() is threading.main_thread()  # the test: Qt's thread
    worker = widget.export_labels(out)
    assert worker is not None and widget.exporting and not widget.export_button.isEnabled()
    assert widget.status.text() == f"Exporting 'organs' to {out} ..."
    viewer.layers["organs"].data[0, 0, 0] = 7  # painted meanwhile: not in this export
    assert widget.export_labels(out) is None  # one export at a time
    assert "an export is running" in widget.status.text()
    qtbot.waitUntil(lambda: bool(threads), timeout=WAIT_MS)
    assert not out.exists()  # the write is held, the viewer is not

    release.set()
    qtbot.waitUntil(lambda: not widget.exporting, timeout=WAIT_MS)
    assert threads[0] is not threading.main_thread()
    text = widget.status.text()
    assert text.startswith(f"Exported 'organs' to {out}") and "values 3)." in text, text
    assert widget.export_button.isEnabled()
    assert np.array_equal(load(out, dtype=None).array, labels)  # the layer at the press
