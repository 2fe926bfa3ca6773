"""The plugin's reader on folders (napari's File > Open Folder): npe2 matches no filename
pattern against a folder, it offers every reader with ``accepts_directories`` for every
folder, so :func:`get_reader` must take a DICOM series folder (whatever its name) and
return None for any other folder (napari then uses another reader). Neither napari nor a
display is needed: the reader imports no napari, and the npe2 checks use npe2's plugin
manager alone (skipped without npe2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from mecca.napari_plugin.reader import get_reader, holds_dicom, read
from test_dicom_seg import SHAPE, source_slices, write_series

PNG_START = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def series(tmp_path: Path) -> Path:
    """A CT series (single-frame slices) in a folder whose name has no DICOM ending."""
    folder = write_series(tmp_path / "ct series", source_slices())
    (folder / "README.txt").write_text("not DICOM; sorts before the slices")
    (folder / ".DS_Store").write_bytes(b"\0" * 200)
    return folder


@pytest.fixture
def others(tmp_path: Path) -> dict[str, Path]:
    """Folders that are no DICOM series ``mecca.io.load`` reads."""
    folders = {
        name: tmp_path / name
        for name in ("empty", "pngs", "store.zarr", "fake_dicom", "nested", "dicomdir")
    }
    for folder in folders.values():
        folder.mkdir()
    for n in range(3):
        (folders["pngs"] / f"slice{n}.png").write_bytes(PNG_START + bytes(200))
    (folders["store.zarr"] / ".zgroup").write_text('{"zarr_format": 2}')
    (folders["store.zarr"] / "image").mkdir()
    (folders["store.zarr"] / "image" / ".zarray").write_text("{}")
    (folders["store.zarr"] / "image" / "0.0.0").write_bytes(bytes(300))
    (folders["fake_dicom"] / "im0.dcm").write_bytes(bytes(100))  # a .dcm name, too short
    write_series(folders["nested"] / "series", source_slices())  # one level down: not read
    dicomdir = next(iter((folders["nested"] / "series").iterdir())).read_bytes()
    (folders["dicomdir"] / "DICOMDIR").write_bytes(dicomdir)  # an index, no series
    return folders


def test_get_reader_takes_a_dicom_series_folder(series):
    assert holds_dicom(series)
    assert get_reader(str(series)) is read
    assert get_reader([str(series)]) is read
    assert get_reader(str(series) + "/") is read
    [(data, kwargs, kind)] = read(str(series))
    assert kind == "image" and data.shape == SHAPE[::-1]  # (columns, rows, slices): I, J, K
    assert kwargs["name"] == "ct series"
    assert np.allclose(kwargs["scale"], (0.9, 0.7, 2.5))  # column, row spacing; slice step
    meta = kwargs["metadata"]
    assert meta["format"] == "dicom" and meta["source"] == str(series)
    assert meta["series_uid"] == pydicom.dcmread(next(series.glob("*.dcm"))).SeriesInstanceUID


def test_get_reader_leaves_other_folders_to_other_readers(others):
    for name, folder in others.items():
        assert not holds_dicom(folder), name
        assert get_reader(str(folder)) is None, name
    assert get_reader(str(others["empty"] / "missing")) is None


# ---------------------------------------------------------------- through npe2


@pytest.fixture
def plugins():
    """npe2's plugin manager (napari's: npe2 runs a command through it) after finding the
    installed plugins, MECCA through its ``napari.manifest`` entry point: the manifest is
    read as napari reads it."""
    npe2 = pytest.importorskip("npe2", reason="npe2 (napari's plugin engine) is not installed")
    pm = npe2.PluginManager.instance()
    pm.discover(include_npe1=False)  # registers only what it had not found yet
    assert "mecca" in {m.name for m in pm.iter_manifests()}, "MECCA's manifest not found"
    return pm


def _mecca_reader(pm, path: Path):
    """MECCA's reader contribution when npe2 finds it compatible with ``path``, else None."""
    readers = [r for r in pm.iter_compatible_readers(str(path)) if r.plugin_name == "mecca"]
    return readers[0] if readers else None


def _reader_function(pm, path: Path):
    """What MECCA's reader gives napari for ``path`` (None: it refuses it), as npe2 asks."""
    contribution = _mecca_reader(pm, path)
    if contribution is None:
        return None
    return contribution.exec(kwargs={"path": [str(path)], "stack": False, "_registry": pm.commands})


def test_npe2_offers_the_mecca_reader_for_a_dicom_folder_only(plugins, series, others):
    read_series = _reader_function(plugins, series)
    assert read_series is not None
    [(data, kwargs, kind)] = read_series([str(series)], stack=False)
    assert kind == "image" and data.shape == SHAPE[::-1]
    assert kwargs["metadata"]["format"] == "dicom"

    for name, folder in others.items():
        # npe2 lists the reader for any folder; its get_reader refuses the folder
        assert _mecca_reader(plugins, folder) is not None, name
        assert _reader_function(plugins, folder) is None, name


def test_npe2_matches_files_by_their_image_endings_only(plugins, series, tmp_path):
    for name in ("case.nii.gz", "case.NII.GZ", "case.nrrd", "case.mha", "case.gipl"):
        assert _mecca_reader(plugins, tmp_path / name) is not None, name
    for name in ("slice.dcm", "image.png", "notes.txt", "store.zarr"):
        assert _mecca_reader(plugins, tmp_path / name) is None, name
    assert _mecca_reader(plugins, next(series.glob("*.dcm"))) is None  # one slice: a file


def test_napari_opens_a_dicom_folder_with_the_mecca_reader(plugins, series, others):
    components = pytest.importorskip("napari.components", reason="napari is not installed")
    viewer = components.ViewerModel()  # no Qt: the model napari's File > Open fills
    [layer] = viewer.open(str(series), plugin="mecca")
    assert layer.data.shape == SHAPE[::-1] and layer.metadata["format"] == "dicom"
    assert layer.metadata["source"] == str(series)
    with pytest.raises(ValueError, match="refused"):
        viewer.open(str(others["pngs"]), plugin="mecca")
    assert len(viewer.layers) == 1
