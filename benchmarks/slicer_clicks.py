"""Dice after 3 foreground and 3 background points through 3D Slicer's own MONAILabel client.

Usage: ``.venv/bin/python benchmarks/slicer_clicks.py [--data ../shared/data/left_atrium]
[--split test] [--target NAME] [--max-cases N] [--models first,generalist] [--out slicer.json]``

What a 3D Slicer user does: the volume goes to ``mecca serve`` (a real uvicorn server in
a thread, default settings) as the NRRD Slicer saves, and the module's client code
(``MONAILabelLib/client.py`` from the PyPI package ``monailabel``, installed by ``make
install``) sends every point so far with each inference, as Slicer does. The user places
a point, looks at the result, places the next one: points 1-3 are foreground points at the
interior-most voxel of the largest missed part of the object, points 4-6 background
points at that of the largest false-positive part (:mod:`mecca.bench.points`, the same
user as ``benchmarks/points_only.py``). No box:
the server's ROI comes from the points (the session's ``roi_margin_mm``).

``first`` in ``--models`` is the first model of ``/info/`` (what Slicer selects when
nobody picks one: the default); the other names are MONAI Label model names. Prints, per
model, the Dice after each point (mean and median over the cases) and the seconds each
inference took as the client saw it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import socket
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from mecca import metrics
from mecca.bench.points import BACKGROUND_POINTS, FOREGROUND_POINTS, is_foreground_turn, next_point
from mecca.data.datasets import open_dataset
from mecca.errors import InputError
from mecca.io import load, save_volume
from mecca.server.settings import ServerSettings

CLIENT = Path(sys.prefix) / "monailabel/plugins/slicer/MONAILabel/MONAILabelLib/client.py"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "left_atrium"


def slicer_client() -> Any:
    """3D Slicer's MONAILabel client module (a data file of the monailabel wheel)."""
    if not CLIENT.is_file():
        raise SystemExit(f"no Slicer client at {CLIENT}: pip install --no-deps monailabel==0.8.5")
    spec = importlib.util.spec_from_file_location("slicer_monailabel_client", CLIENT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # it imports cgi
        spec.loader.exec_module(module)
    return module


@contextmanager
def served(settings: ServerSettings) -> Iterator[str]:
    """The app under uvicorn in a thread on a free local port; yields its URL."""
    import uvicorn

    from mecca.server.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def run_case(lib: Any, url: str, model: str, image_file: Path, gt: np.ndarray, tmp: Path) -> dict:
    """Six inferences through the client: Dice and seconds after each point."""
    client = lib.MONAILabelClient(url, tmpdir=str(tmp))
    session = client.create_session(str(image_file))["session_id"]
    params: dict[str, Any] = {"label": "target", "foreground": [], "background": []}
    pred = np.zeros(gt.shape, bool)
    dice, seconds = [], []
    for n in range(FOREGROUND_POINTS + BACKGROUND_POINTS):
        fg = is_foreground_turn(n)
        point = next_point(pred, gt, fg)
        if point is not None:
            params["foreground" if fg else "background"].append(list(point))
        t0 = time.perf_counter()
        label_file, _ = client.infer(model, "volume", params, session_id=session)
        seconds.append(time.perf_counter() - t0)
        pred = load(label_file, dtype=None).array.astype(bool)
        dice.append(float(metrics.dice(pred, gt)))
    client.remove_session(session)
    return {"dice": dice, "seconds": seconds, "points": params}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--split", default="test")
    parser.add_argument("--target", help="a named target (default: the dataset's)")
    parser.add_argument("--max-cases", type=int, help="the first N cases holding the target")
    parser.add_argument("--models", default="first,generalist")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    lib = slicer_client()
    ds = open_dataset(args.data)
    cases, masks = [], {}
    for case in ds.cases(args.split):
        if args.max_cases is not None and len(cases) == args.max_cases:
            break
        try:
            masks[case.case_id] = ds.load_case(case, args.target)[1]
        except InputError:  # the target is not contoured in this case: pass over it
            print(f"{case.case_id}: no {args.target or 'target'}, passed over", flush=True)
            continue
        cases.append(case)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        settings = ServerSettings(roots=(tmp / "roots",), state_dir=tmp / "state")
        (tmp / "roots").mkdir()
        with served(settings) as url:
            info = lib.MONAILabelClient(url, tmpdir=str(tmp)).info()
            names = [
                next(iter(info["models"])) if m == "first" else m for m in args.models.split(",")
            ]
            for name in names:
                per_case = {}
                for case in cases:
                    vol, gt = ds.load_image(case), masks[case.case_id]
                    image_file = save_volume(vol, tmp / f"{case.case_id}.nrrd", force=True)
                    per_case[case.case_id] = run_case(lib, url, name, image_file, gt, tmp)
                    d = per_case[case.case_id]["dice"]
                    print(f"{name} {case.case_id}: " + " ".join(f"{v:.3f}" for v in d), flush=True)
                results[name] = per_case
    what = f"{args.data.name} {args.split}" + (f" {args.target}" if args.target else "")
    print(f"{what}, {len(cases)} cases, Dice after each point (3 fg, 3 bg)")
    for name, per_case in results.items():
        d = np.array([c["dice"] for c in per_case.values()])
        s = np.array([c["seconds"] for c in per_case.values()])
        print(f"  {name:12s} mean   " + " ".join(f"{v:.3f}" for v in d.mean(0)))
        print(f"  {'':12s} median " + " ".join(f"{v:.3f}" for v in np.median(d, 0)))
        print(f"  {'':12s} s/inference median {np.median(s):.2f}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
