"""The MECCA dock widget for napari: clicks in a points layer, steps on a worker thread.

Coordinates: the image layer is the (I, J, K) array as the user gave it (``mecca.io.load``
gives it), and every layer this widget makes takes the image layer's scale and
translate, so a row of the clicks layer's ``data`` is directly the voxel index
``(i, j, k)`` (rounded to the nearest voxel centre, :func:`geometry.voxel_of`), and the
mask, probability and advice arrays lie on the image's own grid.

The layers it keeps (made on first use, named below):

* ``MECCA clicks`` -- a points layer; a new point takes the click kind chosen in the
  widget (foreground lime, background magenta, edge yellow). After each action the layer
  shows the session's clicks, so undo takes the last step's points away.
* ``MECCA ROI`` -- a shapes layer: draw a rectangle on a slice and press *ROI from
  rectangle*, or *Box prompt from rectangle* for a rectangle drawn tight around the
  object (the generalist segments it at once; docs/napari.md); the session's ROI (drawn
  or derived from the clicks; the box for a box prompt) is shown as one rectangle per
  slice of the axis the view looks along.
* ``MECCA probability`` (image, additive) and ``MECCA advice`` (labels: the regions the
  method is least sure of, 1 = least confident), when the method gives them.
* the chosen labels layer (or a new ``MECCA mask``): the mask is written with the chosen
  label value over the layer's content as it was when the session started, by the value's
  overlap rule (:data:`OVERLAP_CHOICES`, remembered per labels layer in its
  ``metadata["mecca_overlap"]``, value -> rule): a voxel holding a locked value other than
  the current one never changes, and with "keep" only voxels holding 0 (or the value) take
  it. The locked values other than the current one are the local session's background
  evidence (``Session.set_background``): the method is told they are not its object.

*Export label map* writes the chosen labels layer, every value, on the image's own grid
(:meth:`MeccaWidget.export_labels`): a mask file (``mecca.io.save_mask``, the image layer's
``metadata["affine"]`` when the reader put one there, else :func:`backend.grid_affine` of
its scale and translate), or a DICOM SEG (``mecca.dicom_seg.write_dicom_seg``) when the
image was read from a DICOM series (its ``metadata["source"]`` is the reference). The
layers are read on Qt's thread and the file is written on a worker thread, so a large map
does not freeze the viewer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from napari.layers import Image, Labels, Points, Shapes
from napari.qt.threading import FunctionWorker, create_worker
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from mecca.errors import MeccaError
from mecca.napari_plugin import geometry
from mecca.napari_plugin.backend import (
    Backend,
    LocalBackend,
    MethodChoice,
    RemoteBackend,
    View,
    grid_affine,
    local_methods,
    remote_methods,
)

if TYPE_CHECKING:
    import napari

CLICKS, ROI, PROB, ADVICE, MASK = (
    "MECCA clicks",
    "MECCA ROI",
    "MECCA probability",
    "MECCA advice",
    "MECCA mask",
)
NEW_LABELS = f"new layer: {MASK}"
OVERLAP_CHOICES = {"Overwrite": "overwrite", "Keep existing": "keep", "Lock": "lock"}
"""The overlap combo's entries and the rules (``geometry.OVERLAP_RULES``) they stand for."""
RULES_KEY = "mecca_overlap"
"""Where a labels layer's ``metadata`` keeps its overlap rules (label value -> rule)."""
MASK_ENDINGS = {".nii.gz": "NIfTI", ".nii": "NIfTI", ".nrrd": "NRRD", ".mha": "MetaImage"}
"""The endings *Export label map* writes with ``mecca.io.save_mask`` (and their formats)."""
SEG_ENDING = ".dcm"
"""The ending *Export label map* writes as a DICOM SEG (an image from a DICOM series)."""
EXPORT_FILTER = "NIfTI (*.nii.gz *.nii);;NRRD (*.nrrd);;MetaImage (*.mha);;DICOM SEG (*.dcm)"
SHOWN_VALUES = 12
"""How many label values the status line names after an export."""


def ask_export_path(parent: QWidget, start: str) -> str:
    """The file the user chooses in a save dialog, '' when cancelled (the tests replace
    this function)."""
    path, _ = QFileDialog.getSaveFileName(parent, "Export label map", start, EXPORT_FILTER)
    return str(path)


def _listed(values: list[int]) -> str:
    """``1, 2, 5`` (the first SHOWN_VALUES, then how many more)."""
    shown = ", ".join(str(v) for v in values[:SHOWN_VALUES])
    more = len(values) - SHOWN_VALUES
    return shown + (f" and {more} more" if more > 0 else "")


class _Refused(Exception):
    """An export the widget refuses; its text says what to do instead."""


def _message(exc: BaseException) -> str:
    """A MECCA error with its hint, or the exception's type and text."""
    if isinstance(exc, MeccaError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class MeccaWidget(QWidget):
    """Interactive segmentation of an image layer with a MECCA method (docs/napari.md).

    Args:
        napari_viewer: the viewer (napari passes it when it opens the dock widget).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.backend: Backend | None = None
        self._backend_key: tuple[Any, ...] | None = None
        self._base: np.ndarray | None = None  # labels layer content the mask is painted on
        self._base_layer: Labels | None = None
        self._view: View | None = None
        self._worker: Any = None
        self._export_worker: FunctionWorker[str] | None = None
        self._methods: list[MethodChoice] = []
        self._pending_rules: dict[int, str] = {}  # the rules a new MECCA mask layer takes
        self._build()
        self._refresh_layers()
        self._load_methods()
        layers = self.viewer.layers
        layers.events.inserted.connect(self._refresh_layers)
        layers.events.removed.connect(self._refresh_layers)
        self.viewer.dims.events.order.connect(self._draw_roi)
        self.viewer.dims.events.ndisplay.connect(self._draw_roi)

    # ---------------------------------------------------------------- the controls

    def _build(self) -> None:
        form = QFormLayout()
        self.image_box = QComboBox()
        form.addRow("Image", self.image_box)
        self.url_edit = QLineEdit()
        self.url_edit.setPlaceholderText("empty: run here (or http://127.0.0.1:8000)")
        self.url_edit.editingFinished.connect(self._load_methods)
        form.addRow("Server URL", self.url_edit)
        self.method_box = QComboBox()
        self.method_box.currentIndexChanged.connect(self._method_changed)
        form.addRow("Method", self.method_box)
        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        self.model_label.setAlignment(Qt.AlignmentFlag.AlignLeft)
        form.addRow("", self.model_label)

        kinds = QHBoxLayout()
        self.kind_group = QButtonGroup(self)
        self.kind_buttons: dict[str, QRadioButton] = {}
        for kind in geometry.KINDS:
            button = QRadioButton(kind)
            colour = geometry.KIND_COLOURS[kind]
            button.setStyleSheet(f"QRadioButton::indicator:checked {{ background: {colour}; }}")
            self.kind_group.addButton(button)
            self.kind_buttons[kind] = button
            kinds.addWidget(button)
        self.kind_buttons["foreground"].setChecked(True)
        self.kind_group.buttonClicked.connect(lambda _: self._kind_changed())
        form.addRow("Click", kinds)

        self.labels_box = QComboBox()
        form.addRow("Labels layer", self.labels_box)
        self.value_spin = QSpinBox()
        self.value_spin.setRange(1, 65535)
        self.value_spin.setValue(1)
        self.value_spin.valueChanged.connect(lambda _: self._value_changed())
        form.addRow("Label value", self.value_spin)
        self.overlap_box = QComboBox()
        self.overlap_box.addItems(list(OVERLAP_CHOICES))
        self.overlap_box.setToolTip(
            "where this value's mask meets other values: overwrite them (locked ones "
            "excepted), keep them, or lock this value (no other value takes its voxels, "
            "and the others' sessions get them as background)"
        )
        self.overlap_box.currentIndexChanged.connect(lambda _: self._overlap_changed())
        self.labels_box.currentIndexChanged.connect(lambda _: self._show_overlap())
        form.addRow("Overlap", self.overlap_box)

        buttons = QGridLayout()
        self.roi_button = QPushButton("ROI from rectangle")
        self.box_button = QPushButton("Box prompt from rectangle")
        self.step_button = QPushButton("Step")
        self.undo_button = QPushButton("Undo")
        self.redo_button = QPushButton("Redo")
        self.reset_button = QPushButton("Reset")
        self.next_button = QPushButton("Next object")
        self.export_button = QPushButton("Export label map")
        self.export_button.setToolTip(
            "write the labels layer (all its values) on the image's grid: "
            ".nii.gz, .nii, .nrrd, .mha, or .dcm (DICOM SEG, for an image from a DICOM series)"
        )
        self.next_button.setToolTip("keep the mask in the labels layer, start the next label")
        self.step_button.setToolTip("send the new points and run the method once")
        self.roi_button.setToolTip("use the last rectangle of the ROI layer (resets the session)")
        self.box_button.setToolTip(
            "the last rectangle of the ROI layer is drawn tight around the object: the "
            "generalist segments it at once (a box prompt; other methods: the ROI)"
        )
        buttons.addWidget(self.step_button, 0, 0, 1, 2)
        buttons.addWidget(self.roi_button, 0, 2)
        buttons.addWidget(self.undo_button, 1, 0)
        buttons.addWidget(self.redo_button, 1, 1)
        buttons.addWidget(self.reset_button, 1, 2)
        buttons.addWidget(self.box_button, 2, 0, 1, 3)
        buttons.addWidget(self.next_button, 3, 0, 1, 3)
        buttons.addWidget(self.export_button, 4, 0, 1, 3)
        self.step_button.clicked.connect(self.step)
        self.undo_button.clicked.connect(self.undo)
        self.redo_button.clicked.connect(self.redo)
        self.reset_button.clicked.connect(self.reset)
        self.roi_button.clicked.connect(lambda: self.roi_from_rectangle())
        self.box_button.clicked.connect(lambda: self.roi_from_rectangle(as_box=True))
        self.next_button.clicked.connect(self.next_object)
        self.export_button.clicked.connect(self.export)

        self.busy_bar = QProgressBar()
        self.busy_bar.setRange(0, 0)  # no known length: the bar moves while busy
        self.busy_bar.setVisible(False)
        self.status = QLabel("Choose an image, place points, press Step.")
        self.status.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.busy_bar)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self._set_buttons()

    def _refresh_layers(self, *_: Any) -> None:
        """Offer the 3D image layers and the labels layers the viewer holds."""
        for box, kind, extra in (
            (self.image_box, Image, []),
            (self.labels_box, Labels, [NEW_LABELS]),
        ):
            current = box.currentText()
            names = [
                layer.name
                for layer in self.viewer.layers
                if isinstance(layer, kind)
                and layer.ndim == 3
                and not layer.name.startswith("MECCA ")
            ]
            if kind is Labels and any(layer.name == MASK for layer in self.viewer.layers):
                names.insert(0, MASK)
                extra = []
            box.blockSignals(True)
            box.clear()
            box.addItems(names + extra)
            if current in names + extra:
                box.setCurrentText(current)
            box.blockSignals(False)
        self._show_overlap()

    def _load_methods(self) -> None:
        """The method picker: the local registry's methods, or the server's."""
        url = self.url_edit.text().strip()
        try:
            self._methods = remote_methods(url) if url else local_methods()
        except MeccaError as exc:
            self._methods = []
            self.status.setText(f"Cannot list the methods: {_message(exc)}")
        except ImportError as exc:  # a torch-free install: only a server can run methods
            self._methods = []
            self.status.setText(f"Running here needs {exc.name}: enter a server URL.")
        current = self.method_box.currentText()
        self.method_box.blockSignals(True)
        self.method_box.clear()
        self.method_box.addItems([m.name for m in self._methods])
        if current in [m.name for m in self._methods]:
            self.method_box.setCurrentText(current)
        self.method_box.blockSignals(False)
        self._method_changed()

    @property
    def method(self) -> MethodChoice | None:
        """The method chosen in the picker."""
        index = self.method_box.currentIndex()
        return self._methods[index] if 0 <= index < len(self._methods) else None

    def _method_changed(self, *_: Any) -> None:
        method = self.method
        self.model_label.setText("" if method is None else method.label)

    @property
    def kind(self) -> str:
        """The click kind new points take."""
        return next(k for k, b in self.kind_buttons.items() if b.isChecked())

    def set_kind(self, kind: str) -> None:
        """Choose the kind of the next points (as the radio buttons do)."""
        self.kind_buttons[kind].setChecked(True)
        self._kind_changed()

    def _kind_changed(self) -> None:
        layer = self.clicks_layer()
        layer.feature_defaults = pd.DataFrame({"kind": pd.Categorical([self.kind], geometry.KINDS)})
        self.viewer.layers.selection.active = layer
        layer.mode = "add"

    # ---------------------------------------------------------------- the layers

    @property
    def image_layer(self) -> Image | None:
        """The image layer chosen in the widget."""
        name = self.image_box.currentText()
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        return layer if isinstance(layer, Image) else None

    def _geometry(self) -> dict[str, Any]:
        image = self.image_layer
        if image is None:
            return {}
        return {"scale": image.scale, "translate": image.translate}

    def clicks_layer(self) -> Points:
        """The points layer holding the clicks (made on first use)."""
        if CLICKS in self.viewer.layers:
            layer = self.viewer.layers[CLICKS]
            assert isinstance(layer, Points)
            return layer
        features = pd.DataFrame({"kind": pd.Categorical([], geometry.KINDS)})
        layer = self.viewer.add_points(
            np.empty((0, 3)),
            ndim=3,
            name=CLICKS,
            features=features,
            feature_defaults=pd.DataFrame({"kind": pd.Categorical([self.kind], geometry.KINDS)}),
            face_color="kind",
            face_color_cycle=dict(geometry.KIND_COLOURS),
            border_color="black",
            size=2.5,
            out_of_slice_display=False,
            **self._geometry(),
        )
        return layer

    def roi_layer(self) -> Shapes:
        """The shapes layer for the ROI (made on first use)."""
        if ROI in self.viewer.layers:
            layer = self.viewer.layers[ROI]
            assert isinstance(layer, Shapes)
            return layer
        return self.viewer.add_shapes(
            ndim=3,
            name=ROI,
            edge_color="yellow",
            face_color="transparent",
            edge_width=0.5,
            **self._geometry(),
        )

    def labels_layer(self) -> Labels:
        """The labels layer the mask goes to (a new ``MECCA mask`` when so chosen)."""
        name = self.labels_box.currentText()
        if name and name != NEW_LABELS and name in self.viewer.layers:
            layer = self.viewer.layers[name]
            assert isinstance(layer, Labels)
            return layer
        image = self.image_layer
        assert image is not None
        layer = self.viewer.add_labels(
            np.zeros(image.data.shape, dtype=np.uint16),
            name=MASK,
            metadata={RULES_KEY: self._pending_rules},
            **self._geometry(),
        )
        self._pending_rules = {}
        self._refresh_layers()
        self.labels_box.setCurrentText(MASK)
        return layer

    def _chosen_labels(self) -> Labels | None:
        """The labels layer chosen in the widget, or None (a new one is to be made)."""
        name = self.labels_box.currentText()
        if name and name != NEW_LABELS and name in self.viewer.layers:
            layer = self.viewer.layers[name]
            return layer if isinstance(layer, Labels) else None
        return None

    # ---------------------------------------------------------------- overlap rules

    def overlap_rules(self, layer: Labels | None = None) -> dict[int, str]:
        """The overlap rules (label value -> rule; a value not there overwrites) of a
        labels layer, default the chosen one: kept in its ``metadata["mecca_overlap"]``,
        or by the widget until the new ``MECCA mask`` layer is made."""
        layer = layer if layer is not None else self._chosen_labels()
        if layer is None:
            return self._pending_rules
        rules = layer.metadata.get(RULES_KEY)
        if not isinstance(rules, dict):
            rules = {}
            layer.metadata[RULES_KEY] = rules
        return rules

    def locked_values(self, layer: Labels | None = None) -> set[int]:
        """The locked label values of a labels layer (default: the chosen one)."""
        return {int(v) for v, rule in self.overlap_rules(layer).items() if rule == "lock"}

    @property
    def overlap(self) -> str:
        """The overlap rule of the current label value (``geometry.OVERLAP_RULES``)."""
        return OVERLAP_CHOICES[self.overlap_box.currentText()]

    def set_overlap(self, rule: str) -> None:
        """Choose the current label value's overlap rule (as the combo does)."""
        names = {r: name for name, r in OVERLAP_CHOICES.items()}
        if rule not in names:
            raise ValueError(f"unknown overlap rule {rule!r}: one of {', '.join(names)}")
        self.overlap_box.setCurrentText(names[rule])

    def _show_overlap(self) -> None:
        """The combo shows the current value's rule in the chosen labels layer."""
        rule = self.overlap_rules().get(self.value_spin.value(), "overwrite")
        names = {r: name for name, r in OVERLAP_CHOICES.items()}
        self.overlap_box.blockSignals(True)
        self.overlap_box.setCurrentText(names.get(rule, "Overwrite"))
        self.overlap_box.blockSignals(False)

    def _overlap_changed(self) -> None:
        """Remember the rule for the current value and write the mask by it."""
        self.overlap_rules()[self.value_spin.value()] = self.overlap
        self._write_mask()

    def _value_changed(self) -> None:
        self._show_overlap()
        self._write_mask()

    def _background(self) -> Callable[[], np.ndarray] | None:
        """The session's background evidence: a function giving where the chosen labels
        layer holds a locked value other than the current one (the layer's data is the
        image's (I, J, K) grid, as the session's volume), or None when there is none."""
        layer, image = self._chosen_labels(), self.image_layer
        if layer is None or image is None or layer.data.shape != image.data.shape:
            return None
        others = sorted(self.locked_values(layer) - {self.value_spin.value()})
        if not others:
            return None
        return lambda: np.isin(np.asarray(layer.data), others)

    def _placed_clicks(self) -> list[tuple[str, tuple[int, ...]]]:
        layer = self.clicks_layer()
        kinds = [str(k) for k in layer.features["kind"]] if len(layer.data) else []
        return geometry.points_to_clicks(layer.data, kinds)

    # ---------------------------------------------------------------- actions

    @property
    def busy(self) -> bool:
        """Whether a step (or undo, redo, reset, ROI) is running on the worker thread."""
        return self._worker is not None

    def _key(self) -> tuple[Any, ...]:
        image = self.image_layer
        method = self.method
        return (id(image), None if method is None else method.name, self.url_edit.text().strip())

    def _backend_maker(self) -> Callable[[], Backend] | None:
        """Make the backend on the worker (a learned method loads its model there), or
        None when the current one fits the chosen image, method and server."""
        image, method = self.image_layer, self.method
        if image is None or method is None:
            raise ValueError("choose an image layer and a method first")
        if image.data.ndim != 3:
            raise ValueError(f"the image must be 3D (I, J, K), got shape {image.data.shape}")
        if self.backend is not None and self._backend_key == self._key():
            return None
        array, scale, translate = np.asarray(image.data), image.scale, image.translate
        url = self.url_edit.text().strip()
        if url:
            return lambda: RemoteBackend(array, scale, translate, method, url)
        return lambda: LocalBackend(array, scale, translate, method)

    def _run(self, action: Callable[[Backend], View], what: str) -> None:
        """Run ``action`` on the backend in a worker thread; show its View when done."""
        if self.busy:
            return
        try:
            maker = self._backend_maker()
        except ValueError as exc:
            self.status.setText(str(exc))
            return
        key = self._key()
        current = self.backend
        background = self._background()  # read on Qt's thread, called on the worker's

        def work() -> tuple[Backend, View | BaseException]:
            backend = maker() if maker is not None else current
            assert backend is not None
            try:  # a refused action still hands over a newly made backend
                backend.set_background(background)
                return backend, action(backend)
            except Exception as exc:
                return backend, exc

        self._worker = create_worker(work, _start_thread=False, _ignore_errors=True)
        self._worker.returned.connect(lambda out: self._done(out, key, what))
        self._worker.errored.connect(self._failed)
        self._worker.finished.connect(self._idle)
        self.status.setText(f"{what}: running ...")
        self.busy_bar.setVisible(True)
        self._set_buttons()
        self._worker.start()

    def step(self) -> None:
        """Send the points the session does not have yet and run one step."""
        known = () if self._view is None or self.backend is None else self._view.clicks
        if self._backend_key != self._key():
            known = ()
        try:
            clicks = geometry.new_clicks(self._placed_clicks(), known)
        except MeccaError as exc:
            self.status.setText(_message(exc))
            return
        self._run(lambda b: b.step(clicks), "Step")

    def undo(self) -> None:
        """Undo the last step."""
        self._run(lambda b: b.undo(), "Undo")

    def redo(self) -> None:
        """Redo the last undone step."""
        self._run(lambda b: b.redo(), "Redo")

    def reset(self) -> None:
        """Forget the clicks and the result (a drawn ROI stays)."""
        self._run(lambda b: b.reset(), "Reset")

    def next_object(self) -> None:
        """Keep the mask in the labels layer as it is, reset the session and take the
        next label value: the next object is painted over the labels so far."""
        if self.busy or self._view is None:
            return
        self._base, self._view = None, None  # the labels layer as it is now is the base
        self.value_spin.setValue(self.value_spin.value() + 1)
        self._run(lambda b: b.reset(), "Next object")

    def roi_from_rectangle(self, as_box: bool = False) -> None:
        """Use the last rectangle drawn in the ROI layer as the ROI (resets the session);
        ``as_box``: as a box drawn tight around the object (a box prompt)."""
        image, layer = self.image_layer, self.roi_layer()
        if image is None or not len(layer.data):
            self.status.setText("Draw a rectangle in the MECCA ROI layer first.")
            return
        try:
            box = geometry.rectangle_to_box(layer.data[-1], image.data.shape)
        except MeccaError as exc:
            self.status.setText(_message(exc))
            return
        self._run(lambda b: b.set_roi(box, as_box), "Box" if as_box else "ROI")

    # ---------------------------------------------------------------- export

    def export(self) -> None:
        """Ask for a file name (a save dialog) and export the label map there."""
        path = ask_export_path(self, self._export_start())
        if not path:
            self.status.setText("Export cancelled: nothing written.")
            return
        self.export_labels(path)

    def _export_start(self) -> str:
        """Where the save dialog starts: the image's folder, the labels layer's name."""
        image, layer = self.image_layer, self._chosen_labels()
        name = layer.name if layer is not None else MASK
        source = image.metadata.get("source") if image is not None else None
        dicom = image is not None and image.metadata.get("format") == "dicom"
        folder = Path(source).parent if source else Path.cwd()
        return str(folder / (name + (SEG_ENDING if dicom else ".nii.gz")))

    @property
    def exporting(self) -> bool:
        """Whether an export is writing on its worker thread."""
        return self._export_worker is not None

    def export_labels(self, path: str | Path) -> FunctionWorker[str] | None:
        """Write the chosen labels layer, every value (the whole map), on the image's grid.

        The ending picks the format: ``.nii.gz``, ``.nii``, ``.nrrd`` or ``.mha`` are
        written with ``mecca.io.save_mask`` (values up to 65535), on the image layer's
        ``metadata["affine"]`` when the reader put one there, else on the affine of its
        scale and translate (:func:`backend.grid_affine`); ``.dcm`` is a DICOM SEG of one
        segment per value, named ``label <value>``, referencing the DICOM series the image
        layer was read from (its ``metadata["source"]``). An existing file is replaced
        (the save dialog asked).

        The layers are read (the labels copied) here, on Qt's thread; the file is written
        on a worker thread, so a large map or a SEG does not freeze the viewer, and the
        export button is disabled meanwhile. The status line says what was written when
        the worker is done, or why nothing was: at once for a refusal (no labels layer, an
        empty one, another ending, an image not from a DICOM series for ``.dcm``, another
        export running), when it is done for a failed write.

        Returns:
            The started worker (its ``finished`` signal: the status line is set), or None
            when refused.
        """
        if self.exporting:
            self.status.setText("Nothing exported: an export is running, wait for it.")
            return None
        try:
            write, started = self._export(Path(path).expanduser())
        except _Refused as exc:
            self.status.setText(f"Nothing exported: {exc}")
            return None
        except Exception as exc:  # shown, not raised (a button's slot)
            self.status.setText(f"Nothing exported: {_message(exc)}")
            return None

        def work() -> str:
            try:
                return write()
            except Exception as exc:  # a failed write: said in the status line
                return f"Nothing exported: {_message(exc)}"

        worker: FunctionWorker[str] = create_worker(work, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(self.status.setText)
        worker.errored.connect(lambda exc: self.status.setText(f"Nothing exported: {exc}"))
        worker.finished.connect(self._export_done)
        self._export_worker = worker
        self.export_button.setEnabled(False)
        self.status.setText(started)
        worker.start()
        return worker

    def _export_done(self) -> None:
        self._export_worker = None
        self.export_button.setEnabled(True)

    def _export(self, path: Path) -> tuple[Callable[[], str], str]:
        """Check the export and read the layers (Qt's thread; raises _Refused with what to
        do when it cannot): the write to run on the worker, which gives the status line's
        report, and the status line meanwhile."""
        from mecca.io import Volume, file_extension, save_mask

        ending = file_extension(path)
        if ending not in MASK_ENDINGS and ending != SEG_ENDING:
            endings = ", ".join([*MASK_ENDINGS, SEG_ENDING])
            raise _Refused(
                f"{path.name!r} has no ending the export writes: use one of {endings} "
                "(.dcm: a DICOM SEG, for an image read from a DICOM series)"
            )
        image, layer = self.image_layer, self._chosen_labels()
        if image is None:
            raise _Refused("choose the image layer the labels belong to (Image) first")
        if layer is None:
            raise _Refused(
                "no labels layer to export: choose one in Labels layer, or segment first "
                f"(the mask goes to a new {MASK!r} layer)"
            )
        if layer.data.shape != image.data.shape:
            raise _Refused(
                f"the labels layer {layer.name!r} has shape {layer.data.shape}, the image "
                f"{image.name!r} {image.data.shape}: choose a labels layer of the image's grid"
            )
        # a copy: the layer may be painted or stepped on while the worker writes
        labels, name = np.array(layer.data, copy=True), layer.name
        if not labels.any():
            raise _Refused(f"the labels layer {name!r} is empty (all 0): segment something first")
        started = f"Exporting {name!r} to {path} ..."
        if ending == SEG_ENDING:
            return self._export_seg(labels, image, name, path), started
        # save_mask reads only the grid (shape, affine) of the image it is given
        grid = Volume(np.broadcast_to(np.float32(0), image.data.shape), self._image_affine(image))

        def write() -> str:
            values = [int(v) for v in np.unique(labels) if v != 0]
            written = save_mask(labels, grid, path, force=True)
            return (
                f"Exported {name!r} to {written} ({MASK_ENDINGS[ending]} label map on the "
                f"image's grid, values {_listed(values)})."
            )

        return write, started

    def _export_seg(
        self, labels: np.ndarray, image: Image, name: str, path: Path
    ) -> Callable[[], str]:
        """The write of the label map as a DICOM SEG referencing the image's DICOM series
        (refused for an image not read from one)."""
        meta = image.metadata
        source = meta.get("source")
        if meta.get("format") != "dicom" or not source:
            raise _Refused(
                f"the image {image.name!r} was not read from a DICOM series, and a DICOM "
                "SEG must reference the series it was made on: export as .nii.gz, .nrrd "
                "or .mha instead, or open the series folder with the MECCA reader "
                "(File > Open Folder, docs/napari.md) and segment it there"
            )
        uid = meta.get("series_uid")

        def write() -> str:
            from mecca.dicom_seg import write_dicom_seg

            values = [int(v) for v in np.unique(labels) if v != 0]
            names = {v: f"label {v}" for v in values}
            written = write_dicom_seg(
                labels, source, path, labels=names, series_uid=uid, force=True
            )
            numbered = ""
            if values != list(range(1, len(values) + 1)):
                pairs = ", ".join(f"{v} -> {n}" for n, v in enumerate(values[:SHOWN_VALUES], 1))
                numbered = f"; DICOM numbers segments 1..N: value {pairs}"
            return (
                f"Exported {name!r} to {written} (DICOM SEG referencing {source}, "
                f"{len(values)} segment(s) named 'label <value>', values {_listed(values)}"
                f"{numbered})."
            )

        return write

    @staticmethod
    def _image_affine(image: Image) -> np.ndarray:
        """The image's voxel -> world affine: the one its file gave (the reader keeps it in
        ``metadata["affine"]``), else that of the layer's scale and translate."""
        affine = image.metadata.get("affine")
        if affine is not None and np.shape(affine) == (4, 4):
            return np.asarray(affine, dtype=np.float64)
        return grid_affine(image.scale, image.translate)

    def _done(
        self, out: tuple[Backend, View | BaseException], key: tuple[Any, ...], what: str
    ) -> None:
        backend, view = out
        if backend is not self.backend:
            self.backend, self._backend_key = backend, key
            self._base = None  # a new session paints on the labels layer as it is now
            self._view = None
            if self.kind not in backend.accepts:
                kinds = [k for k in geometry.KINDS if k in backend.accepts]
                if kinds:
                    self.set_kind(kinds[0])
            self._set_buttons()
        if isinstance(view, BaseException):
            self._failed(view)
            return
        self._show(view)
        seconds = "" if view.seconds is None else f" ({view.seconds:.2f} s)"
        self.status.setText(f"{what} done: {view.steps} step(s){seconds}.")

    def _failed(self, exc: BaseException) -> None:
        self.status.setText(f"Failed: {_message(exc)}")

    def _idle(self) -> None:
        self._worker = None
        self.busy_bar.setVisible(False)
        self._set_buttons()

    def _set_buttons(self) -> None:
        view, idle = self._view, not self.busy
        self.step_button.setEnabled(idle)
        self.roi_button.setEnabled(idle)
        self.box_button.setEnabled(idle)
        self.undo_button.setEnabled(idle and view is not None and view.can_undo)
        self.redo_button.setEnabled(idle and view is not None and view.can_redo)
        self.reset_button.setEnabled(idle and view is not None)
        self.next_button.setEnabled(idle and view is not None and view.mask is not None)
        if self.backend is not None:
            for kind, button in self.kind_buttons.items():
                button.setEnabled(kind in self.backend.accepts)

    # ---------------------------------------------------------------- showing a View

    def _show(self, view: View) -> None:
        """Put a View into the layers (Qt's thread)."""
        self._view = view
        clicks = self.clicks_layer()
        if view.clicks:
            clicks.data = np.asarray([p for _, p in view.clicks], dtype=float)
            kinds = [k for k, _ in view.clicks]
        else:
            clicks.data = np.empty((0, 3))
            kinds = []
        clicks.features = pd.DataFrame({"kind": pd.Categorical(kinds, geometry.KINDS)})
        clicks.refresh_colors()
        self._draw_roi()
        self._image_result(PROB, view.prob, colormap="inferno", blending="additive")
        self._labels_result(ADVICE, view.advice)
        self._write_mask()
        self._set_buttons()
        layers = self.viewer.layers
        layers.move(layers.index(clicks), len(layers))
        layers.selection.active = clicks

    def _draw_roi(self, *_: Any) -> None:
        """Show the session's ROI as one rectangle per slice along the viewed axis."""
        view = self._view
        if view is None or (view.roi is None and ROI not in self.viewer.layers):
            return
        layer = self.roi_layer()
        layer.data = []
        if view.roi is None or self.viewer.dims.ndisplay != 2:
            return
        axis = self.viewer.dims.order[-3]  # the axis the 2D view looks along
        layer.add_rectangles(geometry.box_rectangles(view.roi, axis))

    def _image_result(self, name: str, data: np.ndarray | None, **kwargs: Any) -> None:
        if data is None:
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
            return
        if name in self.viewer.layers:
            self.viewer.layers[name].data = data
            return
        self.viewer.add_image(
            data, name=name, contrast_limits=(0.0, 1.0), opacity=0.6, **kwargs, **self._geometry()
        )

    def _labels_result(self, name: str, data: np.ndarray | None) -> None:
        if data is None:
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
            return
        if name in self.viewer.layers:
            self.viewer.layers[name].data = data
            return
        layer = self.viewer.add_labels(data, name=name, opacity=0.9, **self._geometry())
        layer.contour = 1  # outlines: the regions stay readable over the mask

    def _write_mask(self) -> None:
        """Paint the current mask with the label value over the labels layer's content
        as it was when the session started (so undo and a new value repaint it), by the
        value's overlap rule: voxels of the other locked values never change, and a voxel
        the mask leaves goes back to what it held at the session's start."""
        if self._view is None or self.image_layer is None:
            return
        if self._view.mask is None and self._base is None:
            return
        layer = self.labels_layer()
        if layer.data.shape != self.image_layer.data.shape:
            self.status.setText(f"The labels layer {layer.name!r} is not of the image's shape.")
            return
        if self._base is None or self._base_layer is not layer:
            self._base, self._base_layer = np.array(layer.data, copy=True), layer
        value = self.value_spin.value()
        rule = self.overlap_rules(layer).get(value, "overwrite")
        locked = self.locked_values(layer)
        layer.data = geometry.paint(self._base, self._view.mask, value, rule, locked)
