"""The disk experiment of the probabilistic partial-segmentation paper (seed 003, Sec. 3).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/partial_disks.py --out runs/partial_disks \\
        --steps 5000 --results docs/results/partial_disks.json

Rerunning the same command resumes training from ``<out>/last.pt`` (Ctrl-C or SIGTERM
save it first) and then evaluates; with ``--steps`` already reached it only evaluates.
``--max-minutes M`` stops training at the first 250-step boundary after M minutes (the
results file records the steps actually trained).

Data (the paper gives the recipe only in words; the numbers below are this script's):
32 x 32 images with three disks, radius uniform in [4, 8] pixels, centres drawn so the disk
lies inside the image and, when possible within 100 tries, 1 pixel or more from the other
disks; intensities three distinct values in [0.3, 1.0] (at least 0.1 apart) on a 0
background, plus Gaussian noise of sigma 0.05. The ground truth of an image is a random
non-empty subset of its disks (each disk in with probability 1/2, redrawn when none is),
the paper's "ground truth segmentation maps of different subsets of disks": the image alone
does not say which disks are wanted, the partial input does, in part. ``--train-images``
images (default 5,000; the paper's whole set was 1,000) train the 2D cVAE; 1,000 other
images (another seed) are held out.

Partial inputs: on every held-out image, one input (x_m, x_s) from the same pair generator
as in training (:func:`mecca.methods.partial.model.make_pair`: the ground truth intersected with
random shapes); the model proposes ``--k`` partial segmentations (default K = 5), each from
one z ~ N(0, I).

Figures (all over the 1,000 held-out images; "added" = the proposal's mask minus x_m,
A below; Dice(a, b) = 2|a ∧ b| / (|a| + |b|), 1 when both are empty):

- ``added_foreground`` / ``added_background``: mean pixels per proposal newly decided as
  foreground / background (paper: 52 and 31);
- ``dice_any_gt`` (the paper's figure, 0.87): per proposal, the Dice between its added
  foreground (seg ∧ A) and G ∧ A, maximised over the 8 possible ground truths G (every
  subset of the image's three disks, the empty one included), then averaged over all
  proposals. ``dice_any_gt_nonempty`` averages only proposals that add some foreground.
  Note that marking every disk in A as foreground scores 1 here whatever the input says;
- ``dice_consistent_gt``: the same, maximised only over the ground truths that agree with
  the input partial segmentation (G ∧ x_m = x_s; the image's own ground truth always does):
  "all possible ground truths" read as "possible given what the user already decided";
- ``best_of_k_dice_added``: per image, the highest Dice over the K proposals between the
  added foreground and the image's own ground truth on A (seg ∧ A vs GT ∧ A); mean over
  images. ``mean_dice_added`` is the same Dice averaged over all proposals;
- ``best_of_k_dice_full``: per image, the highest Dice over the K proposals between the
  proposal's whole seg (input foreground included) and the full ground truth; mean;
- ``picked_dice_full``: the same Dice for the proposal a simulated user picks
  (:func:`mecca.episode.pick_closest`);
- ``added_accuracy``: share of added pixels whose fg/bg decision matches the image's own
  ground truth (proposals adding nothing left out);
- ``distinct_per_image``: mean number of different proposals among the K;
- ``target_added_foreground`` / ``target_added_background``: the same counts for the pair
  generator's own target y (what the model was trained to imitate), for scale.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import platform
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from mecca._version import __version__
from mecca.config import config_to_dict
from mecca.episode import pick_closest
from mecca.interface import Proposal
from mecca.methods.partial.model import PartialConfig, PartialPair, PartialProposer, make_pair
from mecca.methods.partial.train import train_partial

log = logging.getLogger("partial_disks")

SIZE = 32
CHUNK = 250  # training steps between two checks of --max-minutes
RADIUS = (4.0, 8.0)
NOISE = 0.05
PAPER = {"added_foreground": 52, "added_background": 31, "dice_any_gt": 0.87}
SUBSETS = np.array(list(itertools.product([0, 1], repeat=3)), dtype=bool)  # (8, 3)


@dataclass(frozen=True)
class Disks:
    """images (N, 32, 32) float32, disks (N, 3, 32, 32) bool, labels (N, 32, 32) bool."""

    images: np.ndarray
    disks: np.ndarray
    labels: np.ndarray


def _centres(radii: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Disk centres inside the image, apart from each other when 100 tries allow it."""
    best = None
    for _ in range(100):
        c = np.stack([rng.uniform(r, SIZE - 1 - r, size=2) for r in radii])
        gaps = [
            np.linalg.norm(c[i] - c[j]) - radii[i] - radii[j]
            for i, j in itertools.combinations(range(3), 2)
        ]
        if min(gaps) >= 1.0:
            return c
        best = c if best is None else best
    assert best is not None
    return best


def _intensities(rng: np.random.Generator) -> np.ndarray:
    while True:
        values = rng.uniform(0.3, 1.0, size=3)
        if np.diff(np.sort(values)).min() >= 0.1:
            return values


def make_disks(n: int, rng: np.random.Generator) -> Disks:
    """``n`` disk images with their disks and a random non-empty subset as ground truth."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    images = np.zeros((n, SIZE, SIZE), np.float32)
    disks = np.zeros((n, 3, SIZE, SIZE), bool)
    labels = np.zeros((n, SIZE, SIZE), bool)
    for i in range(n):
        radii = rng.uniform(*RADIUS, size=3)
        centres = _centres(radii, rng)
        values = _intensities(rng)
        for d in range(3):
            disks[i, d] = (yy - centres[d, 0]) ** 2 + (xx - centres[d, 1]) ** 2 <= radii[d] ** 2
            images[i][disks[i, d]] = values[d]
        chosen = np.zeros(3, bool)
        while not chosen.any():
            chosen = rng.random(3) < 0.5
        labels[i] = disks[i][chosen].any(axis=0)
    images += rng.normal(0.0, NOISE, size=images.shape).astype(np.float32)
    return Disks(images, disks, labels)


def dice(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dice over the last two axes (broadcasting), 1 where both are empty."""
    inter = (a & b).sum(axis=(-2, -1))
    total = a.sum(axis=(-2, -1)) + b.sum(axis=(-2, -1))
    return np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))


def score_image(
    proposals: list[Proposal], pair: PartialPair, disks: np.ndarray, truth: np.ndarray
) -> dict[str, list[float]]:
    """Per-proposal and per-image figures of one held-out image (see the docstring)."""
    masks = np.stack([p.mask for p in proposals])
    segs = np.stack([p.seg for p in proposals])
    added = masks & ~pair.x_m  # (K, H, W)
    fg = segs & added
    all_gts = (SUBSETS[:, :, None, None] & disks[None]).any(axis=1)  # (8, H, W)
    any_gt = dice(fg[:, None], all_gts[None] & added[:, None]).max(axis=1)
    consistent = ((all_gts & pair.x_m) == pair.x_s).all(axis=(1, 2))  # (8,) the input allows
    fitting = dice(fg[:, None], all_gts[consistent][None] & added[:, None]).max(axis=1)
    own = dice(fg, truth[None] & added)
    full = dice(segs, truth[None])
    n_added = added.sum(axis=(1, 2))
    correct = ((segs == truth[None]) & added).sum(axis=(1, 2))
    picked = pick_closest(proposals, truth)
    distinct = len({(p.mask.tobytes(), p.seg.tobytes()) for p in proposals})
    target_new = pair.y_m & ~pair.x_m
    return {
        "added_foreground": [p.added_foreground for p in proposals],
        "added_background": [p.added_background for p in proposals],
        "dice_any_gt": any_gt.tolist(),
        "dice_any_gt_nonempty": any_gt[fg.any(axis=(1, 2))].tolist(),
        "dice_consistent_gt": fitting.tolist(),
        "mean_dice_added": own.tolist(),
        "best_of_k_dice_added": [float(own.max())],
        "best_of_k_dice_full": [float(full.max())],
        "picked_dice_full": [float(full[picked])],
        "added_accuracy": (correct[n_added > 0] / n_added[n_added > 0]).tolist(),
        "share_adding_nothing": [float((n_added == 0).mean())],
        "distinct_per_image": [float(distinct)],
        "target_added_foreground": [float((pair.y_s & target_new).sum())],
        "target_added_background": [float((target_new & ~pair.y_s).sum())],
        "input_decided": [float(pair.x_m.sum())],
    }


def evaluate(
    proposer: PartialProposer, data: Disks, cfg: PartialConfig, k: int, seed: int
) -> dict[str, float]:
    """Mean of every figure of :func:`score_image` over the held-out images."""
    rng = np.random.default_rng([seed, 2])
    acc: dict[str, list[float]] = {}
    seconds = 0.0
    for i in range(len(data.images)):
        pair = make_pair(
            data.labels[i],
            rng,
            n_shapes=cfg.n_shapes,
            max_added_shapes=cfg.max_added_shapes,
            shape_sigma=cfg.shape_sigma,
        )
        t0 = time.perf_counter()
        proposals = proposer.propose(data.images[i], pair.x_m, pair.x_s, k, rng)
        seconds += time.perf_counter() - t0
        for key, values in score_image(proposals, pair, data.disks[i], data.labels[i]).items():
            acc.setdefault(key, []).extend(values)
    out = {key: float(np.mean(v)) if v else float("nan") for key, v in acc.items()}
    out["propose_ms_per_image"] = 1e3 * seconds / len(data.images)
    return out


def logged_train_seconds(run: Path) -> float:
    """Training wall time over every invocation of the run, from log.jsonl."""
    lines = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]
    total, previous = 0.0, 0
    for rec in lines:
        if rec["type"] == "start":
            previous = rec["step"]
        elif rec["type"] == "train":
            total += rec["seconds_per_step"] * (rec["step"] - previous)
            previous = rec["step"]
    return total


def train_within(cfg: PartialConfig, data: Disks, out: Path, minutes: float | None) -> int:
    """Train up to ``cfg.steps`` (resuming), in chunks of 250 steps so that a wall-clock
    budget of ``minutes`` (this invocation) stops it at a chunk's end; returns the step."""
    t0 = time.perf_counter()
    images, labels = list(data.images), list(data.labels)
    last = out / "last.pt"
    step = int(torch.load(last, weights_only=True)["step"]) if last.exists() else 0
    while step < cfg.steps:
        if minutes is not None and time.perf_counter() - t0 > 60 * minutes:
            log.warning("time budget of %.1f min spent at step %d", minutes, step)
            break
        step = min(cfg.steps, (step // CHUNK + 1) * CHUNK)
        train_partial(replace(cfg, steps=step), images, labels, out, resume=True)
    return step


def config_from_args(args: argparse.Namespace) -> PartialConfig:
    """The 2D cVAE of the paper's Sec. 3 (decoder narrower than the paper's 64 for the CPU)."""
    return PartialConfig(
        dims=2,
        grid=(SIZE, SIZE),
        dec_width=args.dec_width,
        latent_size=args.latent_size,
        batch_size=args.batch_size,
        steps=args.steps,
        seed=args.seed,
        lr=args.lr,
        log_every=50,
        checkpoint_every=250,
    )


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--out", type=Path, required=True, help="run folder (resumed when present)")
    p.add_argument("--steps", type=int, default=5000, help="training steps in all")
    p.add_argument(
        "--max-minutes", type=float, help="stop training (at a 250-step boundary) after this"
    )
    p.add_argument("--results", type=Path, help="write the figures to this JSON file")
    p.add_argument("--train-images", type=int, default=5000)
    p.add_argument("--test-images", type=int, default=1000)
    p.add_argument("--k", type=int, default=5, help="proposals per held-out image")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dec-width", type=int, default=32)
    p.add_argument("--latent-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = config_from_args(args)
    train = make_disks(args.train_images, np.random.default_rng([args.seed, 0]))
    test = make_disks(args.test_images, np.random.default_rng([args.seed, 1]))
    t0 = time.perf_counter()
    try:
        steps = train_within(cfg, train, args.out, args.max_minutes)
    except KeyboardInterrupt:
        log.warning("interrupted: rerun the same command to resume from %s", args.out)
        return 130
    train_seconds = time.perf_counter() - t0
    proposer = PartialProposer.from_checkpoint(args.out / "last.pt")
    figures = evaluate(proposer, test, cfg, args.k, args.seed)
    result = {
        "experiment": "partial_disks",
        "k": args.k,
        "train_images": args.train_images,
        "test_images": args.test_images,
        "steps_asked": args.steps,
        "steps_trained": steps,
        "train_seconds_this_invocation": round(train_seconds, 1),
        "train_seconds_total": round(logged_train_seconds(args.out), 1),
        "figures": figures,
        "paper": PAPER,
        "config": config_to_dict(cfg),
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "mecca": __version__,
    }
    text = json.dumps(result, indent=2)
    log.info("figures:\n%s", json.dumps(figures, indent=2))
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
