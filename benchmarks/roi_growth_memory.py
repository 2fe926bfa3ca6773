"""A long structure on a 512 x 512 x 600 CT: the ROI follows it, memory follows the ROI.

Usage: ``.venv/bin/python benchmarks/roi_growth_memory.py [--extra ~/.cache/mecca-data-extra]
[--case pt_001] [--target spinal_cord] [--shape 512 512 600] [--clicks 5] [--box]
[--out f.json]``

Issue 28 asks that an ROI grow when the object reaches its border (long structures are
cut at a slab otherwise) and that memory stay bounded by the ROI on a 512 x 512 x 600 CT.
No shared CT has that grid, so an OpenKBP head-and-neck CT (128 x 128 x 128, 3.9 x 3.9 x
2.5 mm; ``../shared/extra/build_extra.py``) and its label are resampled onto it (linear /
nearest; 0.98 x 0.98 x 0.53 mm): the content is the real CT's, blurred, the grid and the
memory are those of a large CT. Then a session with every default (the generalist, the
ROI from the clicks, growth up to twice a step) gets one click a step from the CVPR 2025
challenge's user: at the interior-most voxel of the largest error, foreground for a missed
part, background for a wrongly added one (:func:`mecca.bench.cvpr25.organisers_click`;
the first click is the structure's interior-most voxel). ``--box``: the structure's
bounding box first, as a box drawn around it (``mecca segment --box``), its step click 0.

Prints, per click: the ROI (voxels and MB as float32), the method's grid, the Dice, the
step's seconds, the most resident memory the step added while it ran (sampled every 5 ms
by a thread, above the memory just before the step; the simulated user's own full-volume
arrays come before it and are not counted) and what the session holds after the step
above what the process held before the session (the volume and the model loaded). The
volume alone is 600 MB as float32; what a step adds should follow the ROI, not the volume.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from mecca import metrics
from mecca.bench.cvpr25 import organisers_click, to_zyx
from mecca.data.datasets import open_dataset
from mecca.data.roi import Box
from mecca.interaction.clicks import Click, InteractionKind
from mecca.io import Volume
from mecca.methods.generalist.method import generalist_factory
from mecca.session import Session

MB = 2**20


def rss_bytes() -> int:
    """This process's resident memory (Linux ``/proc/self/statm``)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096


class PeakSampler:
    """The largest resident memory seen since :meth:`reset`, sampled every 5 ms."""

    def __init__(self) -> None:
        self.peak = rss_bytes()
        self._lock = threading.Lock()  # a reset must not be overwritten by an older peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def reset(self) -> int:
        """Start a new peak from the memory now; returns it."""
        with self._lock:
            self.peak = rss_bytes()
            return self.peak

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            with self._lock:
                self.peak = max(self.peak, rss_bytes())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def resampled(
    volume: Volume, gt: np.ndarray, shape: tuple[int, int, int]
) -> tuple[Volume, np.ndarray]:
    """``volume`` and ``gt`` on a grid of ``shape`` over the same extent (linear / nearest);
    the affine maps the new voxel centres onto the same millimetres."""
    factors = [n / o for n, o in zip(shape, volume.shape, strict=True)]
    image = ndimage.zoom(
        np.asarray(volume.array, np.float32), factors, order=1, grid_mode=True, mode="nearest"
    )
    label = ndimage.zoom(gt.astype(np.uint8), factors, order=0, grid_mode=True, mode="nearest") > 0
    step = np.diag([1 / f for f in factors] + [1.0])
    step[:3, 3] = [(1 / f - 1) / 2 for f in factors]  # voxel centres, not corners
    return Volume(image, volume.affine @ step), label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", type=Path, default=Path.home() / ".cache/mecca-data-extra")
    parser.add_argument("--case", default="pt_001")
    parser.add_argument("--target", default="spinal_cord")
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 600))
    parser.add_argument("--clicks", type=int, default=5)
    parser.add_argument("--box", action="store_true", help="a box round the structure first")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    ds = open_dataset(args.extra.expanduser() / "openkbp_ct")
    small, small_gt = ds.load_case(args.case, args.target)
    volume, gt = resampled(small, small_gt, tuple(args.shape))
    del small, small_gt
    method = generalist_factory(None)
    volume_mb = volume.array.size * 4 / MB
    print(
        f"{args.case} {args.target}: {volume.shape}, spacing "
        f"{tuple(round(float(s), 3) for s in volume.spacing)} mm, {int(gt.sum())} voxels of "
        f"the structure; the volume {volume_mb:.0f} MB as float32",
        flush=True,
    )
    drawn = Box.from_mask(gt) if args.box else None
    session = Session(volume, drawn, method=method, rng=0, roi_as_box=args.box)
    before = rss_bytes()
    sampler = PeakSampler()
    pred = np.zeros(gt.shape, bool)
    rows = []
    for n in range(0 if args.box else 1, args.clicks + 1):
        found = organisers_click(to_zyx(pred), to_zyx(gt)) if n else None
        if n and found is None:
            break
        point, kind = None, None
        if found is not None:
            (z, y, x), foreground = found
            point = (int(x), int(y), int(z))
            kind = InteractionKind.FOREGROUND if foreground else InteractionKind.BACKGROUND
            session.add_clicks([Click(kind, point)])
        start = sampler.reset()
        t0 = time.perf_counter()
        result = session.step()
        seconds = time.perf_counter() - t0
        step_peak, held = sampler.peak - start, rss_bytes() - before
        pred = np.zeros(gt.shape, bool)
        pred[result.box.slices] = result.mask_box
        roi = session.roi
        assert roi is not None
        row = {
            "click": n,
            "point": None if point is None else list(point),
            "kind": None if kind is None else kind.value,
            "roi": [list(roi.start), list(roi.stop)],
            "roi_voxels": int(np.prod(roi.shape)),
            "roi_mb_float32": round(int(np.prod(roi.shape)) * 4 / MB, 1),
            "grid": list(session.grid),
            "mask_voxels": int(pred.sum()),
            "dice": round(float(metrics.dice(pred, gt)), 4),
            "seconds": round(seconds, 2),
            "step_peak_mb": round(step_peak / MB, 1),
            "session_held_mb": round(held / MB, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    sampler.stop()
    summary = {
        "case": args.case,
        "target": args.target,
        "box": args.box,
        "shape": list(volume.shape),
        "volume_mb_float32": round(volume_mb, 1),
        "largest_roi_mb_float32": max(r["roi_mb_float32"] for r in rows),
        "largest_step_peak_mb": max(r["step_peak_mb"] for r in rows),
        "session_held_mb_at_end": rows[-1]["session_held_mb"],
        "steps": rows,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "steps"}), flush=True)
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
