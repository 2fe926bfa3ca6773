"""Load on the server: many sessions stepping at once, its latency, errors and memory.

Usage: ``.venv/bin/python benchmarks/server_load.py [--sessions 16] [--duration 60]
[--method random_walker] [--data brats2015|hippocampus|phantom] [--memory-bound-mb N]
[--seed 0] [--out load.json] [-- mecca serve options, e.g. --max-memory-mb 2048]``

What it does:

1. Images: the first four cases of ``../shared/data/<data>`` (brats2015: 240 x 240 x 155
   each; hippocampus: ~35 x 50 x 35) when present, else four 240 x 240 x 155 MR phantoms
   written to a temporary folder.
2. ``mecca serve`` runs in a subprocess (free port, temporary state folder, ``--methods
   METHOD``, then every option after ``--`` as given: the server's bounds on sessions,
   memory or step time, whichever it has; see ``mecca serve --help``).
3. ``--sessions`` client threads each open a session on one of the images (round robin)
   and set its ROI (the label's box + 5 voxels); a barrier starts them together; then
   each sends click+step requests as the page does (``POST .../clicks`` with one click in
   RAS mm from the label, ``"step": true``) back to back for ``--duration`` seconds. A
   client whose session was refused retries opening it every 2 s.
4. A sampler reads the server process's resident memory every 0.5 s (psutil when
   installed, else ``/proc/<pid>/status`` VmRSS; child processes included).

Reports (and ``--out`` writes as JSON, with the RSS samples): steps/s over all sessions,
p50/p95 latency of the click+step requests answered 200, errors by status code (503
counted apart as "server full", for opens and for steps; no reply as "no_reply"), RSS when
idle (server started, methods built), with the sessions open, at its peak and at the end,
and the memory bound when one is known (``--memory-bound-mb``, else a server option after
``--`` whose name holds "mem", else a ``limits`` entry of ``/api/info`` whose name holds
"memory"). The server's bound covers what sessions and images being opened hold, not the
interpreter and libraries, so ``peak_under_bound`` compares the peak RSS above the idle
RSS with it (``peak_rss_under_bound``: the whole RSS). Exits 1 on a 5xx other than 503, a
request without a reply, no step at all, or ``peak_under_bound`` false.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from scipy import ndimage

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HEADERS = {"X-Mecca-Client": "server-load"}
"""Sent with every request (the hardened server wants it on every change under /api/)."""
MB = 1 << 20


@dataclass
class Image:
    name: str
    rel_path: str
    label: np.ndarray


def images(data: str, tmp: Path) -> tuple[Path, list[Image]]:
    """(root folder, four images with their target labels)."""
    folder = SHARED / data
    if data != "phantom" and (folder / "dataset.json").exists():
        from mecca.data.datasets import open_dataset

        ds = open_dataset(folder)
        out = []
        for case in ds.cases()[:4]:
            _, label = ds.load_case(case)
            rel = str(case.image_path.resolve().relative_to(folder.resolve()))
            out.append(Image(f"{data}/{case.case_id}", rel, label))
        return folder, out
    from mecca.data.phantoms import make_phantom
    from mecca.io import Volume, save_volume

    out = []
    for seed in range(4):
        ph = make_phantom((240, 240, 155), rng=np.random.default_rng(seed))
        save_volume(Volume(ph.image, np.eye(4)), tmp / f"phantom_{seed}.nii.gz")
        out.append(Image(f"phantom_{seed}", f"phantom_{seed}.nii.gz", ph.label == 1))
    return tmp, out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    root: Path, state: Path, method: str, extra: list[str], log: Path
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    mecca = Path(sys.executable).with_name("mecca")
    cmd = [str(mecca), "serve", "--port", str(port), "--root", str(root),
           "--state-dir", str(state), "--methods", method, *extra]  # fmt: skip
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            break
        try:
            if httpx.get(f"{url}/api/info", timeout=5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the server did not start:\n{log.read_text(errors='replace')[-3000:]}")


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its children."""
    try:
        import psutil

        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs)
    except ImportError:
        pass
    except Exception:  # the process ended
        return 0
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return total


class Sampler(threading.Thread):
    """RSS of the server every ``period`` seconds until stopped."""

    def __init__(self, pid: int, period: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.t0 = time.perf_counter()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.perf_counter() - self.t0, rss_bytes(self.pid)))
            self.stop.wait(self.period)


class Clicks:
    """One click per request in RAS mm: fg inside the label, bg in the ROI outside it,
    edge points on its surface for edge-only methods."""

    def __init__(self, label: np.ndarray, affine: np.ndarray, margin: int, edge_only: bool):
        idx = np.argwhere(label)
        lo = np.maximum(idx.min(0) - margin, 0)
        hi = np.minimum(idx.max(0) + margin + 1, label.shape)
        self.box = (lo, hi)
        self.affine = np.asarray(affine, np.float64)
        inner = ndimage.binary_erosion(label)
        in_box = np.zeros(label.shape, bool)
        in_box[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
        self.pools = {
            "fg": np.argwhere(inner if inner.any() else label),
            "bg": np.argwhere(in_box & ~ndimage.binary_dilation(label, iterations=2)),
            "edge": np.argwhere(label & ~inner),
        }
        self.edge_only = edge_only

    def mm(self, ijk: np.ndarray) -> list[float]:
        return (self.affine[:3, :3] @ np.asarray(ijk, float) + self.affine[:3, 3]).tolist()

    def corners(self) -> list[list[float]]:
        return [self.mm(self.box[0]), self.mm(self.box[1] - 1)]

    def next(self, rng: np.random.Generator, first: bool) -> dict[str, Any]:
        if self.edge_only:
            kind = "edge"
        else:
            kind = "fg" if first or rng.random() < 0.6 or not len(self.pools["bg"]) else "bg"
        pool = self.pools[kind]
        return {"kind": kind, "xyz_mm": self.mm(pool[rng.integers(len(pool))])}


@dataclass
class Client:
    """One user: its session, its requests' latencies and statuses."""

    index: int
    image: Image
    edge_only: bool
    seed: int
    sid: str | None = None
    steps: int = 0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    open_statuses: Counter = field(default_factory=Counter)
    clicks: Clicks | None = None
    end: float = 0.0

    def request(self, http: httpx.Client, verb: str, path: str, body: Any = None) -> Any:
        """The reply's JSON on 200, else None (the status or "no_reply" counted)."""
        try:
            r = http.request(verb, path, json=body)
        except httpx.HTTPError as exc:
            self.statuses[f"no_reply ({type(exc).__name__})"] += 1
            return None
        if r.status_code != 200:
            self.statuses[str(r.status_code)] += 1
            return None
        return r.json()

    def open(self, http: httpx.Client) -> bool:
        try:
            r = http.post("/api/sessions", json={"root": 0, "path": self.image.rel_path})
        except httpx.HTTPError as exc:
            self.open_statuses[f"no_reply ({type(exc).__name__})"] += 1
            return False
        self.open_statuses[str(r.status_code)] += 1
        if r.status_code != 200:
            return False
        state = r.json()
        self.sid = state["id"]
        self.clicks = Clicks(self.image.label, np.asarray(state["affine"]), 5, self.edge_only)
        roi = {"corners_mm": self.clicks.corners()}
        if self.request(http, "PUT", f"/api/sessions/{self.sid}/roi", roi) is None:
            self.sid = None
        return self.sid is not None

    def run(self, url: str, barrier: threading.Barrier, duration: float) -> None:
        rng = np.random.default_rng(self.seed)
        with httpx.Client(base_url=url, headers=HEADERS, timeout=600) as http:
            self.open(http)
            barrier.wait()
            stop = time.perf_counter() + duration
            while time.perf_counter() < stop:
                if self.sid is None or self.clicks is None:
                    time.sleep(2.0)
                    self.open(http)
                    continue
                body = {"clicks": [self.clicks.next(rng, self.steps == 0)], "step": True}
                t0 = time.perf_counter()
                state = self.request(http, "POST", f"/api/sessions/{self.sid}/clicks", body)
                if state is not None:
                    self.latencies.append(time.perf_counter() - t0)
                    self.steps += 1
            self.end = time.perf_counter()


def memory_bound(
    args: argparse.Namespace, extra: list[str], info: dict
) -> tuple[int | None, str | None]:
    """(the memory bound in bytes, where it came from): ours, else the server option
    given, else ``/api/info``'s limits, else the default ``mecca serve --help`` shows."""
    if args.memory_bound_mb:
        return int(args.memory_bound_mb * MB), "--memory-bound-mb"
    for n, arg in enumerate(extra):
        name, _, value = arg.partition("=")
        if "mem" in name and name.startswith("--"):
            value = value or (extra[n + 1] if n + 1 < len(extra) else "")
            try:
                return int(float(value) * unit_of(name)), name
            except ValueError:
                return None, None
    for key, value in info.get("limits", {}).items():
        if "memory" in key and isinstance(value, int | float):
            return int(value * unit_of(key)), f"/api/info limits.{key}"
    mecca = Path(sys.executable).with_name("mecca")
    usage = subprocess.run([str(mecca), "serve", "--help"], capture_output=True, text=True)
    found = re.search(r"(--max-mem\S*)\s.*?\[default:\s*([\d.]+)\]", usage.stdout, re.S)
    if found:
        return int(float(found[2]) * unit_of(found[1])), f"{found[1]} default"
    return None, None


def unit_of(name: str) -> int:
    """Bytes per unit of an option or key named ``...mb``, ``...gb`` or else bytes."""
    name = name.lower()
    return MB if name.endswith("mb") else 1 << 30 if name.endswith("gb") else 1


def percentile(xs: list[float], q: float) -> float | None:
    return round(1000 * float(np.percentile(xs, q)), 1) if xs else None


def summarise(
    args: argparse.Namespace,
    extra: list[str],
    clients: list[Client],
    wall: float,
    sampler: Sampler,
    rss: dict[str, int],
    bound: int | None,
    alive: bool,
) -> dict[str, Any]:
    """The report (see the module docstring)."""
    statuses: Counter = Counter()
    opens: Counter = Counter()
    for c in clients:
        statuses.update(c.statuses)
        opens.update(c.open_statuses)
    lat = [x for c in clients for x in c.latencies]
    steps = sum(c.steps for c in clients)
    opened = [c.steps for c in clients if c.sid is not None] or [0]
    peak = max((r for _, r in sampler.samples), default=0)
    growth = peak - rss["idle"]
    full = {"open": opens.pop("503", 0), "step": statuses.pop("503", 0)}
    opens.pop("200", None)
    return {
        "images": sorted({c.image.name for c in clients}),
        "method": args.method,
        "sessions": args.sessions,
        "sessions_opened": sum(c.sid is not None for c in clients),
        "duration_s": round(wall, 2),
        "server_options": extra,
        "steps": steps,
        "steps_per_s": round(steps / wall, 3) if wall > 0 else None,
        "steps_per_open_session": {"min": min(opened), "max": max(opened)},
        "click_step_ms_p50": percentile(lat, 50),
        "click_step_ms_p95": percentile(lat, 95),
        "errors_by_status": dict(sorted((statuses + opens).items())),
        "server_full_503": full,
        "rss_mb": {
            **{k: round(v / MB, 1) for k, v in rss.items()},
            "peak": round(peak / MB, 1),
            "peak_above_idle": round(growth / MB, 1),
        },
        "memory_bound_mb": None if bound is None else round(bound / MB, 1),
        "peak_under_bound": None if bound is None else growth <= bound,
        "peak_rss_under_bound": None if bound is None else peak <= bound,
        "server_alive_at_end": alive,
        "rss_samples": len(sampler.samples),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }


def main() -> int:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of steps")
    parser.add_argument("--method", default="random_walker")
    parser.add_argument("--data", default="brats2015", help="brats2015, hippocampus, phantom")
    parser.add_argument("--memory-bound-mb", type=float, help="check the peak RSS against it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mecca-load-") as tmp_name:
        tmp = Path(tmp_name)
        root, imgs = images(args.data, tmp)
        proc, url = start_server(root, tmp / "state", args.method, extra, tmp / "server.log")
        sampler = Sampler(proc.pid)
        sampler.start()
        try:
            info = httpx.get(f"{url}/api/info", headers=HEADERS, timeout=60).json()
            accepts = next(m["accepts"] for m in info["methods"] if m["name"] == args.method)
            edge_only = "foreground" not in accepts
            idle_rss = rss_bytes(proc.pid)
            clients = [
                Client(i, imgs[i % len(imgs)], edge_only, args.seed * 1000 + i)
                for i in range(args.sessions)
            ]
            barrier = threading.Barrier(len(clients) + 1)
            threads = [
                threading.Thread(target=c.run, args=(url, barrier, args.duration)) for c in clients
            ]
            for th in threads:
                th.start()
            barrier.wait()
            t0 = time.perf_counter()
            opened_rss = rss_bytes(proc.pid)
            for th in threads:
                th.join()
            wall = max(c.end for c in clients) - t0
            final_rss = rss_bytes(proc.pid)
            alive = proc.poll() is None
        finally:
            sampler.stop.set()
            sampler.join()
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log_tail = (tmp / "server.log").read_text(errors="replace")[-2000:]
    bound, source = memory_bound(args, extra, info)
    rss = {"idle": idle_rss, "sessions_open": opened_rss, "final": final_rss}
    report = summarise(args, extra, clients, wall, sampler, rss, bound, alive)
    report["memory_bound_from"] = source
    print(json.dumps(report, indent=1))
    if args.out:
        samples = [(round(t, 2), round(r / MB, 1)) for t, r in sampler.samples]
        args.out.write_text(json.dumps({**report, "rss_mb_samples": samples}, indent=1) + "\n")
    errors = report["errors_by_status"]
    server_errors = [k for k in errors if k.startswith("5") or k.startswith("no_reply")]
    if not alive:
        print(log_tail, file=sys.stderr)
    bad = server_errors or not report["steps"] or not alive or report["peak_under_bound"] is False
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
