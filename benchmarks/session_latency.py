"""Latency of one ``Session.step()`` with a learned model, as a user feels it.

Usage: ``.venv/bin/python benchmarks/session_latency.py [--model NAME|DIR | --method NAME]
[--box] [--repeats 20] [--grid 55 55 30] [--threads 2] [--out latency.json]``

``--model`` times an agent bundle (MECCA, IteR-MRL) with edge points; ``--method`` times a
registry method as the commands build it (``--method generalist``: the default model on its
own grid, ``--grid`` ignored), given one foreground/background click per step at the
largest error's centre (the CVPR 2025 user's kind of click) instead of edge points; the
step then includes the session's click honouring. ``--box`` (with ``--method``): each
session gets the target's tight box as a box prompt (``roi_as_box``, the page's Box tool),
its first step the box and the first click.

The volume is 240 x 240 x 155 (the BraTS grid): the first brats2015 case of
``../shared/data`` when present, else an MR phantom of that size. The ROI is the target's
box + 5 voxels; each timed step gets 5 edge points from the simulated user (the first
step 25), so the call includes the hint maps, the policy, the confidence network, the SLIC
advice regions and mapping probability, mask, confidence and advice back to the original
grid. Prints medians and quartiles in ms for three cases:

* ``back_to_back``: the next clicks arrive the instant a step returns, so the step also
  waits for its SLIC supervoxels (computed in the background from the previous step on);
* ``with_think_time``: ``--think-ms`` pass between a step and the next clicks, as when a
  person places them (5 edge points take seconds), so the supervoxels are ready;
* ``without_advice``: no advice regions at all (``Session(advice=False)``).

Each step's result lives on the ROI box; ``full_size`` times building the four
240 x 240 x 155 arrays from it afterwards (what a caller pays only if it asks for them).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from mecca.data.roi import Box
from mecca.interaction.clicks import box_prompt
from mecca.interaction.users import EdgeUser, ErrorCentreUser, SimulatedUser
from mecca.interface import grid_of
from mecca.io import Volume
from mecca.methods import registry
from mecca.methods.agents.bundle import load_bundle
from mecca.session import Session

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brats2015"


def volume() -> tuple[str, Volume, np.ndarray]:
    """(description, 240 x 240 x 155 volume, target mask)."""
    if (SHARED / "dataset.json").exists():
        from mecca.data.datasets import open_dataset

        ds = open_dataset(SHARED)
        case = ds.cases()[0]
        vol, mask = ds.load_case(case)
        return f"brats2015/{case.case_id}", vol, mask
    from mecca.data.phantoms import make_phantom

    ph = make_phantom((240, 240, 155), rng=np.random.default_rng(0))
    return "MR phantom 240x240x155", Volume(ph.image.astype(np.float32), np.eye(4)), ph.label == 1


def roi_box(gt: np.ndarray) -> Box:
    """The sessions' ROI: the object's box plus 5 voxels per side."""
    idx = np.argwhere(gt)
    return Box(
        tuple(np.maximum(idx.min(0) - 5, 0)),  # type: ignore[arg-type]
        tuple(np.minimum(idx.max(0) + 6, gt.shape)),
    )


def time_steps(
    vol: Volume,
    gt: np.ndarray,
    method: object,
    grid: tuple[int, int, int] | None,
    repeats: int,
    *,
    think_s: float = 0.0,
    advice: bool = True,
    full_size: list[float] | None = None,
    user: SimulatedUser | None = None,
    as_box: bool = False,
) -> list[float]:
    """Wall ms of ``repeats`` Session.step() calls (5 steps per session, then a new one).

    ``think_s`` seconds pass before each step's clicks are given; with ``full_size`` a list,
    the ms to build the full-size arrays of each result are appended to it.
    """
    box = Box.from_mask(gt) if as_box else roi_box(gt)
    user = user or EdgeUser()
    rng = np.random.default_rng(0)
    times: list[float] = []
    while len(times) < repeats + 1:  # the first call warms up
        session = Session(
            vol,
            box,
            method=method,  # type: ignore[arg-type]
            grid=grid,
            rng=0,
            advice=advice,
            roi_as_box=as_box,
        )
        pred = np.zeros(gt.shape, bool)
        for t in range(1, 6):
            time.sleep(think_s)
            session.add_clicks(user(pred, gt, step=t, rng=rng))
            t0 = time.perf_counter()
            result = session.step()
            times.append((time.perf_counter() - t0) * 1e3)
            t1 = time.perf_counter()
            pred = result.mask.astype(bool)
            _ = result.prob, result.confidence, result.advice
            if full_size is not None:
                full_size.append((time.perf_counter() - t1) * 1e3)
    return times[1 : repeats + 1]


def summary(times: list[float]) -> dict[str, float]:
    q1, med, q3 = np.percentile(times, [25, 50, 75])
    return {"median_ms": float(med), "q1_ms": float(q1), "q3_ms": float(q3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", default="mecca_phantom", help="agent bundle name or folder")
    which.add_argument("--method", help="a registry method with its default model")
    parser.add_argument("--box", action="store_true", help="a box prompt first (--method)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--grid", type=int, nargs=3, default=(55, 55, 30))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--think-ms", type=float, default=1000.0, help="user time per step")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    source, vol, gt = volume()
    user: SimulatedUser | None = None
    if args.method:
        method: object = registry.build(args.method)
        model = str(registry.model_for(args.method))
        grid = None  # the session's: grid_of(method, ROI shape), recorded below
        user = ErrorCentreUser(n=1, max_offset=0)
    else:
        bundle = load_bundle(args.model)
        model, grid, method = bundle.path.name, tuple(args.grid), bundle.method()
    full: list[float] = []
    think = args.think_ms / 1e3
    results = {
        "back_to_back": summary(
            time_steps(
                vol, gt, method, grid, args.repeats, full_size=full, user=user, as_box=args.box
            )  # type: ignore[arg-type]
        ),
        "with_think_time": summary(
            time_steps(
                vol, gt, method, grid, args.repeats, think_s=think, user=user, as_box=args.box
            )  # type: ignore[arg-type]
        ),
        "without_advice": summary(
            time_steps(
                vol, gt, method, grid, args.repeats, advice=False, user=user, as_box=args.box
            )  # type: ignore[arg-type]
        ),
    }
    results["full_size"] = summary(full)
    if grid is None:
        roi = box_prompt(Box.from_mask(gt), gt.shape)[0] if args.box else roi_box(gt)
        grid = grid_of(method, roi.shape, boxed=args.box)  # type: ignore[arg-type]
    # the vector unit torch's kernels use (AVX2, AVX512, ...): machines of one name differ,
    # and the step time with them
    cpu = torch.backends.cpu.get_cpu_capability()
    print(
        f"{source}, model {model}, grid {grid}, {args.threads} threads, "
        f"{args.repeats} steps, think time {args.think_ms:.0f} ms, "
        f"{cpu}: median [q1, q3] ms"
    )
    for key, r in results.items():
        print(f"  {key:16s} {r['median_ms']:7.1f}  [{r['q1_ms']:.1f}, {r['q3_ms']:.1f}]")
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "source": source,
                    "model": model,
                    "box_prompt": args.box,
                    "grid": grid,
                    "threads": args.threads,
                    "think_ms": args.think_ms,
                    "torch": torch.__version__,
                    "machine": platform.machine(),
                    "cpu_capability": cpu,
                    "results": results,
                },
                indent=1,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
