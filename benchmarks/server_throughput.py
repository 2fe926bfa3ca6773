"""Server throughput with concurrent sessions, and that no session sees another's data.

Usage: ``.venv/bin/python benchmarks/server_throughput.py [--sessions 4] [--rounds 2]
[--method mecca] [--out throughput.json]``

What it does:

1. Volumes: the four brats2015 cases of ``../shared/data`` (240 x 240 x 155 each) when
   present, else four MR phantoms of that size written to a temporary folder.
2. Reference: for each volume, a local :class:`mecca.session.Session` (ROI = target box +
   5 voxels, the MECCA edge user, 5 steps) records the clicks of every step and its final
   mask.
3. A real server (``mecca serve`` in a subprocess, default threads) is started; one client
   thread per session opens its volume through ``POST /api/sessions``, sets the ROI, and
   sends each step's recorded clicks in RAS millimetres with ``"step": true``, as the page
   does; then downloads ``mask.nii.gz``. First with one session alone, then with
   ``--sessions`` sessions at once (a barrier starts them together), ``--rounds`` times.
4. Reports steps per second over all sessions (steps / wall time of the round), the median
   request latency of a click+step, and the isolation check: every downloaded mask must be
   bit-identical to the local reference for its own volume (a session that saw another's
   clicks, ROI or image would differ).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np

from mecca.data.roi import Box
from mecca.interaction.users import EdgeUser
from mecca.io import Volume, load, save_volume
from mecca.session import Session

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brats2015"
STEPS = 5


@dataclass
class Case:
    """One volume with its reference run."""

    name: str
    rel_path: str
    box: Box
    clicks_mm: list[list[dict]]
    """Per step, the clicks as the page sends them."""
    mask: np.ndarray
    """The local session's final mask (the reference)."""


def volumes(tmp: Path) -> tuple[Path, list[tuple[str, str, Volume, np.ndarray]]]:
    """(root folder, [(name, path under root, volume, target mask)])."""
    if (SHARED / "dataset.json").exists():
        from mecca.data.datasets import open_dataset

        ds = open_dataset(SHARED)
        out = []
        for case in ds.cases()[:4]:
            vol, mask = ds.load_case(case)
            rel = str(case.image_path.resolve().relative_to(SHARED.resolve()))
            out.append((f"brats2015/{case.case_id}", rel, vol, mask))
        return SHARED, out
    from mecca.data.phantoms import make_phantom

    out = []
    for seed in range(4):
        ph = make_phantom((240, 240, 155), rng=np.random.default_rng(seed))
        vol = Volume(ph.image.astype(np.float32), np.eye(4))
        save_volume(vol, tmp / f"phantom_{seed}.nii.gz")
        out.append((f"phantom_{seed}", f"phantom_{seed}.nii.gz", vol, ph.label == 1))
    return tmp, out


def reference(name: str, rel: str, vol: Volume, gt: np.ndarray, method: str) -> Case:
    """Run a local session and record its clicks (in mm) and final mask."""
    idx = np.argwhere(gt)
    box = Box(
        tuple(np.maximum(idx.min(0) - 5, 0)),  # type: ignore[arg-type]
        tuple(np.minimum(idx.max(0) + 6, gt.shape)),
    )
    session = Session(vol, box, method=method, rng=0)
    user, rng = EdgeUser(), np.random.default_rng(0)
    pred = np.zeros(gt.shape, bool)
    clicks_mm = []
    for t in range(1, STEPS + 1):
        clicks = user(pred, gt, step=t, rng=rng)
        session.add_clicks(clicks)
        pred = session.step().mask.astype(bool)
        clicks_mm.append(
            [
                {"kind": c.kind.value, "xyz_mm": vol.voxel_to_world(np.array(c.position)).tolist()}
                for c in clicks
            ]
        )
    return Case(name, rel, box, clicks_mm, pred.copy())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(root: Path, state: Path, methods: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    mecca = Path(sys.executable).with_name("mecca")
    proc = subprocess.Popen(
        [str(mecca), "serve", "--port", str(port), "--root", str(root),
         "--state-dir", str(state), "--methods", methods],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/api/info", timeout=5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start")


def drive(url: str, case: Case, vol: Volume, barrier: threading.Barrier) -> dict:
    """One client: open, ROI, 5 click+step requests, download the mask."""
    with httpx.Client(base_url=url, headers={"X-Mecca-Client": "bench"}, timeout=600) as client:
        sid = client.post("/api/sessions", json={"root": 0, "path": case.rel_path}).json()["id"]
        lo, hi = np.array(case.box.start), np.array(case.box.stop) - 1
        corners = [vol.voxel_to_world(lo).tolist(), vol.voxel_to_world(hi).tolist()]
        client.put(f"/api/sessions/{sid}/roi", json={"corners_mm": corners}).raise_for_status()
        barrier.wait()
        latencies = []
        for clicks in case.clicks_mm:
            t0 = time.perf_counter()
            client.post(
                f"/api/sessions/{sid}/clicks", json={"clicks": clicks, "step": True}
            ).raise_for_status()
            latencies.append(time.perf_counter() - t0)
        end = time.perf_counter()
        blob = client.get(f"/api/sessions/{sid}/mask.nii.gz").content
        client.delete(f"/api/sessions/{sid}")
    img = nib.Nifti1Image.from_bytes(gzip.decompress(blob))
    mask = np.asarray(img.dataobj) > 0
    return {"latencies": latencies, "end": end, "identical": bool(np.array_equal(mask, case.mask))}


def run_round(url: str, cases: list[Case], vols: list[Volume]) -> dict:
    barrier = threading.Barrier(len(cases) + 1)
    results: list[dict] = [{} for _ in cases]

    def work(i: int) -> None:
        results[i] = drive(url, cases[i], vols[i], barrier)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(cases))]
    for th in threads:
        th.start()
    barrier.wait()
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    wall = max(r["end"] for r in results) - t0
    steps = STEPS * len(cases)
    return {
        "sessions": len(cases),
        "steps": steps,
        "wall_s": wall,
        "steps_per_s": steps / wall,
        "latencies_ms": [1e3 * x for r in results for x in r["latencies"]],
        "identical": [r["identical"] for r in results],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--method", default="mecca")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mecca-throughput-") as tmp_name:
        tmp = Path(tmp_name)
        root, vols_info = volumes(tmp)
        cases = [reference(n, rel, v, g, args.method) for n, rel, v, g in vols_info]
        vols = [load(root / c.rel_path) for c in cases]
        k = args.sessions
        picked = [cases[i % len(cases)] for i in range(k)]
        picked_vols = [vols[i % len(vols)] for i in range(k)]
        proc, url = start_server(root, tmp / "state", args.method)
        try:
            run_round(url, picked[:1], picked_vols[:1])  # warm-up: loads the model
            single = [run_round(url, picked[:1], picked_vols[:1]) for _ in range(args.rounds)]
            multi = [run_round(url, picked, picked_vols) for _ in range(args.rounds)]
        finally:
            proc.terminate()
            proc.wait(30)
    report = {
        "volumes": [c.name for c in picked],
        "method": args.method,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "single": summarise(single),
        "concurrent": summarise(multi),
    }
    print(json.dumps({k: v for k, v in report.items()}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


def summarise(rounds: list[dict]) -> dict:
    lat = [x for r in rounds for x in r["latencies_ms"]]
    return {
        "sessions": rounds[0]["sessions"],
        "rounds": len(rounds),
        "steps_per_s_median": float(np.median([r["steps_per_s"] for r in rounds])),
        "steps_per_s": [round(r["steps_per_s"], 3) for r in rounds],
        "step_request_ms_median": float(np.median(lat)),
        "all_masks_identical_to_reference": all(all(r["identical"]) for r in rounds),
    }


if __name__ == "__main__":
    main()
