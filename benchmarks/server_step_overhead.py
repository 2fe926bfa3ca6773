"""The server's step against the same session step in-process: where a click's time goes.

One BraTS volume (240 x 240 x 155, ``../shared/data/brats2015``, its first case), an ROI
round the tumour (not a box prompt), then ``--clicks`` foreground clicks at random tumour
voxels, one step each, with the default method (the generalist), ``--think-ms`` between a
reply and the next click as a person pauses. Each row runs in a fresh process:

* ``server``: through the server's API (FastAPI's TestClient on a real
  :func:`~mecca.server.app.create_app`, a temporary state folder, the server's thread
  setting): the session step's own time (the reply's ``last.total_ms``) and the request's;
* ``main``: a :class:`~mecca.session.Session` on the same volume, ROI and clicks, on the
  main thread (as the CLI runs it).

The server writes each step's mask (gzip, about 100 ms of CPU) on a background thread
after the reply; with no pause it overlaps the next step on 2 cores.

Usage::

    python benchmarks/server_step_overhead.py [--clicks 20] [--think-ms 400] [--out r.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ROWS = ("server", "main")


def run_row(row: str, data: Path, clicks: int, think_ms: float) -> dict[str, float]:
    """One row's medians (ms), in this process."""
    from mecca.data.datasets import open_dataset
    from mecca.data.roi import Box
    from mecca.server.settings import use_server_threads
    from mecca.session import Session

    use_server_threads(None)
    ds = open_dataset(data)
    case = ds.cases()[0]
    volume, truth = ds.load_case(case)
    inside = np.argwhere(truth)
    lo, hi = inside.min(0), inside.max(0)
    rng = np.random.default_rng(0)
    picks = [inside[i] for i in rng.integers(len(inside), size=clicks + 1)]
    if row == "server":
        return _server_row(data, case, picks, lo, hi, think_ms)
    session = Session(volume, method="generalist")
    session.set_roi(Box(tuple(int(v) for v in lo), tuple(int(v) + 1 for v in hi)))
    step_ms = []
    for n, voxel in enumerate(picks):
        session.add_click("foreground", tuple(int(v) for v in voxel))
        t0 = time.perf_counter()
        session.step()
        if n:  # the first warms up
            step_ms.append(1000 * (time.perf_counter() - t0))
        time.sleep(think_ms / 1000)
    return {"session_step_ms_median": float(np.median(step_ms))}


def _server_row(
    data: Path, case: Any, picks: list, lo: np.ndarray, hi: np.ndarray, think_ms: float
) -> dict[str, float]:
    from fastapi.testclient import TestClient

    from mecca.server.app import create_app
    from mecca.server.settings import ServerSettings

    with tempfile.TemporaryDirectory(prefix="mecca-overhead-", ignore_cleanup_errors=True) as st:
        settings = ServerSettings(roots=(data,), state_dir=Path(st))
        client = TestClient(
            create_app(settings),
            base_url="http://127.0.0.1",
            headers={"X-Mecca-Client": "server-step-overhead"},
        )
        rel = str(case.image_path.resolve().relative_to(data))
        opened = client.post("/api/sessions", json={"root": 0, "path": rel}).json()
        sid, affine = opened["id"], np.asarray(opened["affine"])

        def mm(ijk: np.ndarray) -> list[float]:
            return (affine[:3, :3] @ np.asarray(ijk, float) + affine[:3, 3]).tolist()

        client.put(f"/api/sessions/{sid}/roi", json={"corners_mm": [mm(lo), mm(hi)]})
        step_ms, request_ms = [], []
        for n, voxel in enumerate(picks):
            body = {"clicks": [{"kind": "foreground", "xyz_mm": mm(voxel)}], "step": True}
            t0 = time.perf_counter()
            reply = client.post(f"/api/sessions/{sid}/clicks", json=body)
            took = 1000 * (time.perf_counter() - t0)
            if reply.status_code != 200:
                raise SystemExit(f"click {n}: {reply.status_code} {reply.text[:200]}")
            if n:
                step_ms.append(reply.json()["last"]["total_ms"])
                request_ms.append(took)
            time.sleep(think_ms / 1000)
        time.sleep(0.5)  # the last mask's write, before the folder goes
    return {
        "session_step_ms_median": float(np.median(step_ms)),
        "request_ms_median": float(np.median(request_ms)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument("--think-ms", type=float, default=400.0)
    parser.add_argument("--data", type=Path, default=SHARED / "brats2015")
    parser.add_argument("--row", choices=ROWS, help="run one row here (the script's own use)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.row:
        result = run_row(args.row, args.data.resolve(), args.clicks, args.think_ms)
        print(json.dumps(result))
        return
    report: dict[str, dict[str, float]] = {}
    for row in ROWS:
        command = [sys.executable, __file__, "--row", row, "--clicks", str(args.clicks)]
        command += ["--think-ms", str(args.think_ms), "--data", str(args.data)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        report[row] = json.loads(done.stdout.strip().splitlines()[-1])
        print(row, json.dumps(report[row]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
