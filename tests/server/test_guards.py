"""The server's guards against a hostile client or web page (an outside test's findings):
security headers, no CDN docs page, the token in headers only and strong, the cross-site
rule, remote hosts, out-of-range inputs, capped error replies, no server paths in logs."""

import logging
import re
import tempfile
from pathlib import Path

import pytest
from server_images import AFFINES, CENTRE, ball

pytest.importorskip("fastapi")
from click.testing import CliRunner  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from mecca.errors import ConfigError  # noqa: E402
from mecca.io import Volume, save_volume  # noqa: E402
from mecca.server.app import create_app  # noqa: E402
from mecca.server.settings import ServerSettings  # noqa: E402

CLIENT = {"X-Mecca-Client": "test"}
TOKEN = "Zq7-vK2pW9xR4mT8bN1cY6"
METHODS = ("random_walker",)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    image, _ = ball()
    save_volume(Volume(image, AFFINES["lps"]), folder / "ball.nii.gz")
    return folder


def _client(root: Path | None, state: Path, headers=CLIENT, **kw) -> TestClient:
    roots = () if root is None else (root,)
    settings = ServerSettings(roots=roots, state_dir=state, methods=METHODS, **kw)
    return TestClient(
        create_app(settings),
        base_url="http://127.0.0.1",
        headers=headers,
        raise_server_exceptions=False,  # a 500 is a reply here, not an exception
    )


def _session(client: TestClient) -> str:
    reply = client.post("/api/sessions", json={"root": 0, "path": "ball.nii.gz"})
    assert reply.status_code == 200, reply.text
    return reply.json()["id"]


def test_every_response_carries_a_strict_csp_and_no_framing(root, tmp_path):
    client = _client(root, tmp_path / "state", max_upload_bytes=1000)
    replies = [
        client.get("/"),
        client.get("/static/app.js"),
        client.get("/api/info"),
        client.get("/api/sessions/0123456789abcdef01234567"),  # 404
        client.get("/api/info", headers={"host": "evil.example"}),  # 400 from the host guard
        client.post("/api/sessions/upload?filename=a.nii.gz", content=b"x" * 2000),  # 413
        client.post("/api/sessions", json={"root": 0}),  # 422
    ]
    for reply in replies:
        headers = reply.headers
        csp = {d.split()[0]: d.split()[1:] for d in headers["content-security-policy"].split("; ")}
        assert csp["default-src"] == ["'self'"] and csp["script-src"] == ["'self'"]
        assert csp["object-src"] == ["'none'"] and csp["base-uri"] == ["'none'"]
        assert csp["frame-ancestors"] == ["'none'"] and csp["form-action"] == ["'self'"]
        assert "'unsafe-inline'" not in str(csp) and "'unsafe-eval'" not in str(csp)
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
    page = replies[0].text
    assert "<script>" not in page and "<style>" not in page and " style=" not in page
    assert not re.search(r"<[^>]*\son\w+=", page)  # no inline event handlers


def test_no_docs_page_from_a_cdn_but_the_schema_stays(tmp_path):
    client = _client(None, tmp_path / "state")
    assert client.get("/docs").status_code == 404
    assert client.get("/redoc").status_code == 404
    assert client.get("/openapi.json").json()["info"]["title"] == "MECCA"


def test_the_token_counts_only_in_the_authorization_header(root, tmp_path):
    client = _client(root, tmp_path / "state", token=TOKEN)
    assert client.get(f"/api/info?token={TOKEN}").status_code == 401  # never in a URL
    assert client.get("/api/info", headers={"authorization": f"Bearer {TOKEN}"}).is_success
    accented = f"Bearer {TOKEN[:-1]}é".encode()  # a non-ASCII token: refused, not a 500
    reply = client.get("/api/info", headers={"authorization": accented})
    assert reply.status_code == 401 and "token" in reply.json()["error"]
    login = client.post("/auth/token", data={"username": "x", "password": "tökén"})
    assert login.status_code == 401
    assert client.post("/auth/token", data={"password": TOKEN}).json()["access_token"] == TOKEN


@pytest.mark.parametrize(
    "token", ["aaaaaaaaaaaaaaaa", "passwordpassword", "short", "abcdabcdabcdabcd", "tökén" * 5]
)
def test_weak_tokens_are_refused_local_or_remote(tmp_path, token):
    for remote in ({}, {"host": "0.0.0.0", "allow_remote": True, "extra_hosts": ("a.lan",)}):
        with pytest.raises(ConfigError, match="token") as refused:
            ServerSettings(state_dir=tmp_path, token=token, **remote)
        assert "openssl rand -hex 24" in str(refused.value)


def test_strong_tokens_are_taken(tmp_path):
    for token in (TOKEN, "6230e1dff698e2577592183d6c6fe600a570fca1317f05da"):
        assert ServerSettings(state_dir=tmp_path, token=token).token == token


def test_api_writes_need_the_client_header_or_the_token(root, tmp_path):
    bare = _client(root, tmp_path / "state", headers={})
    body = {"root": 0, "path": "ball.nii.gz"}
    refused = bare.post("/api/sessions", json=body)
    assert refused.status_code == 403 and "X-Mecca-Client" in refused.json()["error"]
    form = bare.post("/api/sessions", data=body)  # what a cross-site <form> sends
    assert form.status_code == 403
    assert bare.post("/api/sessions", json=body, headers={"X-Mecca-Client": ""}).status_code == 403
    sid = bare.post("/api/sessions", json=body, headers=CLIENT).json()["id"]
    assert bare.get(f"/api/sessions/{sid}").is_success  # reads need no header
    assert bare.delete(f"/api/sessions/{sid}").status_code == 403
    assert bare.put(f"/api/sessions/{sid}/method", json={"method": "x"}).status_code == 403
    assert bare.delete(f"/api/sessions/{sid}", headers=CLIENT).is_success
    monai = bare.put("/session/", files={"files": ("a.nii.gz", b"not an image")})
    assert monai.status_code == 400  # 3D Slicer's routes are outside /api: its client sends none
    with_token = _client(root, tmp_path / "state2", headers={}, token=TOKEN)
    bearer = {"authorization": f"Bearer {TOKEN}"}
    assert with_token.post("/api/sessions", json=body, headers=bearer).is_success
    assert with_token.post("/api/sessions", json=body, headers=CLIENT).status_code == 401


def test_remote_serving_answers_the_allowed_host_names(tmp_path):
    remote = {"host": "0.0.0.0", "allow_remote": True, "token": TOKEN}
    with pytest.raises(ConfigError, match="--allow-host"):
        ServerSettings(state_dir=tmp_path, **remote)
    bearer = {"authorization": f"Bearer {TOKEN}"}
    settings = ServerSettings(
        state_dir=tmp_path, extra_hosts=("192.168.1.20", "mecca.lan"), **remote
    )
    for base_url in ("http://192.168.1.20:8000", "http://mecca.lan:8000"):
        client = TestClient(create_app(settings), base_url=base_url, headers=bearer)
        assert client.get("/api/info").status_code == 200, base_url
    other = TestClient(create_app(settings), base_url="http://evil.example:8000", headers=bearer)
    assert other.get("/api/info").status_code == 400


def test_serve_takes_allow_host_and_prints_the_token_in_the_fragment(tmp_path, monkeypatch):
    import uvicorn

    from mecca.cli import main
    from mecca.server import settings as settings_module

    ran = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.update(app=app, **kw))
    monkeypatch.setattr(settings_module, "use_server_threads", lambda threads: 1)
    quieted = [logging.getLogger(name) for name in ("mecca.io", "mecca.session")]
    for logger in quieted:  # serve sets them to WARNING: not for the rest of the tests
        monkeypatch.setattr(logger, "setLevel", lambda level: None)
    monkeypatch.setenv("MECCA_TOKEN", TOKEN)
    args = ["serve", "--host", "0.0.0.0", "--allow-remote", "--allow-host", "192.168.1.20"]
    args += ["--allow-host", "mecca.lan", "--state-dir", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"http://192.168.1.20:8000/#token={TOKEN}" in result.output
    assert "/docs" not in result.output and "?token" not in result.output
    settings = ran["app"].state.server.settings
    assert settings.extra_hosts == ("192.168.1.20", "mecca.lan")
    refused = CliRunner().invoke(main, args[:4] + ["--state-dir", str(tmp_path)])
    assert refused.exit_code != 0 and "--allow-host" in refused.output


def test_out_of_range_numbers_and_non_numbers_get_4xx(root, tmp_path):
    client = _client(root, tmp_path / "state")
    sid = _session(client)
    clicks = f"/api/sessions/{sid}/clicks"
    far = client.post(clicks, json={"clicks": [{"kind": "fg", "xyz_mm": [1.7e308, 0, 0]}]})
    assert far.status_code == 400 and "outside" in far.json()["error"]
    for xyz in ([True, "1", 2], ["1", 2, 3], [1, 2, False], [None, 1, 2]):
        reply = client.post(clicks, json={"clicks": [{"kind": "fg", "xyz_mm": xyz}]})
        assert reply.status_code == 422, (xyz, reply.text)
    ints = client.post(
        clicks, json={"clicks": [{"kind": "fg", "xyz_mm": [1, 2, 3]}], "step": False}
    )
    assert ints.status_code in (200, 400), ints.text  # integers are numbers
    roi = client.put(f"/api/sessions/{sid}/roi", json={"corners_mm": [["0", 0, 0], [1, 1, 1]]})
    assert roi.status_code == 422
    assert (
        client.post("/api/sessions", json={"root": "0", "path": "ball.nii.gz"}).status_code == 422
    )
    assert client.post(f"/api/sessions/{sid}/propose", json={"k": True}).status_code == 422
    nul = client.post(f"/api/sessions/{sid}/export", json={"name": "a\0.nii.gz"})
    assert nul.status_code == 422 and "control characters" in nul.json()["error"]
    no_roots = _client(None, tmp_path / "state2")
    for root_index in (-1, 0, 3):
        reply = no_roots.get(f"/api/files?root={root_index}")
        assert reply.status_code == 400 and "root" in reply.json()["error"], reply.text
    assert client.get("/api/files?root=-1").status_code == 400  # not the last root


def test_slicer_points_must_be_finite_numbers(root, tmp_path):
    client = _client(root, tmp_path / "state")
    image, _ = ball()
    nrrd = save_volume(Volume(image, AFFINES["lps"]), tmp_path / "volume.nrrd")
    with nrrd.open("rb") as fh:
        sid = client.put("/session/", files={"files": ("volume.nrrd", fh)}).json()["session_id"]
    bad = ["[[NaN, 1, 2]]", "[[1, Infinity, 2]]", "[[1, 2, -Infinity]]", "[[true, 1, 2]]"]
    bad += ['[["1", 2, 3]]', "[[1e400, 2, 3]]", f"[[{10**400}, 2, 3]]"]
    for points in bad:
        params = f'{{"foreground": {points}}}'
        reply = client.post(
            f"/infer/random_walker?image=v&session_id={sid}", data={"params": params}
        )
        assert reply.status_code == 400, (points, reply.text)
        assert len(reply.json()["error"]) <= 300
    params = f'{{"foreground": [{list(CENTRE)}]}}'
    good = client.post(f"/infer/random_walker?image=v&session_id={sid}", data={"params": params})
    assert good.status_code == 200, good.text


def test_error_replies_echo_inputs_cut_short(root, tmp_path):
    client = _client(root, tmp_path / "state")
    sid = _session(client)
    huge = "<x>" * 100_000
    replies = [
        client.post(
            f"/api/sessions/{sid}/clicks", json={"clicks": [{"kind": huge, "xyz_mm": [0, 0, 0]}]}
        ),
        client.post(
            f"/api/sessions/{sid}/clicks", json={"clicks": [{"kind": "fg", "xyz_mm": [huge, 1, 2]}]}
        ),
        client.post(f"/api/sessions/{sid}/clicks", json={"clicks": huge}),
        client.post("/api/sessions", json={"root": 0, "path": "a", "method": [huge] * 1000}),
        client.post(f"/api/sessions/{sid}/clicks", json={"clicks": [{"kind": 1}] * 1000}),
        client.get(f"/api/sessions/{sid}/{'w' * 5000}.nii.gz"),
    ]
    for reply in replies:
        assert 400 <= reply.status_code < 500, reply.text[:200]
        assert len(reply.text) < 2000, (reply.status_code, reply.text[:200])
        assert reply.json()["error"]
    problem = replies[1].json()["problems"][0]
    assert problem["where"] == "body.clicks.0.xyz_mm.0" and len(problem["input"]) <= 100


def test_logs_show_placeholders_not_server_paths(root, tmp_path, caplog):
    state = tmp_path / "state"
    # the filter lives as long as its app: keep the app (a dropped one may be collected
    # before the records below, and its paths with it)
    app = create_app(ServerSettings(roots=(root,), state_dir=state, methods=METHODS))
    other = Path(tempfile.gettempdir()) / "mecca-upload-xyz" / "scan.nii.gz"
    log = logging.getLogger("mecca.server.test_guards")
    with caplog.at_level(logging.INFO):
        log.warning("could not read %s", root / "ball.nii.gz")
        log.warning(f"saving {state}/sessions/abc failed")
        log.info("dict args %(path)s", {"path": str(other)})
        try:
            raise OSError(f"[Errno 28] No space left on device: '{state / 'x.npz'}'")
        except OSError:
            log.exception("autosave failed for %s", Path(other))
    text = caplog.text
    for path in (root, state, other.parent, Path(tempfile.gettempdir())):
        # the path as a whole (not "/tmp" inside "<tmp>/tmp.x1/...", a checkout's own
        # folder under the temporary one, whose "/tmp" was replaced)
        assert not re.search(re.escape(str(path)) + r"(?![\w.-])", text), (path, text)
    assert "<root0>/ball.nii.gz" in text and "<state>/sessions/abc" in text
    assert "<tmp>/mecca-upload-xyz/scan.nii.gz" in text and "<state>/x.npz" in text
    assert "OSError" in text  # the traceback is kept, without the paths
    assert app is not None
