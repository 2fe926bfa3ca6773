"""The JSON API end to end (FastAPI TestClient): geometry, steps, autosave, isolation, refusals."""

import gzip
import io
import threading
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from server_images import AFFINES, CENTRE, ball, write_images

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from mecca.errors import ConfigError  # noqa: E402
from mecca.io import Volume  # noqa: E402
from mecca.server.app import SLICE_BOX_DEPTH, box_from_corners, create_app  # noqa: E402
from mecca.server.settings import ServerSettings  # noqa: E402
from mecca.server.viewer_overlay import OTHER_OUTLINE  # noqa: E402

METHOD = "random_walker"
CLIENT = {"X-Mecca-Client": "test"}
"""The header every API client sends (the server's cross-site guard)."""
OCTET = {"content-type": "application/octet-stream"}
"""The content type of an upload (the page sends it; others are refused with 415)."""
UPLOAD = "/api/sessions/upload?filename="


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("images"))


def _client(root: Path, state: Path, **kw) -> TestClient:
    kw.setdefault("methods", (METHOD, "mecca"))
    settings = ServerSettings(roots=(root,), state_dir=state, **kw)
    return TestClient(create_app(settings), base_url="http://127.0.0.1", headers=CLIENT)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def _nifti(content: bytes) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(content))


def _ras(affine: np.ndarray, ijk) -> list[float]:
    return (affine[:3, :3] @ np.asarray(ijk, float) + affine[:3, 3]).tolist()


@pytest.mark.parametrize("orientation", sorted(AFFINES))
def test_world_clicks_land_on_the_right_voxels_and_the_mask_lines_up(root, tmp_path, orientation):
    client = _client(root, tmp_path / "state")
    opened = client.post("/api/sessions", json={"root": 0, "path": f"{orientation}.nii.gz"})
    assert opened.status_code == 200, opened.text
    state = opened.json()
    sid, affine = state["id"], np.array(state["affine"])
    np.testing.assert_allclose(affine, AFFINES[orientation], atol=1e-5)
    served = _nifti(client.get(f"/api/sessions/{sid}/image.nii.gz").content)
    assert served.header.get_qform(coded=True) is not None
    np.testing.assert_allclose(served.get_qform(), served.get_sform(), atol=1e-6)
    click = {"kind": "foreground", "xyz_mm": _ras(affine, CENTRE)}
    stepped = client.post(f"/api/sessions/{sid}/clicks", json={"clicks": [click]})
    assert stepped.status_code == 200, stepped.text
    assert stepped.json()["steps"] == 1 and stepped.json()["last"]["mask_voxels"] > 0
    mask = _nifti(client.get(f"/api/sessions/{sid}/mask.nii.gz").content)
    np.testing.assert_allclose(mask.affine, AFFINES[orientation], atol=1e-5)
    _, gt = ball()
    assert _dice(np.asarray(mask.dataobj), gt) > 0.9
    session = client.app.state.server.store.get(sid).session
    assert session.history[0][0].position == CENTRE


def test_undo_redo_reset_export_and_results(root, tmp_path):
    client = _client(root, tmp_path / "state")
    sid = client.post("/api/sessions", json={"root": 0, "path": "lps.nii.gz"}).json()["id"]
    affine = AFFINES["lps"]
    fg = {"kind": "fg", "xyz_mm": _ras(affine, CENTRE)}
    bg = {"kind": "bg", "xyz_mm": _ras(affine, (3, 3, 3))}
    assert client.post(f"/api/sessions/{sid}/clicks", json={"clicks": [fg, bg]}).status_code == 200
    first = client.get(f"/api/sessions/{sid}/mask.nii.gz").content
    client.post(f"/api/sessions/{sid}/clicks", json={"clicks": [bg], "step": True})
    assert client.post(f"/api/sessions/{sid}/undo").json()["can_redo"] is True
    assert client.get(f"/api/sessions/{sid}/mask.nii.gz").content == first
    assert client.post(f"/api/sessions/{sid}/redo").json()["steps"] == 2
    prob = _nifti(client.get(f"/api/sessions/{sid}/prob.nii.gz").content)
    assert prob.get_data_dtype() == np.float32
    assert client.get(f"/api/sessions/{sid}/advice.nii.gz").status_code == 400  # no advice
    overlay = client.get(f"/api/sessions/{sid}/overlay")
    i0, j0, k0, ni, nj, nk = map(int, overlay.headers["x-mecca-box"].split(","))
    labels = np.frombuffer(overlay.content, np.uint8).reshape((ni, nj, nk), order="F")
    mask = np.asarray(_nifti(client.get(f"/api/sessions/{sid}/mask.nii.gz").content).dataobj)
    inside = mask[i0 : i0 + ni, j0 : j0 + nj, k0 : k0 + nk] > 0
    assert inside.sum() == mask.sum() > 0  # the box holds the whole mask
    assert np.all(labels[inside] >= 4) and not np.any(labels[~inside] > 4)
    exported = client.post(f"/api/sessions/{sid}/export", json={"name": "../../evil/ball.nii.gz"})
    assert exported.status_code == 200 and exported.json()["exported"] == "ball.nii.gz"
    written = tmp_path / "state" / "exports" / sid / "ball.nii.gz"
    np.testing.assert_allclose(nib.load(written).affine, affine, atol=1e-5)
    assert client.post(f"/api/sessions/{sid}/reset").json()["steps"] == 0
    assert client.delete(f"/api/sessions/{sid}").status_code == 200
    assert client.get(f"/api/sessions/{sid}").status_code == 404


def test_sessions_autosave_and_come_back_after_a_restart(root, tmp_path):
    state = tmp_path / "state"
    client = _client(root, state)
    sid = client.post("/api/sessions", json={"root": 0, "path": "las.nii.gz"}).json()["id"]
    click = {"kind": "fg", "xyz_mm": _ras(AFFINES["las"], CENTRE)}
    client.post(f"/api/sessions/{sid}/clicks", json={"clicks": [click]})
    before = np.asarray(_nifti(client.get(f"/api/sessions/{sid}/mask.nii.gz").content).dataobj)
    restarted = _client(root, state)  # a new server process on the same state folder
    back = restarted.get(f"/api/sessions/{sid}")
    assert back.status_code == 200 and back.json()["steps"] == 1
    after = np.asarray(_nifti(restarted.get(f"/api/sessions/{sid}/mask.nii.gz").content).dataobj)
    np.testing.assert_array_equal(before, after)
    assert sorted(p.name for p in (state / "sessions" / sid).iterdir() if p.name[0] != ".") == [
        "image.nii.gz",
        "mask.nii.gz",
        "session.json",
    ]


def test_a_drawn_box_is_a_box_prompt_for_the_generalist(root, tmp_path):
    """The page's box tool: the generalist segments the box at once; undo, a restart and a
    method without boxes keep what the user drew."""
    state = tmp_path / "state"
    settings = {"methods": ("generalist", METHOD)}
    client = _client(root, state, **settings)
    sid = client.post("/api/sessions", json={"root": 0, "path": "lps.nii.gz"}).json()["id"]
    lo, hi = np.subtract(CENTRE, 6), np.add(CENTRE, 6)  # the ball's box, last voxels inclusive
    corners = [_ras(AFFINES["lps"], lo), _ras(AFFINES["lps"], hi)]
    boxed = client.put(f"/api/sessions/{sid}/roi", json={"corners_mm": corners, "as_box": True})
    assert boxed.status_code == 200, boxed.text
    data = boxed.json()
    assert data["method"] == "generalist" and data["steps"] == 1  # segmented at once
    assert data["box"] == [lo.tolist(), (hi + 1).tolist()]
    assert np.all(np.less(data["roi"][0], lo)) and np.all(np.greater(data["roi"][1], hi + 1))
    mask = np.asarray(_nifti(client.get(f"/api/sessions/{sid}/mask.nii.gz").content).dataobj)
    assert _dice(mask, ball()[1]) > 0.8
    assert client.post(f"/api/sessions/{sid}/undo").json()["steps"] == 0
    assert client.post(f"/api/sessions/{sid}/redo").json()["steps"] == 1
    restarted = _client(root, state, **settings).get(f"/api/sessions/{sid}").json()
    assert restarted["steps"] == 1 and restarted["box"] == data["box"]
    walker = client.put(f"/api/sessions/{sid}/method", json={"method": METHOD}).json()
    assert walker["box"] == data["box"] and walker["roi"] == data["roi"]  # the same crop
    as_roi = client.put(f"/api/sessions/{sid}/roi", json={"corners_mm": corners})
    assert as_roi.json()["box"] is None and as_roi.json()["steps"] == 0


def test_a_box_drawn_on_one_slice_reaches_across_slices():
    volume = Volume(np.zeros((40, 40, 30), np.float32), np.diag([1.0, 1.0, 2.0, 1.0]))
    corners = [[10.0, 10.0, 16.0], [21.0, 31.0, 16.0]]  # 12 x 22 voxels of 1 mm, slice 8
    box = box_from_corners(volume, corners, in_mm=True)
    across = round(SLICE_BOX_DEPTH * (12 + 22) / 2 / 2.0)  # the mean in-plane size in mm
    assert box.start[:2] == (10, 10) and box.stop[:2] == (22, 32)
    assert box.stop[2] - box.start[2] == across and box.start[2] == 8 - across // 2
    roi = box_from_corners(volume, corners)  # an ROI: as deep as wide in voxels
    assert roi.stop[2] - roi.start[2] == 17


def test_concurrent_sessions_never_see_each_other(root, tmp_path):
    """Four sessions stepped at once give exactly the masks each gives alone."""
    centres = [(12, 10, 6), (28, 26, 14), (14, 26, 10), (26, 12, 12)]

    def run(client: TestClient, ids: list[str], n: int, out: dict) -> None:
        click = {"kind": "fg", "xyz_mm": list(map(float, centres[n]))}
        client.post(f"/api/sessions/{ids[n]}/clicks", json={"clicks": [click]})
        out[n] = np.asarray(
            _nifti(client.get(f"/api/sessions/{ids[n]}/mask.nii.gz").content).dataobj
        )

    def upload_all(client: TestClient) -> list[str]:
        ids = []
        for n, centre in enumerate(centres):
            image, _ = ball(seed=n, centre=centre)
            nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / f"u{n}.nii.gz")
            body = (tmp_path / f"u{n}.nii.gz").read_bytes()
            reply = client.post(
                f"/api/sessions/upload?filename=u{n}.nii.gz", content=body, headers=OCTET
            )
            assert reply.status_code == 200, reply.text
            ids.append(reply.json()["id"])
        return ids

    alone_client = _client(root, tmp_path / "alone")
    alone_ids, alone = upload_all(alone_client), {}
    for n in range(len(centres)):
        run(alone_client, alone_ids, n, alone)
    together_client = _client(root, tmp_path / "together")
    together_ids, together = upload_all(together_client), {}
    threads = [
        threading.Thread(target=run, args=(together_client, together_ids, n, together))
        for n in range(len(centres))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n, centre in enumerate(centres):
        np.testing.assert_array_equal(together[n], alone[n])
        _, gt = ball(seed=n, centre=centre)
        assert _dice(together[n], gt) > 0.75, n


def test_bad_requests_get_4xx_with_a_message(root, tmp_path):
    client = _client(root, tmp_path / "state", max_upload_bytes=200_000, max_voxels=20_000)
    checks = [
        (client.post("/api/sessions", json={"root": 0, "path": "../../etc/passwd"}), 400),
        (client.post("/api/sessions", json={"root": 5, "path": "lps.nii.gz"}), 400),
        (client.post("/api/sessions", json={"root": 0}), 422),
        (client.get("/api/sessions/0123456789abcdef01234567"), 404),
        (client.get("/api/sessions/../../x"), 404),
        (client.post(f"{UPLOAD}a.exe", content=b"MZ", headers=OCTET), 400),
        (client.post(f"{UPLOAD}a.nii.gz", content=b"x" * 300_000, headers=OCTET), 413),
        (client.post(f"{UPLOAD}a.nii.gz", content=b"not nifti", headers=OCTET), 400),
        (client.get("/api/info", headers={"host": "evil.example"}), 400),
    ]
    for reply, status in checks:
        assert reply.status_code == status, (reply.request.url, reply.text)
        assert "Traceback" not in reply.text
    big = client.post("/api/sessions", json={"root": 0, "path": "lps.nii.gz"})
    assert big.status_code == 400 and "voxels" in big.json()["error"]
    assert str(root) not in big.text
    bad_zip = io.BytesIO()
    with zipfile.ZipFile(bad_zip, "w") as zf:
        zf.writestr("../escape.dcm", b"x")
    reply = client.post(f"{UPLOAD}s.zip", content=bad_zip.getvalue(), headers=OCTET)
    assert reply.status_code == 400 and "unsafe" in reply.json()["error"]
    ok = _client(root, tmp_path / "s2")
    sid = ok.post("/api/sessions", json={"root": 0, "path": "lps.nii.gz"}).json()["id"]
    outside = ok.post(
        f"/api/sessions/{sid}/clicks",
        json={"clicks": [{"kind": "fg", "xyz_mm": [900.0, 0.0, 0.0]}]},
    )
    assert outside.status_code == 400 and "outside" in outside.json()["error"]
    lasso = ok.post(
        f"/api/sessions/{sid}/clicks",
        json={"clicks": [{"kind": "lasso", "xyz_mm": [0.0, 0.0, 0.0]}]},
    )
    assert lasso.status_code == 400
    nan = ok.post(
        f"/api/sessions/{sid}/clicks",
        content=b'{"clicks": [{"kind": "fg", "xyz_mm": [NaN, 0, 0]}]}',
        headers={"content-type": "application/json"},
    )
    assert nan.status_code == 400 and "finite" in nan.json()["error"]
    far = ok.put(f"/api/sessions/{sid}/roi", json={"corners_mm": [[900.0] * 3, [901.0] * 3]})
    assert far.status_code == 400 and "outside" in far.json()["error"]
    assert ok.get(f"/api/sessions/{sid}").json()["pending"] == 0  # nothing half-queued
    assert ok.put(f"/api/sessions/{sid}/method", json={"method": "nope"}).status_code == 400


def test_token_and_interface_rules(root, tmp_path):
    with pytest.raises(ConfigError, match="only this machine"):
        ServerSettings(host="0.0.0.0")
    with pytest.raises(ConfigError, match="token"):
        ServerSettings(host="0.0.0.0", allow_remote=True, token="short")
    token = "tT3-k9Qz_a7Wc2Xv5bN8yR1m"
    client = _client(root, tmp_path / "state", token=token)
    assert client.get("/api/info").status_code == 401
    assert client.get("/api/info", headers={"authorization": "Bearer wrong"}).status_code == 401
    good = client.get("/api/info", headers={"authorization": f"Bearer {token}"})
    assert good.status_code == 200 and good.json()["methods"][0]["name"] == METHOD
    assert client.get("/auth/").json() == {"enabled": True}
    assert (
        client.get("/openapi.json", headers={"authorization": f"Bearer {token}"}).status_code == 200
    )
    assert "access-control-allow-origin" not in good.headers


def test_sessions_on_one_image_merge_into_one_label_map(root, tmp_path):
    client = _client(root, tmp_path / "state")
    affine = AFFINES["lps"]
    a, b, other = (
        client.post("/api/sessions", json={"root": 0, "path": p}).json()["id"]
        for p in ("lps.nii.gz", "lps.nii.gz", "las.nii.gz")
    )
    labels = {"labels": [{"session": a, "value": 1}, {"session": b, "value": 7}]}
    empty = client.post("/api/labelmap", json=labels)
    assert empty.status_code == 400 and "nothing to export" in empty.json()["error"]
    fg = {"kind": "fg", "xyz_mm": _ras(affine, CENTRE)}
    bg = {"kind": "bg", "xyz_mm": _ras(affine, (3, 3, 3))}
    client.post(f"/api/sessions/{a}/clicks", json={"clicks": [fg, bg]})
    one = np.asarray(_nifti(client.get(f"/api/sessions/{a}/mask.nii.gz").content).dataobj) > 0
    merged = client.post("/api/labelmap", json={**labels, "name": "../x/both.nii.gz"})
    assert merged.status_code == 200, merged.text
    assert merged.json()["exported"] == "both.nii.gz"
    assert merged.json()["folder"] == f"exports/labelmaps/{a}"  # its own namespace
    written = nib.load(tmp_path / "state" / merged.json()["folder"] / "both.nii.gz")
    np.testing.assert_allclose(written.affine, affine, atol=1e-5)
    data = np.asarray(written.dataobj)
    np.testing.assert_array_equal(data == 1, one)  # b has no step yet: only label 1
    client.post(f"/api/sessions/{b}/clicks", json={"clicks": [fg, bg]})
    again = client.post("/api/labelmap", json=labels)
    written = nib.load(tmp_path / "state" / again.json()["folder"] / "labels.nii.gz")
    data = np.asarray(written.dataobj)
    assert again.status_code == 200 and set(np.unique(data)) <= {0, 1, 7}
    np.testing.assert_array_equal(data > 0, one)  # same clicks, same mask: one of the two
    sib = client.post(f"/api/sessions/{a}/sibling", json={"method": "mecca"})
    assert sib.status_code == 200 and sib.json()["method"] == "mecca"
    assert sib.json()["steps"] == 0 and sib.json()["roi"] is None  # a label of its own
    c = sib.json()["id"]
    assert client.post(f"/api/sessions/{c}/sibling", json={}).json()["method"] == "mecca"
    outline = client.get(f"/api/sessions/{a}/overlay?outline_only=true")
    assert outline.status_code == 200 and set(outline.content) == {0, OTHER_OUTLINE}
    assert client.get(f"/api/sessions/{c}/overlay?outline_only=true").status_code == 204
    three = {"labels": [*labels["labels"], {"session": c, "value": 2}]}
    assert client.post("/api/labelmap", json=three).status_code == 200  # c adds nothing yet
    assert client.post("/api/sessions/nope/sibling", json={}).status_code == 404

    def pairs(*items):
        return {"labels": [{"session": sid, "value": v} for sid, v in items]}

    for bad, status, message in [
        (pairs((a, 1), (other, 2)), 400, "another image"),
        (pairs((a, 1), (b, 1)), 400, "own value"),
        (pairs((a, 1), (a, 2)), 400, "own session"),
        (pairs((a, 0)), 422, None),
        (pairs(("nope", 1)), 404, None),
        ({**labels, "name": "labels.exe"}, 400, "must end in"),
    ]:
        reply = client.post("/api/labelmap", json=bad)
        assert reply.status_code == status, (bad, reply.text)
        assert message is None or message in reply.json()["error"]
