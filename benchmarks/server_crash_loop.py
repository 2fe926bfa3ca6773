"""Kill -9 loop: after every crash, does the server still hold what it acknowledged?

Usage: ``.venv/bin/python benchmarks/server_crash_loop.py [--cycles 20] [--seed 0]
[--method random_walker] [--phantom] [--out crash_loop.json|.md] [-- mecca serve options]``

What it does:

1. A temporary root holds one real image: the first hippocampus case of
   ``../shared/data`` when present (its label gives the clicks), else an MR phantom
   (:func:`mecca.data.phantoms.make_phantom`). ``mecca serve`` runs in a subprocess on a
   free port with a temporary state folder and ``--methods METHOD`` (options after ``--``
   are passed on).
2. One session is opened on the image and its ROI set to the label's box + 3 voxels. Then
   ``--cycles`` times: a few requests as the page sends them (``POST .../clicks`` with one
   click in RAS mm and ``"step": true``: foreground inside the label, background in the
   ROI outside it, edge points on its surface for edge-only methods; sometimes ``undo``),
   each reply 200 "acknowledged" and followed by a download of ``mask.nii.gz`` whose voxel
   array's sha256 is recorded for that state; then SIGKILL at a seeded random moment:
   during a click+step or undo request in flight, right after a 200 (before the mask is
   downloaded), or when idle. The server is restarted on the same state folder.
3. Checks after each restart (the session's first request reloads it):

   * lost acknowledged steps: the session's step count must equal the acknowledged one,
     or the in-flight request's outcome (+1 for a step, -1 for an undo) when that request
     was persisted before the kill; fewer steps count as lost;
   * stale mask: ``mask.nii.gz`` must equal the mask the server holds (its overlay,
     ``GET .../overlay?prob=false&advice=false``) and the mask recorded for that state;
     a difference is a stale mask, an error reply while a step exists a missing mask;
   * the image downloads (``image.nii.gz``) with the session's shape and the same voxels.

Prints a JSON summary (cycles, acknowledged steps, lost acknowledged steps, stale and
missing masks, restart and reload times); ``--out`` writes it as JSON, or as Markdown with
one row per cycle when the name ends in ``.md``. Exits 1 on any loss, stale or missing
mask, or image failure.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np
from scipy import ndimage

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HEADERS = {"X-Mecca-Client": "crash-loop"}
"""Sent with every request (the hardened server wants it on every change under /api/)."""
MODES = ("in_flight_step", "in_flight_undo", "after_reply", "idle")
MODE_P = (0.45, 0.1, 0.25, 0.2)
UNDO_P = 0.2


@dataclass
class Target:
    """The image under the root and the label that places the clicks."""

    name: str
    rel_path: str
    label: np.ndarray


def prepare_root(root: Path, phantom: bool) -> Target:
    """Copy the first hippocampus case into ``root`` (else write a phantom)."""
    hippo = SHARED / "hippocampus"
    if not phantom and (hippo / "dataset.json").exists():
        from mecca.data.datasets import open_dataset

        ds = open_dataset(hippo)
        case = ds.cases()[0]
        _, label = ds.load_case(case)
        name = "image" + "".join(case.image_path.suffixes)
        shutil.copyfile(case.image_path, root / name)
        return Target(f"hippocampus/{case.case_id}", name, label)
    from mecca.data.phantoms import make_phantom
    from mecca.io import Volume, save_volume

    ph = make_phantom((48, 48, 32), rng=np.random.default_rng(0))
    save_volume(Volume(ph.image, np.diag([*ph.spacing, 1.0])), root / "phantom.nii.gz")
    return Target("phantom 48x48x32", "phantom.nii.gz", ph.label == 1)


class Clicker:
    """Clicks as the page sends them, placed from the label (RAS mm, server's affine)."""

    def __init__(self, label: np.ndarray, affine: np.ndarray, box: tuple, accepts: list[str]):
        self.affine = np.asarray(affine, np.float64)
        inner = ndimage.binary_erosion(label)
        self.inside = np.argwhere(inner if inner.any() else label)
        self.edge = np.argwhere(label & ~ndimage.binary_erosion(label))
        in_box = np.zeros(label.shape, bool)
        in_box[tuple(slice(a, b) for a, b in zip(*box, strict=True))] = True
        self.outside = np.argwhere(in_box & ~ndimage.binary_dilation(label, iterations=2))
        self.edge_only = "foreground" not in accepts

    def mm(self, ijk: np.ndarray) -> list[float]:
        return (self.affine[:3, :3] @ ijk + self.affine[:3, 3]).tolist()

    def click(self, rng: np.random.Generator, first: bool) -> dict[str, Any]:
        if self.edge_only:
            kind, pool = "edge", self.edge
        elif first or rng.random() < 0.6 or not len(self.outside):
            kind, pool = "fg", self.inside
        else:
            kind, pool = "bg", self.outside
        return {"kind": kind, "xyz_mm": self.mm(pool[rng.integers(len(pool))].astype(float))}


def label_box(label: np.ndarray, margin: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    idx = np.argwhere(label)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + margin + 1, label.shape)
    return tuple(int(v) for v in lo), tuple(int(v) for v in hi)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``mecca serve`` in a subprocess; restartable on the same state folder."""

    def __init__(self, root: Path, state: Path, method: str, extra: list[str], logs: Path):
        self.root, self.state, self.method, self.extra, self.logs = root, state, method, extra, logs
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.starts = 0

    def start(self) -> float:
        """Start and wait for ``/api/info``; returns the seconds that took."""
        port = free_port()
        mecca = Path(sys.executable).with_name("mecca")
        cmd = [str(mecca), "serve", "--port", str(port), "--root", str(self.root),
               "--state-dir", str(self.state), "--methods", self.method, *self.extra]  # fmt: skip
        self.starts += 1
        log = (self.logs / f"server-{self.starts}.log").open("wb")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.url = f"http://127.0.0.1:{port}"
        while time.perf_counter() - t0 < 120:
            if self.proc.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/api/info", timeout=5).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill()
        tail = (self.logs / f"server-{self.starts}.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the server did not start:\n{tail}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)


@dataclass
class Reply:
    status: int | None
    """None: no reply (connection refused or dropped)."""
    body: Any = None
    seconds: float = 0.0


def call(url: str, verb: str, path: str, body: Any = None, timeout: float = 300) -> Reply:
    t0 = time.perf_counter()
    try:
        r = httpx.request(verb, url + path, json=body, headers=HEADERS, timeout=timeout)
    except httpx.HTTPError:
        return Reply(None, None, time.perf_counter() - t0)
    try:
        data = r.json()
    except ValueError:
        data = r.content
    return Reply(r.status_code, data, time.perf_counter() - t0)


def get_bytes(url: str, path: str) -> httpx.Response | None:
    try:
        return httpx.get(url + path, headers=HEADERS, timeout=300)
    except httpx.HTTPError:
        return None


def array_sha(mask: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(mask, np.uint8).tobytes()).hexdigest()[:16]


def image_sha(voxels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(voxels, np.float32).tobytes()).hexdigest()[:16]


def nifti_array(blob: bytes) -> np.ndarray:
    data = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
    return np.asarray(nib.Nifti1Image.from_bytes(data).dataobj)


def mask_sha(url: str, sid: str) -> tuple[int | None, str | None]:
    """(status, sha256 of the downloaded mask's voxels > 0, None unless a 200 NIfTI)."""
    r = get_bytes(url, f"/api/sessions/{sid}/mask.nii.gz")
    if r is None:
        return None, None
    if r.status_code != 200:
        return r.status_code, None
    try:
        return 200, array_sha(nifti_array(r.content) > 0)
    except Exception:  # a truncated or empty file
        return 200, "unreadable"


def overlay_sha(url: str, sid: str, shape: list[int]) -> str | None:
    """sha256 of the mask the server holds in memory (from its overlay), None before a step."""
    r = get_bytes(url, f"/api/sessions/{sid}/overlay?prob=false&advice=false")
    if r is None or r.status_code != 200:
        return None
    i0, j0, k0, ni, nj, nk = (int(v) for v in r.headers["x-mecca-box"].split(","))
    labels = np.frombuffer(r.content, np.uint8).reshape((ni, nj, nk), order="F")
    full = np.zeros(shape, bool)
    full[i0 : i0 + ni, j0 : j0 + nj, k0 : k0 + nk] = labels > 0
    return array_sha(full)


@dataclass
class Tally:
    acked_steps: int = 0
    acked_undos: int = 0
    lost_acked_steps: int = 0
    extra_steps: int = 0
    stale_masks: int = 0
    missing_masks: int = 0
    image_errors: int = 0
    in_flight_persisted: int = 0
    checks: int = 0
    start_s: list[float] = field(default_factory=list)
    reload_s: list[float] = field(default_factory=list)
    step_s: list[float] = field(default_factory=list)
    undo_s: list[float] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)


class Loop:
    """The session's acknowledged history and the checks after each restart."""

    def __init__(self, server: Server, target: Target, seed: int) -> None:
        self.server, self.target = server, target
        self.rng = np.random.default_rng(seed)
        self.tally = Tally()
        self.steps = 0
        self.hist: list[str | None] = [None]
        """hist[k]: sha of the mask at step k of the acknowledged history ("?" unknown)."""
        self.sid = ""
        self.shape: list[int] = []
        self.image_sha = ""
        self.clicker: Clicker | None = None

    def open(self) -> None:
        url = self.server.url
        opened = call(url, "POST", "/api/sessions", {"root": 0, "path": self.target.rel_path})
        if opened.status != 200:
            raise RuntimeError(f"could not open the session: {opened.status} {opened.body}")
        state = opened.body
        self.sid, self.shape = state["id"], state["shape"]
        if list(self.target.label.shape) != self.shape:
            raise RuntimeError(f"label {self.target.label.shape} vs image {self.shape}")
        box = label_box(self.target.label, 3)
        affine = np.asarray(state["affine"])
        corners = [(affine[:3, :3] @ np.array(c, float) + affine[:3, 3]).tolist()
                   for c in (box[0], np.array(box[1]) - 1)]  # fmt: skip
        roi = call(url, "PUT", f"/api/sessions/{self.sid}/roi", {"corners_mm": corners})
        if roi.status != 200:
            raise RuntimeError(f"could not set the ROI: {roi.status} {roi.body}")
        info = call(url, "GET", "/api/info").body
        accepts = next(m["accepts"] for m in info["methods"] if m["name"] == state["method"])
        self.clicker = Clicker(self.target.label, affine, box, accepts)
        r = get_bytes(url, f"/api/sessions/{self.sid}/image.nii.gz")
        assert r is not None and r.status_code == 200, "the image did not download"
        self.image_sha = image_sha(nifti_array(r.content))

    def next_request(self) -> tuple[str, str, Any]:
        """(kind, path, body) of the next action: a click+step, or an undo."""
        if self.steps > 0 and self.rng.random() < UNDO_P:
            return "undo", f"/api/sessions/{self.sid}/undo", None
        return self.step_request()

    def step_request(self) -> tuple[str, str, Any]:
        assert self.clicker is not None
        click = self.clicker.click(self.rng, self.steps == 0)
        return "step", f"/api/sessions/{self.sid}/clicks", {"clicks": [click], "step": True}

    def acknowledge(self, kind: str, reply: Reply, *, download: bool) -> None:
        """Record a 200 reply's state (and its mask, downloaded now when ``download``)."""
        steps = int(reply.body["steps"])
        if kind == "step":
            self.tally.acked_steps += 1
            self.tally.step_s.append(reply.seconds)
        else:
            self.tally.acked_undos += 1
            self.tally.undo_s.append(reply.seconds)
        self.steps = steps
        self.hist = self.hist[: steps + 1] if kind == "undo" else self.hist[:steps] + ["?"]
        if download:
            status, sha = mask_sha(self.server.url, self.sid)
            if steps > 0 and (status != 200 or sha == "unreadable"):
                self.tally.missing_masks += 1
            elif sha is not None and self.hist[steps] not in ("?", sha):
                self.tally.stale_masks += 1  # e.g. an undo that did not rewrite the mask
            if sha is not None:
                self.hist[steps] = sha

    def act(self) -> None:
        kind, path, body = self.next_request()
        reply = call(self.server.url, "POST", path, body)
        if reply.status != 200:
            raise RuntimeError(f"{kind} answered {reply.status}: {reply.body}")
        self.acknowledge(kind, reply, download=True)

    def cycle(self, n: int) -> None:
        rng = self.rng
        mode = "in_flight_step" if n == 0 else str(rng.choice(MODES, p=MODE_P))
        if mode == "in_flight_undo" and self.steps == 0:
            mode = "in_flight_step"
        before = 0 if n == 0 else int(rng.integers(0 if mode.startswith("in_flight") else 1, 4))
        for _ in range(before):
            self.act()
        in_flight: dict[str, Any] = {}
        if mode.startswith("in_flight"):
            kind, path, body = (
                ("undo", f"/api/sessions/{self.sid}/undo", None)
                if mode == "in_flight_undo"
                else self.step_request()
            )
            in_flight["kind"] = kind
            seen = self.tally.step_s if kind == "step" else self.tally.undo_s
            typical = float(np.median(seen)) if seen else 0.5
            delay = float(rng.uniform(0, 1.3 * typical))
            in_flight["kill_after_s"] = round(delay, 3)

            def send() -> None:
                in_flight["reply"] = call(self.server.url, "POST", path, body)

            thread = threading.Thread(target=send)
            thread.start()
            time.sleep(delay)
            self.server.kill()
            thread.join()
            reply = in_flight["reply"]
            in_flight["acked"] = reply.status == 200
            if reply.status == 200:
                self.acknowledge(kind, reply, download=False)
        elif mode == "after_reply":
            kind, path, body = self.next_request()
            reply = call(self.server.url, "POST", path, body)
            if reply.status != 200:
                raise RuntimeError(f"{kind} answered {reply.status}: {reply.body}")
            self.acknowledge(kind, reply, download=False)
            self.server.kill()
        else:
            self.server.kill()
        self.check(n, mode, in_flight)

    def check(self, n: int, mode: str, in_flight: dict[str, Any]) -> None:
        t = self.tally
        acked = self.steps
        t.start_s.append(self.server.start())
        url = self.server.url
        state = call(url, "GET", f"/api/sessions/{self.sid}")
        t.reload_s.append(state.seconds)
        row: dict[str, Any] = {"cycle": n, "mode": mode, "acked_steps": acked,
                               "start_s": round(t.start_s[-1], 2),
                               "reload_s": round(state.seconds, 2)}  # fmt: skip
        if state.status != 200:
            t.lost_acked_steps += acked
            row.update(outcome=f"session lost ({state.status})", steps_after=None)
            t.rows.append(row)
            raise RuntimeError(f"cycle {n}: the session did not reload: {state.body}")
        after = int(state.body["steps"])
        row["steps_after"] = after
        outcome = "ok"
        pending = in_flight and not in_flight.get("acked")
        outcome_if_persisted = acked + (1 if in_flight.get("kind") == "step" else -1)
        if after != acked and pending and after == outcome_if_persisted:
            t.in_flight_persisted += 1
            outcome = f"in-flight {in_flight['kind']} persisted"
            self.hist = self.hist[: after + 1] if after < acked else self.hist + ["?"]
        elif after < acked:
            t.lost_acked_steps += acked - after
            outcome = f"LOST {acked - after} acknowledged step(s)"
            self.hist = self.hist[: after + 1]
        elif after > acked:
            t.extra_steps += after - acked
            outcome = f"{after - acked} step(s) never sent or acknowledged"
            self.hist += ["?"] * (after - acked)
        self.steps = after
        t.checks += 1
        status, sha = mask_sha(url, self.sid)
        held = overlay_sha(url, self.sid, self.shape)
        row["mask_status"] = status
        if after > 0 and (status != 200 or sha == "unreadable"):
            t.missing_masks += 1
            row["mask"] = "MISSING"
        elif after > 0 and (sha != held or self.hist[after] not in ("?", sha)):
            t.stale_masks += 1
            differs = [] if sha == held else ["the mask the server holds"]
            differs += [] if self.hist[after] in ("?", sha) else ["the acknowledged state's"]
            row["mask"] = "STALE (differs from " + " and ".join(differs) + ")"
        elif after == 0 and status == 200:
            t.stale_masks += 1
            row["mask"] = "STALE (a mask before any step)"
        else:
            row["mask"] = "ok" if after > 0 else "none (no step yet)"
        if sha is not None and sha != "unreadable" and sha == held:
            self.hist[after] = sha
        image = get_bytes(url, f"/api/sessions/{self.sid}/image.nii.gz")
        image_ok = False
        if image is not None and image.status_code == 200:
            try:
                image_ok = image_sha(nifti_array(image.content)) == self.image_sha
            except Exception:
                image_ok = False
        t.image_errors += not image_ok
        row["image"] = "ok" if image_ok else "FAILED"
        row["outcome"] = outcome
        if in_flight:
            note = " (acked)" if in_flight["acked"] else ""
            row["in_flight"] = f"{in_flight['kind']}{note}, kill at {in_flight['kill_after_s']} s"
        t.rows.append(row)
        print(json.dumps(row), flush=True)


def summary(loop: Loop, args: argparse.Namespace) -> dict[str, Any]:
    t = loop.tally

    def stats(xs: list[float]) -> dict[str, float]:
        if not xs:
            return {}
        return {"median": round(float(np.median(xs)), 3), "max": round(max(xs), 3)}

    return {
        "image": loop.target.name,
        "method": args.method,
        "seed": args.seed,
        "cycles": len(t.rows),
        "acknowledged_steps": t.acked_steps,
        "acknowledged_undos": t.acked_undos,
        "lost_acknowledged_steps": t.lost_acked_steps,
        "unacknowledged_extra_steps": t.extra_steps,
        "in_flight_persisted": t.in_flight_persisted,
        "mask_checks_after_restart": t.checks,
        "stale_masks": t.stale_masks,
        "missing_masks": t.missing_masks,
        "image_errors": t.image_errors,
        "kills": {m: sum(r["mode"] == m for r in t.rows) for m in MODES},
        "server_start_s": stats(t.start_s),
        "session_reload_s": stats(t.reload_s),
        "click_step_request_s": stats(t.step_s),
        "undo_request_s": stats(t.undo_s),
        "cpu_count": os.cpu_count(),
    }


def markdown(report: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = ["# Server kill -9 loop", "",
             "Produced by `.venv/bin/python benchmarks/server_crash_loop.py`.", "",
             "| | |", "|---|---|"]  # fmt: skip
    lines += [f"| {k} | {v} |" for k, v in report.items()]
    cols = ["cycle", "mode", "in_flight", "acked_steps", "steps_after", "outcome",
            "mask_status", "mask", "image", "start_s", "reload_s"]  # fmt: skip
    lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> int:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", default="random_walker")
    parser.add_argument("--phantom", action="store_true", help="a phantom, not hippocampus")
    parser.add_argument("--out", type=Path, help="JSON, or Markdown when it ends in .md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mecca-crash-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "images").mkdir()
        target = prepare_root(tmp / "images", args.phantom)
        server = Server(tmp / "images", tmp / "state", args.method, extra, tmp)
        loop = Loop(server, target, args.seed)
        error = None
        try:
            server.start()
            loop.open()
            for n in range(args.cycles):
                loop.cycle(n)
        except RuntimeError as exc:
            error = str(exc)
        finally:
            server.kill()
    report = summary(loop, args)
    if error:
        report["error"] = error
    print(json.dumps(report, indent=1))
    if args.out:
        text = markdown(report, loop.tally.rows) if args.out.suffix == ".md" else None
        args.out.write_text(text or json.dumps({**report, "rows": loop.tally.rows}, indent=1))
    t = loop.tally
    bad = t.lost_acked_steps + t.stale_masks + t.missing_masks + t.image_errors + t.extra_steps
    return 1 if bad or error else 0


if __name__ == "__main__":
    sys.exit(main())
