"""The MONAI Label subset, driven by 3D Slicer's own MONAILabel client code over HTTP.

The client (``MONAILabelLib/client.py``) ships as a data file of the PyPI package
``monailabel`` (installed with ``--no-deps`` by the Makefile); the test skips where it is
absent. A real uvicorn server runs in a thread on a free port.
"""

import importlib.util
import socket
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from server_images import AFFINES, CENTRE, ball, write_images

pytest.importorskip("uvicorn")
pytest.importorskip("requests")
import uvicorn  # noqa: E402

from mecca.io import Volume, load, save_volume  # noqa: E402
from mecca.server.app import create_app  # noqa: E402
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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


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
