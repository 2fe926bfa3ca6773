"""The MONAI Label subset, driven by 3D Slicer's own MONAILabel client code over HTTP.

The client (``MONAILabelLib/client.py``) ships as a data file of the PyPI package
``monailabel`` (installed with ``--no-deps`` by the Makefile); the test skips where it is
absent. A real uvicorn server runs in a thread on a free port.
"""

import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from server_images import AFFINES, CENTRE, ball, served, write_images

pytest.importorskip("uvicorn")
pytest.importorskip("requests")

from mecca.io import Volume, load, save_volume  # noqa: E402
from mecca.server.settings import ServerSettings  # noqa: E402

CLIENT = Path(sys.prefix) / "monailabel/plugins/slicer/MONAILabel/MONAILabelLib/client.py"


def _slicer_client():
    if not CLIENT.is_file():
        pytest.skip(
            f"3D Slicer's MONAILabel client not found at {CLIENT} (pip install "
            "--no-deps monailabel==0.8.5)"
        )
    spec = importlib.util.spec_from_file_location("slicer_monailabel_client", CLIENT)
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # it imports cgi
        spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    root = write_images(tmp_path_factory.mktemp("images"))
    settings = ServerSettings(
        roots=(root,),
        state_dir=tmp_path_factory.mktemp("state"),
        methods=("random_walker", "mecca"),
    )
    with served(settings) as url:
        yield url


def test_slicer_client_uploads_clicks_and_gets_a_label_on_the_image_grid(server_url, tmp_path):
    lib = _slicer_client()
    client = lib.MONAILabelClient(server_url, tmpdir=str(tmp_path / "slicer_tmp"))
    (tmp_path / "slicer_tmp").mkdir()
    assert client.auth_enabled() is False
    info = client.info()
    assert "config" not in info and info["models"]["random_walker"]["type"] == "deepgrow"
    assert info["models"]["random_walker"]["dimension"] == 3
    assert client.train_status(check_if_running=True) is False

    image, gt = ball()
    nrrd = save_volume(Volume(image, AFFINES["lps"]), tmp_path / "volume.nrrd")  # Slicer's default
    session_id = client.create_session(str(nrrd))["session_id"]
    assert client.get_session(session_id)["session_id"] == session_id

    params = {"label": "target", "foreground": [list(CENTRE)], "background": [[2, 2, 2]]}
    label_file, reply = client.infer("random_walker", "volume", params, session_id=session_id)
    assert Path(label_file).parent == tmp_path / "slicer_tmp"  # a plain basename came back
    assert Path(label_file).name == "label.nrrd" and reply["label_names"] == {"target": 1}
    label = load(label_file, dtype=None)
    np.testing.assert_allclose(label.affine, load(nrrd).affine, atol=1e-4)
    dice = 2 * (label.array.astype(bool) & gt).sum() / (label.array.astype(bool).sum() + gt.sum())
    assert dice > 0.9

    # Slicer sends every point so far: only the new one is a new step
    params["background"].append([38, 34, 18])
    _, reply = client.infer("random_walker", "volume", params, session_id=session_id)
    assert reply["steps"] == 2
    params["background"] = []  # a point was removed: the session restarts from all points
    _, reply = client.infer("random_walker", "volume", params, session_id=session_id)
    assert reply["steps"] == 1

    with pytest.raises(lib.MONAILabelClientException):
        client.infer(
            "random_walker", "volume", {"foreground": [[999, 0, 0]]}, session_id=session_id
        )
    client.remove_session(session_id)
    with pytest.raises(lib.MONAILabelClientException):
        client.get_session(session_id)
