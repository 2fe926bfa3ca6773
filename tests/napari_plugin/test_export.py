"""*Export label map*: the widget writes the whole labels layer on the image's own grid,
as a mask file (the file's affine, kept by the plugin's reader) or as a DICOM SEG that
references the DICOM series the image was read from. The save dialog is replaced by a
function giving the file name; the viewer, points and buttons are test_widget.py's
helpers (its module-level skip without napari or a display applies here too).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import test_widget
from test_widget import _dice, _place, _press

from mecca.io import load
from mecca.napari_plugin import widget as widget_module
from mecca.napari_plugin.backend import grid_affine
from mecca.napari_plugin.reader import read
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
    _press(qtbot, widget, widget.export_button)
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
    [(data, kwargs, kind)] = read(str(folder))  # the plugin's reader, on a folder
    assert kind == "image" and kwargs["metadata"]["format"] == "dicom"
    image = viewer.add_image(data, **kwargs)
    assert image.metadata["source"] == str(folder) and image.metadata["series_uid"]
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

    _dialog(monkeypatch, "")  # the dialog cancelled
    assert _export(qtbot, widget) == "Export cancelled: nothing written."

    viewer.add_labels(np.ones((3, 3, 3), np.uint16), name="small")
    widget.labels_box.setCurrentText("small")
    _dialog(monkeypatch, out)
    assert "choose a labels layer of the image's grid" in _export(qtbot, widget)

    beyond = viewer.layers["organs"].data.astype(np.int32)
    beyond[4, 4, 4] = 70000  # beyond uint16: the writer refuses
    viewer.layers["organs"].data = beyond
    widget.labels_box.setCurrentText("organs")
    assert _export(qtbot, widget).startswith("Nothing exported:"), widget.status.text()
    assert not any(p.exists() for p in (out, seg, png))
