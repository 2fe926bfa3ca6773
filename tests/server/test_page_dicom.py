"""DICOM SEG in the web page (issue 30): a session on a DICOM series opened from an image
root shows a "Download DICOM SEG" button and a segment-name field; the SEG it downloads
references the series and holds the mask. A NIfTI session shows none of it.

Drives the real page in headless Chromium (see ``test_page.py`` for the harness).
"""

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
hd = pytest.importorskip("highdicom")
import pydicom  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid  # noqa: E402
from server_images import served  # noqa: E402
from test_page import (  # noqa: E402
    DOCS_SCREENSHOTS,
    _browser,
    _centred_ball,
    _open_image,
    _open_page,
    _roi_then_foreground_click,
    _wait,
)

from conftest import sphere  # noqa: E402
from mecca.server.settings import ServerSettings  # noqa: E402
from test_dicom_seg import write_series  # noqa: E402

SERIES_SHAPE = (16, 40, 40)  # slices, rows, columns
STATUS = "document.getElementById('status').textContent"


def ball_series(folder: Path) -> str:
    """A CT series (as ``test_dicom_seg.source_slices`` writes one, larger) of a bright
    ball in the middle: its Series Instance UID."""
    n, rows, cols = SERIES_SHAPE
    ball = sphere(SERIES_SHAPE, (n / 2, rows / 2, cols / 2), 6)
    noise = np.random.default_rng(0).normal(0, 20, SERIES_SHAPE)
    values = np.clip(100 + 1000 * ball + noise, 0, None).astype(np.uint16)
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    datasets = []
    for s in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SOPClassUID = CTImageStorage
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.FrameOfReferenceUID = frame_of_reference
        ds.Modality = "CT"
        ds.PatientName, ds.PatientID, ds.StudyID, ds.SeriesNumber = "Doe^Jane", "7", "1", 3
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.ImagePositionPatient = ["-20.0", "-20.0", f"{2.0 * s:.1f}"]
        ds.PixelSpacing, ds.SliceThickness, ds.InstanceNumber = ["1.0", "1.0"], "2.0", s + 1
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = values[s].tobytes()
        datasets.append(ds)
    write_series(folder, datasets)
    return series


@pytest.fixture(scope="module")
def dicom_server(tmp_path_factory):
    pytest.importorskip("uvicorn")
    root = tmp_path_factory.mktemp("images")
    uid = ball_series(root / "ct")
    _centred_ball(root)  # ball.nii.gz
    state = tmp_path_factory.mktemp("state")
    settings = ServerSettings(roots=(root,), state_dir=state, methods=("geos",))
    with served(settings) as url:
        yield url, root, uid


def test_a_person_downloads_a_dicom_seg_and_a_nifti_session_offers_none(dicom_server, tmp_path):
    sync_api = _browser()
    url, root, uid = dicom_server
    with sync_api.sync_playwright() as p:
        browser, page, errors = _open_page(p, url)
        page.click("#files li[data-path='ct'][data-folder='true']")  # into the series' folder
        _wait(page, "document.querySelector(\"#files li[data-path='ct'][data-folder='false']\")")
        cx, cy, side = _open_image(page, "ct", "geos")  # "Open this folder (DICOM series)"
        assert page.evaluate("window.mecca.session.dicom") is True
        assert page.is_visible("#downloadSeg") and page.is_disabled("#downloadSeg")
        assert page.input_value("#segLabel") == "segmentation"
        assert ".dcm writes a DICOM SEG" in page.text_content("#exportHint")
        assert page.is_visible("#labelMapHint")
        _roi_then_foreground_click(page, cx, cy, side, 0.3, cx)
        voxels = page.evaluate("window.mecca.session.last.mask_voxels")
        assert voxels > 0
        page.fill("#segLabel", "ball")
        with page.expect_download() as download:
            page.click("#downloadSeg")
        saved = tmp_path / "downloaded.dcm"
        download.value.save_as(saved)
        assert download.value.suggested_filename == "seg.dcm"
        _wait(page, f"{STATUS}.startsWith('Downloaded seg.dcm')")
        assert 'segment "ball"' in page.evaluate(STATUS)
        shots = DOCS_SCREENSHOTS if os.environ.get("MECCA_SCREENSHOTS") == "1" else tmp_path
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "page_dicom_seg.png"))
        page.fill("#exportName", "ball.dcm")  # the export name's way: a SEG in the state folder
        page.click("#export")
        _wait(page, f"{STATUS}.startsWith('Exported ball.dcm (DICOM SEG')")
        page.click("#files li[data-path='']")  # back to the root, then the NIfTI image
        _wait(page, "document.querySelector(\"#files li[data-path='ball.nii.gz']\")")
        _open_image(page, "ball.nii.gz", "geos")
        assert page.evaluate("window.mecca.session.dicom") is False
        assert page.is_hidden("#dicomSeg") and page.is_hidden("#downloadSeg")
        assert page.is_hidden("#segLabel") and page.is_hidden("#labelMapHint")
        assert ".dcm" not in page.text_content("#exportHint")
        browser.close()
    assert not errors, errors
    seg = hd.seg.segread(saved)
    assert seg.Modality == "SEG"
    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [uid]
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["ball"]
    sources = {pydicom.dcmread(f).SOPInstanceUID for f in (root / "ct").iterdir()}
    referenced = {
        i.ReferencedSOPInstanceUID
        for s in seg.ReferencedSeriesSequence
        for i in s.ReferencedInstanceSequence
    }
    assert referenced == sources
    stacks = seg.get_pixels_by_source_instance(
        sorted(sources), segment_numbers=[1], assert_missing_frames_are_empty=True
    )
    assert int((stacks > 0).sum()) == voxels  # the page's mask, voxel for voxel in count
