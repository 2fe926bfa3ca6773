"""Where a user arrives without naming a method, the generalist runs, and the server says
which model: the web page's first method, MONAI Label's first model, the session state."""

import pytest

pytest.importorskip("fastapi")

import numpy as np  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from server_images import AFFINES, CENTRE, write_images  # noqa: E402

from mecca import methods  # noqa: E402
from mecca.interaction.clicks import InteractionKind as K  # noqa: E402
from mecca.server.app import create_app  # noqa: E402
from mecca.server.monailabel import requested_clicks  # noqa: E402
from mecca.server.settings import ServerSettings  # noqa: E402

CLIENT = {"X-Mecca-Client": "test"}


def test_default_server_offers_the_default_first_and_names_the_generalist_model(tmp_path):
    root = write_images(tmp_path / "images")
    settings = ServerSettings(roots=(root,), state_dir=tmp_path / "state")
    assert settings.methods[0] == "generalist"  # the registry's default first
    client = TestClient(create_app(settings), base_url="http://127.0.0.1", headers=CLIENT)
    info = client.get("/api/info").json()
    first = info["methods"][0]
    assert first["name"] == "generalist" and first["model"] == "generalist"
    assert first["accepts"] == ["background", "box", "foreground"]
    assert "growcut" in [m["name"] for m in info["methods"]]
    assert {m["name"]: m["model"] for m in info["methods"]}["random_walker"] is None
    ml = client.get("/info/").json()
    assert next(iter(ml["models"])) == "generalist"  # what Slicer selects by itself
    assert "model 'generalist'" in ml["models"]["generalist"]["description"]
    opened = client.post("/api/sessions", json={"root": 0, "path": "lps.nii.gz"}).json()
    assert opened["method"] == "generalist" and opened["model"] == "generalist"
    body = {"root": 0, "path": "lps.nii.gz", "method": "growcut"}
    named = client.post("/api/sessions", json=body).json()
    assert named["method"] == "growcut" and named["model"] is None
    state = opened
    xyz = (AFFINES["lps"][:3, :3] @ np.asarray(CENTRE, float) + AFFINES["lps"][:3, 3]).tolist()
    click = {"kind": "foreground", "xyz_mm": xyz}
    stepped = client.post(f"/api/sessions/{state['id']}/clicks", json={"clicks": [click]})
    assert stepped.status_code == 200, stepped.text
    last = stepped.json()["last"]
    assert last["mask_voxels"] > 0 and last["clicks_honoured_before"] in (0.0, 1.0)
    assert last["clicks_not_honoured"] == []


def test_slicer_points_reach_the_generalist_as_foreground_and_background():
    accepts = methods.get("generalist").accepts
    params = {"foreground": [[1, 2, 3]], "background": [[4, 5, 6]]}
    clicks = requested_clicks(accepts, params, (10, 10, 10))
    assert [(c.kind, c.position) for c in clicks] == [
        (K.FOREGROUND, (1, 2, 3)),
        (K.BACKGROUND, (4, 5, 6)),
    ]
