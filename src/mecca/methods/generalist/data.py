"""Training samples of the generalist: a preprocessing cache and a sampler of crops.

**Cache** (:func:`build_cache`, in ``/root/.cache/mecca-generalist/`` by default, never in
the repository). Each training case is read once; what is kept is the region around all
its trained targets (their joint bounding box grown by its own size plus 8 voxels per
side, clipped to the volume) as a float16 image, robustly scaled (``(x - median) /
(p99.5 - p0.5)``, the crop is normalised again later), and the uint8 label map, as
``.npy`` files read by memory map, with a JSON index of the targets (label values,
bounding box, voxels) per case. Procedural volumes (:mod:`.synth`) are stored the same
way as the dataset ``synthetic``, large ones with an organ-sized object as
``synthetic_large``. One sample then costs a few milliseconds of I/O.

**Samples** (:class:`Sampler`). Datasets are drawn by weight, then a target uniformly,
then a case having it (datasets whose cases have their own labels, ``misc`` and the
procedural ones: a case, then one of its targets); 15 % of multi-component targets are cut
to one component. The crop follows the prompt mode, as a session would crop:

* ``box`` (a box prompt): the target's box plus a margin drawn per side, log-uniform in
  2-60 % of its size; the box channel is the target's box on the grid with each side
  moved by about 4 % of its size (a person's box is not tight). In a share
  ``p_loose_box`` of them the box is drawn loosely: each side moved out by a uniform
  share of the box's size up to ``loose_box_slack``, the crop then made around that
  looser box (as a session crops around a drawn box).
* ``slice_box`` (a share ``p_slice_box`` of the box samples): the box of the CVPR 2025
  challenge, drawn on the target's middle slice and spanning its k range
  (:func:`.prompts.middle_slice_box`), which need not bound the object on the other
  slices; the crop is that box grown by 25 % of its size per side, as the benchmark's
  ``cvpr25`` protocol crops (:mod:`mecca.bench.cvpr25`), and the box channel is exactly it
  (with ``slice_box_encoding``: :func:`.prompts.slice_box_map`, the drawn slice told apart).
* ``roi_box``: the crop itself is the box (the target box plus 1-11 voxels per side, the
  benchmark's ROI); the box channel is all ones.
* ``points``: no box; the crop is the target's box scaled by 0.5-3 (so the object may be
  cut by the crop or small in it), moved by up to a fifth of its size, or (``click_roi``,
  a share ``p_click_roi``) a random voxel of the target plus 20-60 mm per side, the crop a
  session makes around a first click (a large organ then fills it); 1-3 foreground
  clicks, sometimes background clicks; in a tenth of them a degraded copy of the truth
  stands for an initial segmentation (``init_prob``) and the clicks come from its errors.
* ``first_click`` (:meth:`Sampler.first_click_sample`, drawn by the trainer): a target
  (of a named dataset, or of any drawn by weight), cropped as ``click_roi`` around one
  foreground click at its interior-most voxel in the crop and nothing else, the case of a
  person who clicks once; the trainer keeps a fixed share of them in every batch.

The crop is resampled trilinearly to the grid exactly as :func:`mecca.data.roi.make_crop`
does, or (30 %) through a rotation of up to 15 degrees in the (i, j) plane; the label is
resampled as a float and kept soft (the target's partial volume on the grid: a network
trained on it gives probabilities that paste back with sub-voxel boundaries, measured
99.3 % Dice for a perfect soft map on left-atrium crops against 97.6 % for a binary one on
a 64 x 64 x 48 grid). Then flips, 90-degree rotations in (i, j), and intensity
augmentation: contrast inversion, gamma, bias field, noise, blur or a coarser slice
resolution, and finally the robust normalisation of :func:`.prompts.normalise_image`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from mecca.data.datasets import Dataset, open_dataset
from mecca.data.roi import Box
from mecca.errors import ConfigError, DatasetError, InputError
from mecca.interaction.clicks import Click
from mecca.io import atomic_write, load_label
from mecca.methods.generalist.prompts import (
    BG,
    FG,
    add_points,
    box_map,
    drawn_slab,
    error_clicks,
    initial_points,
    middle_slice_box,
    normalise_image,
    slice_box_map,
)
from mecca.methods.generalist.synth import make_large_synthetic, make_synthetic, smooth_field

log = logging.getLogger(__name__)

CACHE_VERSION = 1
MIN_TARGET_VOXELS = 20
"""Targets with fewer voxels in a case are not trained on in that case."""
SYNTHETIC = "synthetic"
SYNTHETIC_LARGE = "synthetic_large"
Int3 = tuple[int, int, int]


# --------------------------------------------------------------------------- held-out rules


@dataclass(frozen=True)
class HeldOut:
    """Held-out data: whole datasets (``"chaos_mr"``) and single targets
    (``"openkbp_ct:larynx"``, or ``"*:liver"`` for a target name in every dataset)."""

    rules: tuple[str, ...] = ()

    def dataset(self, name: str) -> bool:
        """Whether the whole dataset is held out."""
        return name in self.rules

    def target(self, dataset: str, target: str) -> bool:
        """Whether ``target`` of ``dataset`` is held out (also when the dataset is)."""
        return (
            self.dataset(dataset)
            or f"{dataset}:{target}" in self.rules
            or f"*:{target}" in self.rules
        )


def case_targets(ds: Dataset, case_id: str) -> dict[str, tuple[int, ...]]:
    """Every target a case offers: the dataset's named targets, or, for datasets with
    per-case labels, each labelled structure as its own target."""
    if ds.targets:
        return dict(ds.targets)
    return {name: (value,) for value, name in ds.labels_of(case_id).items() if value != 0}


def train_case_ids(ds: Dataset, split: str) -> list[str]:
    """The cases of ``split``, or every case when the dataset has no splits (``misc``)."""
    if ds.splits:
        return [c.case_id for c in ds.cases(split)]
    return [c.case_id for c in ds.cases()]


# --------------------------------------------------------------------------- cache


def _robust_scale(x: np.ndarray) -> np.ndarray:
    """``(x - median) / (p99.5 - p0.5)`` as float16 (the crop is normalised again later)."""
    lo, med, hi = np.percentile(x, [0.5, 50, 99.5])
    scale = max(float(hi - lo), 1e-6)
    return np.clip((x - med) / scale, -60000, 60000).astype(np.float16)


def _bbox(mask: np.ndarray) -> tuple[list[int], list[int]] | None:
    """[start], [stop] of a bool mask's bounding box, None when empty."""
    start, stop = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        if idx.size == 0:
            return None
        start.append(int(idx[0]))
        stop.append(int(idx[-1]) + 1)
    return start, stop


def _save_case(
    folder: Path,
    key: str,
    image: np.ndarray,
    label: np.ndarray,
    targets: dict[str, tuple[int, ...]],
    spacing: Sequence[float],
) -> dict[str, Any] | None:
    """Store the region around a case's targets; its index entry (None: no usable target)."""
    found: dict[str, dict[str, Any]] = {}
    for name, values in targets.items():
        mask = np.isin(label, values)
        n = int(mask.sum())
        box = _bbox(mask) if n >= MIN_TARGET_VOXELS else None
        if box is not None:
            found[name] = {"values": list(values), "start": box[0], "stop": box[1], "voxels": n}
    if not found:
        return None
    lo = np.min([t["start"] for t in found.values()], axis=0)
    hi = np.max([t["stop"] for t in found.values()], axis=0)
    grow = (hi - lo) + 8
    r0 = np.maximum(lo - grow, 0)
    r1 = np.minimum(hi + grow, np.asarray(label.shape))
    sl = tuple(slice(int(a), int(b)) for a, b in zip(r0, r1, strict=True))
    np.save(folder / f"{key}_img.npy", _robust_scale(image[sl]))
    np.save(folder / f"{key}_lab.npy", label[sl].astype(np.uint8))
    for t in found.values():
        t["start"] = [int(v - o) for v, o in zip(t["start"], r0, strict=True)]
        t["stop"] = [int(v - o) for v, o in zip(t["stop"], r0, strict=True)]
    return {
        "key": key,
        "shape": [int(b - a) for a, b in zip(r0, r1, strict=True)],
        "spacing": [float(s) for s in spacing],
        "targets": found,
    }


def _cache_dataset(root: Path, folder: Path, held: HeldOut, split: str) -> dict[str, Any]:
    """Cache one dataset's training cases; its index."""
    ds = open_dataset(root)
    cases = []
    for case_id in train_case_ids(ds, split):
        case = ds.case(case_id)
        if case.label_path is None:
            continue
        targets = {
            n: v for n, v in case_targets(ds, case_id).items() if not held.target(ds.name, n)
        }
        if not targets:
            continue
        image = ds.load_image(case)
        label = load_label(case.label_path, like=image).array
        if label.max() > 255:
            raise DatasetError(f"label values above 255 in {case_id}", path=case.label_path)
        entry = _save_case(folder, case_id, image.array, label, targets, image.spacing)
        if entry is not None:
            cases.append(entry)
    per_case = not ds.targets
    return {"name": ds.name, "root": str(root), "per_case_targets": per_case, "cases": cases}


def _cache_synthetic(
    folder: Path,
    count: int,
    seed: int,
    large: bool = False,
    organ_only: bool = False,
    vessels: bool = False,
) -> dict[str, Any]:
    """Generate and cache ``count`` procedural volumes (seeded: volume i from [seed, i], a
    large one from [seed, 1, i]) as the dataset ``synthetic`` or ``synthetic_large``; every
    object is a target, or with ``organ_only`` only a large volume's organ (label 1; the
    other objects stay in the label map as context, as held-out targets do); ``vessels``:
    a large volume's organ holds tubes of its own label."""
    cases = []
    for i in range(count):
        if large:
            vol = make_large_synthetic(np.random.default_rng([seed, 1, i]), vessels=vessels)
        else:
            vol = make_synthetic(np.random.default_rng([seed, i]))
        last = 1 if organ_only else int(vol.label.max())
        targets: dict[str, tuple[int, ...]] = {f"object_{v}": (v,) for v in range(1, last + 1)}
        entry = _save_case(folder, f"synth_{i:04d}", vol.image, vol.label, targets, vol.spacing)
        if entry is not None:
            cases.append(entry)
    name = SYNTHETIC_LARGE if large else SYNTHETIC
    return {"name": name, "root": "", "per_case_targets": True, "cases": cases}


def cache_key(
    roots: Sequence[str],
    held: HeldOut,
    split: str,
    synthetic: int,
    seed: int,
    large_synthetic: int = 0,
    organ_only: bool = False,
    vessels: bool = False,
) -> str:
    """Short hash naming a cache built from these settings (``large_synthetic``, and
    ``organ_only`` and ``vessels`` with it, count only when set, so caches built before
    them keep their names)."""
    parts: list[Any] = [
        CACHE_VERSION,
        [str(Path(r).expanduser().resolve()) for r in roots],
        list(held.rules),
        split,
        synthetic,
        seed,
    ]
    if large_synthetic:
        parts.append(large_synthetic)
        if organ_only:
            parts.append("organ only")
        if vessels:
            parts.append("organ vessels")
    text = json.dumps(parts)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def build_cache(
    roots: Sequence[str | Path],
    cache_dir: str | Path,
    *,
    held_out: HeldOut,
    split: str = "train",
    synthetic: int = 0,
    seed: int = 0,
    large_synthetic: int = 0,
    organ_only: bool = False,
    organ_vessels: bool = False,
) -> Path:
    """Build (or find) the cache of the training cases of ``roots``; returns its index.json.

    Datasets held out as a whole are skipped; held-out targets are never stored as
    targets (their voxels stay in the label map as unnamed values). Re-running with the
    same settings reuses the cache. ``synthetic`` and ``large_synthetic`` procedural
    volumes are added as the datasets ``synthetic`` and ``synthetic_large`` (with
    ``organ_only``, a large volume's organ is its only target; with ``organ_vessels`` it
    holds tubes of its own label).
    """
    key = cache_key(
        [str(r) for r in roots],
        held_out,
        split,
        synthetic,
        seed,
        large_synthetic,
        organ_only,
        organ_vessels,
    )
    top = Path(cache_dir).expanduser() / key
    index = top / "index.json"
    if index.is_file():
        return index
    datasets = []
    for root in roots:
        name = open_dataset(root).name
        if held_out.dataset(name):
            continue
        t0 = time.perf_counter()
        folder = top / name
        folder.mkdir(parents=True, exist_ok=True)
        datasets.append(_cache_dataset(Path(root).expanduser(), folder, held_out, split))
        log.info(
            "cached %s: %d cases in %.0f s",
            name,
            len(datasets[-1]["cases"]),
            time.perf_counter() - t0,
        )
    if synthetic > 0:
        (top / SYNTHETIC).mkdir(parents=True, exist_ok=True)
        datasets.append(_cache_synthetic(top / SYNTHETIC, synthetic, seed))
    if large_synthetic > 0:
        (top / SYNTHETIC_LARGE).mkdir(parents=True, exist_ok=True)
        datasets.append(
            _cache_synthetic(
                top / SYNTHETIC_LARGE, large_synthetic, seed, True, organ_only, organ_vessels
            )
        )
    text = json.dumps({"version": CACHE_VERSION, "datasets": datasets})
    atomic_write(index, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return index


# --------------------------------------------------------------------------- sampling


@dataclass(frozen=True)
class SamplerConfig:
    """Prompt and augmentation probabilities of the sampler (module docstring)."""

    grid: Int3 = (48, 48, 32)
    p_box: float = 0.45
    p_roi_box: float = 0.15
    p_slice_box: float = 0.0
    """Share of box samples whose box is the middle slice's (``slice_box``)."""
    slice_box_encoding: bool = False
    """A ``slice_box`` sample's box channel says it was drawn on its middle slice
    (:func:`.prompts.slice_box_map`); False: the cuboid, as a 3D box (up to the
    twenty-second schedule)."""
    p_click_roi: float = 0.0
    """Share of points samples cropped as a session crops around a first click
    (``click_roi``)."""
    p_loose_box: float = 0.0
    """Share of ``box`` samples whose box is drawn loosely (module docstring)."""
    loose_box_slack: float = 0.3
    """The most a loose box's side moves out, as a share of the box's size."""
    box_min_extent: tuple[int, int, int] | None = None
    """The least extent (voxels per axis) of a ``box`` or ``slice_box`` crop, widened about
    its centre as :func:`mecca.interaction.clicks.box_prompt` widens a box's ROI
    (``BOX_MIN_EXTENT``); None: the margin alone (the schedules up to the ninth)."""
    p_init: float = 0.1
    """Share of points-mode samples that start from a degraded truth (``init_prob``)."""
    p_component: float = 0.15
    p_rotate: float = 0.3
    max_degrees: float = 15.0
    dataset_weights: dict[str, float] = field(default_factory=dict)
    """Relative weight per dataset name (default 1)."""


@dataclass(frozen=True, eq=False)
class Sample:
    """One training crop on the grid, with its first prompt.

    Attributes:
        image: float32 grid, normalised.
        target: float32 grid in [0, 1], the soft truth.
        prev: float32 grid, the previous-probability channel of the first round.
        fg, bg, box: float32 grid prompt channels.
        dataset, target_name, mode: where it came from and the prompt mode.
    """

    image: np.ndarray
    target: np.ndarray
    prev: np.ndarray
    fg: np.ndarray
    bg: np.ndarray
    box: np.ndarray
    dataset: str
    target_name: str
    mode: str


class Sampler:
    """Draws training samples from a cache index (see the module docstring)."""

    def __init__(self, index: str | Path, config: SamplerConfig) -> None:
        self.config = config
        self.top = Path(index).parent
        data = json.loads(Path(index).read_text(encoding="utf-8"))
        self.datasets = [d for d in data["datasets"] if d["cases"]]
        if not self.datasets:
            raise ConfigError("the training cache holds no case", path=index)
        w = np.asarray([config.dataset_weights.get(d["name"], 1.0) for d in self.datasets])
        self.weights = w / w.sum()
        self._by_target: list[dict[str, list[int]]] = []
        for d in self.datasets:
            table: dict[str, list[int]] = {}
            for i, c in enumerate(d["cases"]):
                for name in c["targets"]:
                    table.setdefault(name, []).append(i)
            self._by_target.append(table)

    def summary(self) -> dict[str, Any]:
        """Cases and targets per dataset, and the dataset weights."""
        return {
            d["name"]: {
                "cases": len(d["cases"]),
                "targets": sorted(t)[:12],
                "n_targets": len(t),
                "weight": round(float(w), 3),
            }
            for d, t, w in zip(self.datasets, self._by_target, self.weights, strict=True)
        }

    def _pick(
        self, rng: np.random.Generator, dataset: str | None = None
    ) -> tuple[dict[str, Any], dict[str, Any], str]:
        if dataset is None:
            di = int(rng.choice(len(self.datasets), p=self.weights))
        else:
            names = [d["name"] for d in self.datasets]
            if dataset not in names:
                raise ConfigError(f"no dataset {dataset!r} in the training cache: {names}")
            di = names.index(dataset)
        d = self.datasets[di]
        if d["per_case_targets"]:
            case = d["cases"][int(rng.integers(len(d["cases"])))]
            name = str(rng.choice(sorted(case["targets"])))
        else:
            names = sorted(self._by_target[di])
            name = str(rng.choice(names))
            cands = self._by_target[di][name]
            case = d["cases"][cands[int(rng.integers(len(cands)))]]
        return d, case, name

    def sample(self, rng: np.random.Generator, grid: Int3 | None = None) -> Sample:
        """One sample on ``grid`` (default the config's); retries when the target
        vanishes from the crop."""
        for _ in range(20):
            d, case, name = self._pick(rng)
            out = self._make(d, case, name, rng, grid or self.config.grid)
            if out is not None:
                return out
        raise InputError("could not draw a training crop with the target in it (20 tries)")

    def first_click_sample(
        self, rng: np.random.Generator, dataset: str | None = None, grid: Int3 | None = None
    ) -> Sample:
        """A ``first_click`` sample (module docstring) of ``dataset``, or of a dataset drawn
        by weight when None: one foreground click, the crop a session makes around it."""
        for _ in range(20):
            d, case, name = self._pick(rng, dataset)
            out = self._make(d, case, name, rng, grid or self.config.grid, first_click=True)
            if out is not None:
                return out
        raise InputError("could not draw a first-click crop with the target in it (20 tries)")

    def _make(
        self,
        d: dict[str, Any],
        case: dict[str, Any],
        name: str,
        rng: np.random.Generator,
        grid: Int3,
        first_click: bool = False,
    ) -> Sample | None:
        cfg = self.config
        folder = self.top / d["name"]
        img = np.load(folder / f"{case['key']}_img.npy", mmap_mode="r")
        lab: np.ndarray = np.load(folder / f"{case['key']}_lab.npy", mmap_mode="r")
        t = case["targets"][name]
        start, stop = np.asarray(t["start"]), np.asarray(t["stop"])
        values: list[int] | None = t["values"]
        if rng.random() < cfg.p_component:
            sub = tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))
            comp = _one_component(np.isin(lab[sub], t["values"]), rng)
            if comp is not None:  # the target becomes one of its components
                full = np.zeros(lab.shape, bool)
                full[sub] = comp[0]
                lab, values = full, None
                start, stop = start + comp[1], start + comp[2]
        u = 1.0 if first_click else rng.random()
        mode = "box" if u < cfg.p_box else "roi_box" if u < cfg.p_box + cfg.p_roi_box else "points"
        if mode == "box" and rng.random() < cfg.p_slice_box:
            mode = "slice_box"
            sub = tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))
            found = middle_slice_box(
                lab[sub].astype(bool) if values is None else np.isin(lab[sub], values)
            )
            if found is None:
                return None
            start, stop = start + np.asarray(found[0]), start + np.asarray(found[1]) + 1
        slack = None
        if mode == "box" and cfg.p_loose_box > 0 and rng.random() < cfg.p_loose_box:
            slack = rng.uniform(0.0, cfg.loose_box_slack, size=6)
        if first_click or (
            mode == "points" and cfg.p_click_roi > 0 and rng.random() < cfg.p_click_roi
        ):
            around = _click_roi(lab, values, start, stop, case["spacing"], rng)
            if around is None:
                return None
            mode, (c0, c1) = "click_roi", around
        elif slack is not None:  # cropped around the loose box, as a session crops
            size = stop - start
            lo = start - np.rint(slack[:3] * size).astype(np.int64)
            hi = stop + np.rint(slack[3:] * size).astype(np.int64)
            c0, c1 = _crop_box(mode, lo, hi, np.asarray(lab.shape), rng)
        else:
            c0, c1 = _crop_box(mode, start, stop, np.asarray(lab.shape), rng)
        if mode in ("box", "slice_box") and cfg.box_min_extent is not None:
            crop = Box(tuple(c0.tolist()), tuple(c1.tolist()))
            wide = crop.at_least(cfg.box_min_extent, lab.shape)
            c0, c1 = np.asarray(wide.start), np.asarray(wide.stop)
        rotate = rng.random() < cfg.p_rotate
        angle = float(rng.uniform(-cfg.max_degrees, cfg.max_degrees)) if rotate else 0.0
        image, target = resample_crop(img, lab, c0, c1, grid, angle, values=values)
        image, target = _spatial(image, target, rng)
        gt = target > 0.5
        if gt.sum() < 3:
            return None
        image = normalise_image(augment_intensity(image, rng))
        if first_click:
            mode = "first_click"
        slab = drawn_slab(grid[2], int(c1[2] - c0[2]))
        prev, fg, bg, box = self._prompt(mode, gt, target, rng, slack, slab)
        return Sample(image, target, prev, fg, bg, box, d["name"], name, mode)

    def _prompt(
        self,
        mode: str,
        gt: np.ndarray,
        target: np.ndarray,
        rng: np.random.Generator,
        slack: np.ndarray | None = None,
        slab: int = 1,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        grid = gt.shape
        zeros = np.zeros(grid, np.float32)
        prev, fg, bg = zeros.copy(), zeros.copy(), zeros.copy()
        if mode == "roi_box":
            return prev, fg, bg, np.ones(grid, np.float32)
        if mode == "box":
            return prev, fg, bg, _jittered_box(gt, rng, slack)
        if mode == "slice_box":
            corners = middle_slice_box(gt)
            assert corners is not None  # the caller checked that gt is not empty
            if self.config.slice_box_encoding:
                return prev, fg, bg, slice_box_map(grid, corners[0], corners[1], slab)
            return prev, fg, bg, box_map(grid, corners[0], corners[1])
        if mode == "first_click":
            add_clicks(fg, bg, initial_points(gt, rng, 1, 0))
            return prev, fg, bg, zeros
        if rng.random() < self.config.p_init:
            prev = degraded_truth(target, rng)
            clicks = error_clicks(prev > 0.5, gt, rng) or initial_points(gt, rng, 1, 0)
        else:
            n_fg = int(rng.choice([1, 1, 2, 3]))
            n_bg = int(rng.choice([0, 0, 0, 1, 2]))
            clicks = initial_points(gt, rng, n_fg, n_bg)
        add_clicks(fg, bg, clicks)
        return prev, fg, bg, zeros


def add_clicks(fg: np.ndarray, bg: np.ndarray, clicks: Sequence[Click]) -> None:
    """Add foreground / background clicks to the two maps (in place)."""
    pos_fg = [c.position for c in clicks if c.kind is FG]
    pos_bg = [c.position for c in clicks if c.kind is BG]
    if pos_fg:
        add_points(fg, pos_fg)
    if pos_bg:
        add_points(bg, pos_bg)


def _one_component(
    mask: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """One random sizeable 26-connected component of ``mask``: (its mask, start, stop), or
    None when there are fewer than two sizeable ones."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if n < 2:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    ok = np.flatnonzero(sizes >= max(MIN_TARGET_VOXELS, 0.1 * sizes.max()))
    if len(ok) < 2:
        return None
    pick = int(rng.choice(ok))
    box = ndimage.find_objects(labels)[pick]
    assert box is not None
    start = np.array([sl.start for sl in box])
    stop = np.array([sl.stop for sl in box])
    return labels == pick + 1, start, stop


def _click_roi(
    lab: np.ndarray,
    values: Sequence[int] | None,
    start: np.ndarray,
    stop: np.ndarray,
    spacing: Sequence[float],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The crop [c0, c1) a session makes around a first click (the click plus a margin in
    mm, ``mecca.session``): a random voxel of the target plus 20-60 mm per side
    (log-uniform), so that a large object fills the crop and a small one sits inside it."""
    sub = tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))
    inside = lab[sub].astype(bool) if values is None else np.isin(lab[sub], values)
    idx = np.flatnonzero(inside)
    if idx.size == 0:
        return None
    voxel = np.array(np.unravel_index(int(idx[rng.integers(idx.size)]), inside.shape)) + start
    margin_mm = float(np.exp(rng.uniform(np.log(20.0), np.log(60.0))))
    margin = np.ceil(margin_mm / np.asarray(spacing, np.float64)).astype(np.int64)
    shape = np.asarray(lab.shape)
    c0 = np.clip(voxel - margin, 0, shape - 1)
    return c0, np.clip(voxel + margin + 1, c0 + 1, shape)


def _crop_box(
    mode: str, start: np.ndarray, stop: np.ndarray, shape: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Integer crop [c0, c1) in region voxels for a prompt mode, inside ``shape``."""
    size = (stop - start).astype(np.float64)
    if mode == "box":
        frac = np.exp(rng.uniform(np.log(0.02), np.log(0.6), size=6))
        grow = np.maximum(np.ceil(frac * np.concatenate([size, size])), 1).astype(np.int64)
        c0, c1 = start - grow[:3], stop + grow[3:]
    elif mode == "slice_box":  # the cvpr25 protocol's ROI: 25 % per side, at least 1
        grow = np.maximum(np.ceil(0.25 * np.concatenate([size, size])), 1).astype(np.int64)
        c0, c1 = start - grow[:3], stop + grow[3:]
    elif mode == "roi_box":
        grow = rng.integers(1, 12, size=6)
        c0, c1 = start - grow[:3], stop + grow[3:]
    else:
        scale = np.exp(rng.uniform(np.log(0.5), np.log(3.0))) * rng.uniform(0.8, 1.25, size=3)
        extent = np.maximum(size * scale, 12.0)
        centre = (start + stop) / 2 + rng.uniform(-0.2, 0.2, size=3) * size
        c0 = np.floor(centre - extent / 2).astype(np.int64)
        c1 = np.ceil(centre + extent / 2).astype(np.int64)
    c0 = np.clip(c0, 0, shape - 1)
    c1 = np.clip(c1, c0 + 1, shape)
    return c0, c1


def resample_crop(
    image: np.ndarray,
    label: np.ndarray,
    c0: np.ndarray,
    c1: np.ndarray,
    grid: Int3,
    degrees: float = 0.0,
    *,
    values: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Image and soft label of the box [c0, c1) on ``grid`` (float32 both); the label is
    ``isin(label, values)``, or ``label`` itself (0/1) when ``values`` is None.

    Without rotation this is :func:`mecca.data.roi.resample_box` (trilinear,
    ``align_corners=False``); with one, the same grid positions turned by ``degrees``
    about the box centre in the (i, j) plane, sampled trilinearly with edge values
    replicated (``grid_sample``).
    """
    if degrees != 0.0:
        return _rotated_crop(image, label, c0, c1, grid, degrees, values)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(c0, c1, strict=True))
    pair = np.stack([np.asarray(image[sl], np.float32), _binary(label[sl], values)])
    t = torch.from_numpy(pair)[None]
    with torch.no_grad():
        out = F.interpolate(t, size=grid, mode="trilinear", align_corners=False)[0].numpy()
    return np.ascontiguousarray(out[0]), np.clip(out[1], 0.0, 1.0)


def _binary(label: np.ndarray, values: Sequence[int] | None) -> np.ndarray:
    """Float32 0/1 target of a label slice."""
    if values is None:
        return np.asarray(label, np.float32)
    return np.isin(label, values).astype(np.float32)


def _rotated_crop(
    image: np.ndarray,
    label: np.ndarray,
    c0: np.ndarray,
    c1: np.ndarray,
    grid: Int3,
    degrees: float,
    values: Sequence[int] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The rotated variant of :func:`resample_crop` (reads a box wide enough for it)."""
    shape = np.asarray(label.shape)
    size = (c1 - c0).astype(np.float64)
    reach = np.ceil(0.5 * size[[1, 0]] * abs(np.sin(np.radians(degrees)))).astype(np.int64)
    pad = np.array([reach[0], reach[1], 0]) + 1
    r0, r1 = np.maximum(c0 - pad, 0), np.minimum(c1 + pad, shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(r0, r1, strict=True))
    pair = np.stack([np.asarray(image[sl], np.float32), _binary(label[sl], values)])
    axes = [c0[a] + (np.arange(grid[a]) + 0.5) * size[a] / grid[a] - 0.5 for a in range(3)]
    pi, pj, pk = np.meshgrid(*axes, indexing="ij")
    centre = (c0 + c1 - 1) / 2.0
    th = np.radians(degrees)
    di, dj = pi - centre[0], pj - centre[1]
    qi = centre[0] + np.cos(th) * di - np.sin(th) * dj - r0[0]
    qj = centre[1] + np.sin(th) * di + np.cos(th) * dj - r0[1]
    qk = pk - r0[2]
    n = pair.shape[1:]
    norm = [(2 * q + 1) / m - 1 for q, m in zip((qi, qj, qk), n, strict=True)]
    coords = np.stack([norm[2], norm[1], norm[0]], axis=-1).astype(np.float32)  # x=k, y=j, z=i
    with torch.no_grad():
        out = F.grid_sample(
            torch.from_numpy(pair)[None],
            torch.from_numpy(coords)[None],
            mode="bilinear",
            padding_mode="border",
            align_corners=False,
        )[0].numpy()
    return np.ascontiguousarray(out[0]), np.clip(out[1], 0.0, 1.0)


def _spatial(
    image: np.ndarray, target: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random flips of each axis and a random multiple of 90 degrees in (i, j) (when the
    grid is square there)."""
    flips = tuple(a for a in range(3) if rng.random() < 0.5)
    if flips:
        image, target = np.flip(image, flips), np.flip(target, flips)
    if image.shape[0] == image.shape[1]:
        k = int(rng.integers(4))
        image, target = np.rot90(image, k, (0, 1)), np.rot90(target, k, (0, 1))
    return np.ascontiguousarray(image), np.ascontiguousarray(target)


def augment_intensity(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Contrast inversion, gamma, bias field, blur or coarser slices, noise (float32)."""
    x = image.astype(np.float32, copy=True)
    lo, hi = np.percentile(x, [0.5, 99.5])
    x = (np.clip(x, lo, hi) - lo) / max(float(hi - lo), 1e-6)  # [0, 1]
    if rng.random() < 0.15:
        x = 1.0 - x
    if rng.random() < 0.3:
        x = x ** np.float32(np.exp(rng.uniform(-0.7, 0.7)))
    shape = (int(x.shape[0]), int(x.shape[1]), int(x.shape[2]))
    if rng.random() < 0.3:
        x = (x + 0.1) * np.exp(np.float32(rng.uniform(0.1, 0.4)) * smooth_field(shape, 16, rng))
    u = rng.random()
    if u < 0.2:
        x = ndimage.gaussian_filter(x, rng.uniform(0.3, 1.2, size=3))
    elif u < 0.35:
        x = _coarser(x, int(rng.integers(3)), int(rng.integers(2, 4)))
    if rng.random() < 0.35:
        x = x + rng.standard_normal(x.shape).astype(np.float32) * np.float32(
            rng.uniform(0.01, 0.12)
        )
    return x.astype(np.float32)


def _coarser(x: np.ndarray, axis: int, factor: int) -> np.ndarray:
    """Average ``factor`` neighbouring slices along ``axis`` and interpolate back (a
    thicker-slice acquisition)."""
    t = torch.from_numpy(np.ascontiguousarray(x))[None, None]
    kernel = [1, 1, 1]
    kernel[axis] = factor
    with torch.no_grad():
        low = F.avg_pool3d(t, kernel, kernel, ceil_mode=True)
        back = F.interpolate(low, size=x.shape, mode="trilinear", align_corners=False)
    return back[0, 0].numpy()


def _jittered_box(
    gt: np.ndarray, rng: np.random.Generator, slack: np.ndarray | None = None
) -> np.ndarray:
    """The box channel of a person's box: the truth's box on the grid, each side moved
    by a normal draw of 4 % of the box size (at most 10 %), and out by ``slack`` (6
    shares of the size: the low then the high sides) for a loose box."""
    box = _bbox(gt)
    assert box is not None
    start, stop = np.asarray(box[0]), np.asarray(box[1]) - 1
    size = stop - start + 1
    shift = np.clip(rng.normal(0, 0.04, size=6), -0.1, 0.1) * np.concatenate([size, size])
    if slack is not None:
        shift += np.concatenate([-slack[:3], slack[3:]]) * np.concatenate([size, size])
    a = np.rint(start + shift[:3]).astype(np.int64)
    b = np.rint(stop + shift[3:]).astype(np.int64)
    return box_map(gt.shape, a, np.maximum(a, b))


def degraded_truth(target: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A stand-in for an initial segmenter's probability: the soft truth shifted by up to
    3 voxels, blurred, with smooth errors added (float32 in [0, 1])."""
    shift = rng.integers(-3, 4, size=3)
    out = np.roll(target, tuple(int(s) for s in shift), axis=(0, 1, 2))
    out = ndimage.gaussian_filter(out, rng.uniform(0.5, 2.5))
    shape = (int(out.shape[0]), int(out.shape[1]), int(out.shape[2]))
    out = out + np.float32(rng.uniform(0.1, 0.5)) * smooth_field(shape, 8, rng)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
