"""Time the interaction building blocks on the network grid (55 x 55 x 30).

Usage: ``.venv/bin/python benchmarks/foundation_timing.py [--repeats 30] [--out times.json]``

Prints the median and inter-quartile range (milliseconds, wall clock, one thread of
Python) of: one geodesic hint map (5 seeds, lamb = 1), one Gaussian hint map (5 and 25
points), one EdgeUser step (25 points), one ErrorCentreUser step and one DistanceUser
step, on a phantom: an ellipsoid in smoothed noise with a shifted, bumpy prediction.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy
from scipy import ndimage

from mecca.interaction.hints import gaussian_map, geodesic_map
from mecca.interaction.users import DistanceUser, EdgeUser, ErrorCentreUser

GRID = (55, 55, 30)


def phantom(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image float32 z-scored, gt bool, pred bool) on GRID, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    ii, jj, kk = np.indices(GRID, dtype=np.float64)
    gt = ((ii - 27) / 14) ** 2 + ((jj - 26) / 11) ** 2 + ((kk - 15) / 8) ** 2 <= 1.0
    image = ndimage.gaussian_filter(gt + rng.normal(0.0, 0.4, GRID), 1.0)
    image = ((image - image.mean()) / image.std()).astype(np.float32)
    bumps = ndimage.gaussian_filter(rng.normal(0.0, 1.0, GRID), 3.0)
    pred = ndimage.gaussian_filter(np.roll(gt, 3, axis=0).astype(float), 1.5) + 4.0 * bumps > 0.5
    return image, gt, pred


def measure(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    """Median and quartiles of ``fn``'s wall time in ms, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    q1, med, q3 = np.percentile(times, [25, 50, 75])
    return {
        "median_ms": float(med),
        "q1_ms": float(q1),
        "q3_ms": float(q3),
        "iqr_ms": float(q3 - q1),
    }


def cases(seed: int) -> dict[str, Callable[[], object]]:
    """The timed calls, by name."""
    image, gt, pred = phantom(seed)
    rng = np.random.default_rng(seed)
    seeds5 = np.argwhere(gt)[rng.choice(int(gt.sum()), 5, replace=False)]
    pts25 = np.argwhere(gt)[rng.choice(int(gt.sum()), 25, replace=False)]
    edge, centre, distance = EdgeUser(), ErrorCentreUser(), DistanceUser()
    return {
        "geodesic_map_5pts": lambda: geodesic_map(image, seeds5, lamb=1.0),
        "gaussian_map_5pts": lambda: gaussian_map(GRID, seeds5),
        "gaussian_map_25pts": lambda: gaussian_map(GRID, pts25),
        "edge_user_step1_25pts": lambda: edge(pred, gt, step=1, rng=rng),
        "error_centre_user_step": lambda: centre(pred, gt, step=1, rng=rng),
        "distance_user_step": lambda: distance(pred, gt, step=1, rng=rng),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per case")
    parser.add_argument("--seed", type=int, default=0, help="phantom and click seed")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()

    results = {name: measure(fn, args.repeats) for name, fn in cases(args.seed).items()}
    print(f"grid {GRID}, {args.repeats} repeats, median [IQR] ms")
    for name, r in results.items():
        print(f"  {name:26s} {r['median_ms']:8.2f}  [{r['q1_ms']:.2f}, {r['q3_ms']:.2f}]")
    if args.out is not None:
        record = {
            "grid": GRID,
            "repeats": args.repeats,
            "seed": args.seed,
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "machine": platform.machine(),
            "results": results,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
