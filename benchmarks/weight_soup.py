"""Average the weights of generalist runs that share a network (a "model soup").

Writes ``OUT/best.pt``: the mean of the floating-point network tensors of the given
checkpoints (integer tensors from the first), with the first one's config, so that
``benchmarks/generalist_settings.py --weights OUT`` and ``mecca export-model`` take it
like a run. The shipped box weights are such a mean (the ninth schedule's and the
eighteenth's); the soups of docs/defaults.md ("Four more tries") and the mean of one run's
snapshots (``snapshot_every``, the twenty-second schedule, docs/training.md) were measured
on val and not shipped.

Usage::

    python benchmarks/weight_soup.py OUT runs/generalist_s9/best.pt runs/generalist_s14/last.pt ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    args = parser.parse_args()
    runs = [torch.load(p, map_location="cpu", weights_only=True) for p in args.checkpoints]
    first = runs[0]
    for run, path in zip(runs, args.checkpoints, strict=True):
        if run.get("kind") != "generalist" or run["net_config"] != first["net_config"]:
            raise SystemExit(f"{path}: not a generalist checkpoint of the first one's network")
    net = {
        k: sum(r["net"][k].float() for r in runs) / len(runs) if v.is_floating_point() else v
        for k, v in first["net"].items()
    }
    keep = ("kind", "method", "config", "net_config", "grid", "iteration")
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save({**{k: first[k] for k in keep}, "net": net}, args.out / "best.pt")
    print(args.out / "best.pt", f"(mean of {len(runs)})")


if __name__ == "__main__":
    main()
