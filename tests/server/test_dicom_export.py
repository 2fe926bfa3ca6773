"""DICOM SEG export from the server: a session opened on a DICOM series under an image
root exports its mask (``GET seg.dcm``, ``export``) and a label map of several sessions
(``/api/labelmap``) as SEGs whose frames land on the source slices; other sessions (a
NIfTI file, an uploaded DICOM zip) get a 400 that says why."""

import gzip
import io
import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from mecca.io import load, save_volume
from test_cli_dicom import block_series, check_seg_frames, check_seg_frames_of_segment

pytest.importorskip("fastapi")
pytest.importorskip("highdicom")
from fastapi.testclient import TestClient  # noqa: E402

from mecca.server.app import create_app  # noqa: E402
from mecca.server.settings import ServerSettings  # noqa: E402

CLIENT = {"X-Mecca-Client": "test"}
OCTET = {"content-type": "application/octet-stream"}
FG, BG = (3, 3, 2), [(0, 0, 0), (6, 5, 4)]  # voxels (i, j, k) of the block series


@pytest.fixture()
def root(tmp_path) -> Path:
    folder = block_series(tmp_path / "images" / "ct")
    save_volume(load(folder), tmp_path / "images" / "image.nii.gz")
    return tmp_path / "images"


def _client(root: Path, state: Path) -> TestClient:
    settings = ServerSettings(roots=(root,), state_dir=state, methods=("growcut",))
    return TestClient(create_app(settings), base_url="http://127.0.0.1", headers=CLIENT)


def _clicks(affine: np.ndarray, fg, bg) -> dict:
    def ras(ijk) -> list[float]:
        return (affine[:3, :3] @ np.asarray(ijk, float) + affine[:3, 3]).tolist()

    clicks = [{"kind": "foreground", "xyz_mm": ras(fg)}]
    clicks += [{"kind": "background", "xyz_mm": ras(b)} for b in bg]
    return {"clicks": clicks}


def _open_and_click(client: TestClient, path: str, fg=FG, bg=BG) -> str:
    opened = client.post("/api/sessions", json={"root": 0, "path": path})
    assert opened.status_code == 200, opened.text
    sid, affine = opened.json()["id"], np.array(opened.json()["affine"])
    stepped = client.post(f"/api/sessions/{sid}/clicks", json=_clicks(affine, fg, bg))
    assert stepped.status_code == 200, stepped.text
    return sid


def _mask(client: TestClient, sid: str) -> np.ndarray:
    content = client.get(f"/api/sessions/{sid}/mask.nii.gz").content
    return np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(content)).dataobj)


def test_a_dicom_session_downloads_its_mask_as_a_seg(root, tmp_path):
    client = _client(root, tmp_path / "state")
    sid = _open_and_click(client, "ct")
    mask = _mask(client, sid)
    assert mask.sum() == 3 * 3 * 4 and mask[FG]  # the block
    reply = client.get(f"/api/sessions/{sid}/seg.dcm", params={"label": "liver"})
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/dicom"
    (tmp_path / "seg.dcm").write_bytes(reply.content)
    check_seg_frames(tmp_path / "seg.dcm", root / "ct", mask)
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver"]
    exported = client.post(f"/api/sessions/{sid}/export", json={"name": "a/b.dcm"})
    assert exported.status_code == 200, exported.text
    written = tmp_path / "state" / "exports" / sid / "b.dcm"
    check_seg_frames(written, root / "ct", mask)
    assert pydicom.dcmread(written).SegmentSequence[0].SegmentLabel == "segmentation"
    restarted = _client(root, tmp_path / "state")  # the source is in the saved state
    again = restarted.get(f"/api/sessions/{sid}/seg.dcm")
    assert again.status_code == 200, again.text
    (tmp_path / "again.dcm").write_bytes(again.content)
    check_seg_frames(tmp_path / "again.dcm", root / "ct", mask)


def test_a_label_map_of_two_sessions_as_a_seg(root, tmp_path):
    client = _client(root, tmp_path / "state")
    first = _open_and_click(client, "ct")
    other = client.post(f"/api/sessions/{first}/sibling", json={}).json()
    affine = np.array(other["affine"])
    body = _clicks(affine, (0, 0, 0), [(3, 3, 2), (6, 5, 4)])  # the background's corner
    assert client.post(f"/api/sessions/{other['id']}/clicks", json=body).status_code == 200
    masks = {1: _mask(client, first) > 0, 2: _mask(client, other["id"]) > 0}
    assert masks[2].any()
    reply = client.post(
        "/api/labelmap",
        json={
            "labels": [
                {"session": first, "value": 1, "label": "liver"},
                {"session": other["id"], "value": 2},
            ],
            "name": "labels.dcm",
        },
    )
    assert reply.status_code == 200, reply.text
    written = tmp_path / "state" / reply.json()["folder"] / "labels.dcm"
    seg = pydicom.dcmread(written)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "label 2"]
    merged = np.zeros(masks[1].shape, dtype=np.uint8)
    merged[masks[2]] = 2
    merged[masks[1]] = 1  # disjoint here; merge_labels decides where they overlap
    assert not (masks[1] & masks[2]).any()
    for number in (1, 2):
        check_seg_frames_of_segment(written, root / "ct", merged == number, number)


def test_sessions_without_a_series_get_a_clear_refusal(root, tmp_path):
    client = _client(root, tmp_path / "state")
    nifti = _open_and_click(client, "image.nii.gz")
    for reply in (
        client.get(f"/api/sessions/{nifti}/seg.dcm"),
        client.post(f"/api/sessions/{nifti}/export", json={"name": "seg.dcm"}),
        client.post(
            "/api/labelmap",
            json={"labels": [{"session": nifti, "value": 1}], "name": "labels.dcm"},
        ),
    ):
        assert reply.status_code == 400, reply.text
        assert "not a DICOM series opened from an image root" in reply.json()["error"]
        assert "mask.nii.gz" in reply.json()["error"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((root / "ct").iterdir()):
            zf.write(path, f"ct/{path.name}")
    uploaded = client.post(
        "/api/sessions/upload?filename=ct.zip", content=archive.getvalue(), headers=OCTET
    )
    assert uploaded.status_code == 200, uploaded.text
    reply = client.get(f"/api/sessions/{uploaded.json()['id']}/seg.dcm")
    assert reply.status_code == 400 and "uploaded DICOM .zip" in reply.json()["error"]


def test_bad_requests_and_a_changed_series_are_4xx(root, tmp_path):
    client = _client(root, tmp_path / "state")
    opened = client.post("/api/sessions", json={"root": 0, "path": "ct"}).json()
    reply = client.get(f"/api/sessions/{opened['id']}/seg.dcm")
    assert reply.status_code == 400 and "run a step first" in reply.json()["error"]
    sid = _open_and_click(client, "ct")
    reply = client.get(f"/api/sessions/{sid}/seg.dcm", params={"label": "a\\b"})
    assert reply.status_code == 400 and "backslash" in reply.json()["error"]
    reply = client.post(f"/api/sessions/{sid}/export", json={"name": "seg.txt"})
    assert reply.status_code == 400 and ".dcm" in reply.json()["error"]
    next(iter(sorted((root / "ct").iterdir()))).unlink()  # a slice gone since opening
    reply = client.get(f"/api/sessions/{sid}/seg.dcm")
    assert reply.status_code == 400 and "no longer" in reply.json()["error"], reply.text
    shutil.rmtree(root / "ct")
    reply = client.get(f"/api/sessions/{sid}/seg.dcm")
    assert reply.status_code == 400, reply.text


def test_the_file_list_says_which_folder_is_a_dicom_series(root, tmp_path):
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("not an image")
    client = _client(root, tmp_path / "state")
    listing = client.get("/api/files", params={"root": 0}).json()
    assert {"name": "ct", "folder": True} in listing["entries"] and listing["series"] is False
    series = client.get("/api/files", params={"root": 0, "folder": "ct"}).json()
    assert series["series"] is True and series["entries"] == []  # its slices are not listed
    notes = client.get("/api/files", params={"root": 0, "folder": "notes"}).json()
    assert notes["series"] is False
    opened = client.post("/api/sessions", json={"root": 0, "path": "ct"}).json()
    assert opened["dicom"] is True
    nifti = client.post("/api/sessions", json={"root": 0, "path": "image.nii.gz"}).json()
    assert nifti["dicom"] is False
