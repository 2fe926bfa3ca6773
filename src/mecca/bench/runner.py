"""``mecca benchmark``: every method through one simulated-user protocol on one split.

For each case, the ROI (ground-truth box + seeded 1-11 voxel margin) and the user's random
generator are derived from ``(seed, case index)`` only, so every method sees the same box
and a user who behaves identically given the same masks; a rerun with the same seed
reproduces every number. Metrics are measured on the image's own grid.

Protocols built so far:

* ``mecca`` (MECCA Tables 1-2): p = 0.5 start, 25 edge points at step 1 then 5 per step.
  Methods that take fg/bg clicks get each edge point as a fg/bg pair across the boundary
  (``clicks.edge_click_to_fg_bg``); NoC counts the edge points.
* ``mecca_guided``: the ``mecca`` protocol with MECCA's interaction guide (the ablation of
  its Table 5): from step 2 on the user clicks only inside the 5 advice regions of the
  previous step (:func:`mecca.episode.run_episode`, ``guided``); methods without a
  confidence map give no advice, so for them it equals ``mecca``.
* ``cvpr25``: the CVPR 2025 challenge's protocol as the organisers run it
  (:mod:`mecca.bench.cvpr25`): the middle-slice box and a box-only prediction, then one
  click per step at their EDT maximum of the largest error component; DSC, NSD@2mm and
  their AUCs (``cvpr25`` in each case and method summary). ``box=False`` (``--no-box``)
  starts without the box, as they do for some structures. ``steps`` is the number of
  click steps (the challenge's 5 by default). Proposal methods get no proposals (the
  challenge has none).
* Methods that take only edge points (mecca, edge_itermrl) are refused by every protocol
  whose user gives only fg/bg clicks (``cvpr25``, ``itermrl``, ``itermrl_random``,
  ``scribble``: :data:`FG_BG_USERS`), rather than scored for clicks they never got.

* ``itermrl`` (IteR-MRL Tables 2-3): every method starts from the probability map of an
  initial segmenter (``initial``: a trained ``pnet`` run or bundle, or any supervised
  baseline), computed on that segmenter's own grid for the case's ROI and resampled to
  each method's grid (:func:`mecca.episode.initial_prob_on_grid`); then 5
  fg/bg clicks per step at the centres of the largest errors (``error_centre`` user).
  Non-interactive segmenters (pnet, unet) ignore the initial map.
* ``scribble`` (the TTA paper's user, Sambaturu et al. 2021): one stroke per step along
  the largest error, in one axial slice, given as fg/bg clicks on its voxels
  (:class:`mecca.interaction.users.ScribbleUser`); clicks count stroke voxels.
* Methods that offer proposals (``partial``) get, in every protocol and step, K proposals
  of which the simulated user accepts the one closest to the ground truth, unless it
  would lower the current mask's Dice (:func:`mecca.episode.accept_closest`), before the
  protocol's clicks correct it; an accepted proposal counts as one click (interaction) in
  ``clicks`` and NoC.
* ``itermrl_random``, ``itermrl_none``: the interaction-quality ablation of IteR-MRL
  Table 6 on the same start: 5 clicks per step at random voxels (labelled by the ground
  truth), or no clicks at all (steps refine on the initial map alone).

Outputs in ``--out``: ``results.json`` (the settings, ``weights`` among them: the
``--weights`` pairs, empty for the shipped models; per method the schema of
:func:`summarise`; ``paired``: every method's final-Dice difference to the first one,
:mod:`mecca.bench.stats`), ``results.csv``
(one row per method, case and step), ``report.md`` (Dice and ASSD per step in the
layout of the MECCA paper's Tables 1-2, NoC, misunderstanding rate, seconds per step, the
paired differences to the first method),
``dice_vs_clicks.png`` and ``montage.png`` (the split's first case, every method's final
mask; :mod:`mecca.bench.plots`).

Every finished case is also written to ``--out/cases/NNNN.json`` (and the montage case's
masks to ``cases/montage.npz``); ``resume=True`` (``--resume``) keeps the cases already
there whose settings match (data, split, target, protocol, steps, seed, initial, weights,
``cvpr25``'s box and recrop; every requested method present) and runs only the others,
so an interrupted run, or one grown with a larger ``--max-cases``, loses no finished case.
Resuming assumes the same shipped models as the first run.

``jobs > 1`` runs cases in that many worker processes (spawned, each loading the methods
once and using ``max(1, cpus // jobs)`` torch threads). The numbers do not depend on it;
the seconds do (workers share the CPU), so time methods with ``jobs=1``.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mecca import methods, metrics
from mecca.bench import cvpr25, plots, stats
from mecca.bench.protocols import MONTAGE_CASE, PROTOCOLS, BenchSettings
from mecca.bench.report import finite_or_none, summarise, write_results
from mecca.data.datasets import Dataset, open_dataset
from mecca.data.roi import random_margin_box
from mecca.episode import initial_prob_on_grid, run_episode
from mecca.errors import ConfigError, OverwriteError
from mecca.interaction.users import make_user
from mecca.interface import InteractiveMethod, Segmenter, grid_of
from mecca.io import atomic_write, load
from mecca.methods.supervised.bundle import load_supervised

log = logging.getLogger(__name__)


def run_case(
    settings: BenchSettings,
    method: InteractiveMethod,
    index: int,
    image: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    *,
    keep_mask: bool = False,
    initial: Segmenter | None = None,
) -> tuple[dict[str, Any], np.ndarray | None]:
    """One method on one case: per-step metrics, clicks and timings (and, with
    ``keep_mask``, the final mask). ``initial``: the protocol's initial segmenter."""
    spec = PROTOCOLS[settings.protocol]
    rng = np.random.default_rng([settings.seed, index])
    if spec.get("cvpr25"):  # the organisers' own loop (mecca.bench.cvpr25)
        return cvpr25.run_case(
            method,
            image,
            gt,
            spacing,
            rng=rng,
            use_box=settings.box,
            clicks=settings.steps,
            keep_mask=keep_mask,
            recrop=settings.recrop,
        )
    user = make_user(spec["user"], **spec["options"])
    box = random_margin_box(gt, rng)
    grid = grid_of(method, box.shape)
    init_prob = None if initial is None else initial_prob_on_grid(initial, image, box, grid)
    record = run_episode(
        method,
        image,
        gt,
        user,
        rng=rng,
        steps=settings.steps,
        box=box,
        grid=grid,
        init_prob=init_prob,
        keep_masks=True,
        guided=bool(spec.get("guided")),
    )
    steps = []
    for s in record.steps:
        assert s.mask is not None
        m = metrics.evaluate(s.mask, gt, spacing)
        steps.append(
            {
                "dice": 100.0 * float(m["dice"]),
                "assd_vox": finite_or_none(float(m["assd_vox"])),
                "assd_mm": finite_or_none(float(m["assd_mm"])),
                "hd95_vox": finite_or_none(float(m["hd95_vox"])),
                "hd95_mm": finite_or_none(float(m["hd95_mm"])),
                "clicks": len(s.clicks) + s.proposals,
                "proposals": s.proposals,
                "misunderstanding": s.misunderstanding,
                "method_seconds": s.method_seconds,
                "step_seconds": s.total_seconds,
                "honoured_clicks": (
                    100.0 * s.honoured[0] / s.honoured[1] if s.honoured[1] else None
                ),
            }
        )
    result = {
        "box": [list(record.box.start), list(record.box.stop)],
        "initial_dice": 100.0 * record.initial_dice,
        "steps": steps,
    }
    return result, record.steps[-1].mask if keep_mask else None


def split_cases(ds: Dataset, split: str) -> list[Any]:
    """The cases of ``split``; ``"all"`` takes every case (a cross-domain test set)."""
    return ds.cases(None if split == "all" else split)


def benchmark_cases(ds: Dataset, settings: BenchSettings) -> tuple[list[Any], list[str]]:
    """The split's cases whose label holds the target, the first ``max_cases`` of them, and
    the ids of the cases passed over for lacking it (a dataset whose cases were not all
    contoured for every structure, as OpenKBP's larynx and esophagus)."""
    kept: list[Any] = []
    skipped: list[str] = []
    for case in split_cases(ds, settings.split):
        if settings.max_cases is not None and len(kept) >= settings.max_cases:
            break
        values = ds.resolve_target(settings.target, case=case)
        if case.label_path is not None:
            if not np.isin(load(case.label_path, dtype=None).array, values).any():
                skipped.append(case.case_id)
                continue
        kept.append(case)
    return kept, skipped


_WORKER: dict[str, Any] = {}
"""What a worker process (or the main one, for ``jobs=1``) loaded once: settings,
dataset, target values, cases and built methods."""


def _init_worker(
    settings: BenchSettings, threads: int | None = None, case_ids: Sequence[str] | None = None
) -> None:
    if threads is not None:
        torch.set_num_threads(threads)
    ds = open_dataset(settings.data)
    weights = dict(settings.weights)
    _WORKER.clear()
    _WORKER.update(
        settings=settings,
        dataset=ds,
        values=ds.resolve_target(settings.target),
        cases=(
            benchmark_cases(ds, settings)[0] if case_ids is None else [ds.case(c) for c in case_ids]
        ),
        methods={
            name: methods.build(name, weights.get(name), Path(settings.data).name)
            for name in settings.methods
        },
        initial=_initial_segmenter(settings),
    )


def _initial_segmenter(settings: BenchSettings) -> Segmenter | None:
    """The protocol's initial segmenter (a loaded supervised baseline), or None."""
    if not PROTOCOLS[settings.protocol].get("initial"):
        return None
    if settings.initial is None:
        raise ConfigError(
            f"protocol {settings.protocol!r} needs an initial segmenter",
            hint="give --initial: a trained pnet run folder or bundle",
        )
    return load_supervised(settings.initial)


FG_BG_USERS = frozenset({"error_centre", "random", "scribble", "distance"})
"""Simulated users whose clicks are FOREGROUND/BACKGROUND only: their protocols refuse
methods that take only edge points (they would be scored for clicks they never got)."""

CaseOutput = tuple[int, dict[str, dict[str, Any]], dict[str, np.ndarray] | None]
CASES = "cases"
"""Subfolder of ``--out`` holding each finished case (what ``resume`` reads)."""


def _recrop_setting(settings: BenchSettings) -> dict[str, str]:
    """``{"recrop": ...}`` for the ``cvpr25`` protocols (the only ones that re-crop), else {}."""
    return {"recrop": settings.recrop} if PROTOCOLS[settings.protocol].get("cvpr25") else {}


def _case_key(settings: BenchSettings) -> dict[str, Any]:
    """The settings a case's numbers depend on (not the methods list, jobs, max_cases)."""
    return {
        "data": str(Path(settings.data).resolve()),
        "split": settings.split,
        "target": settings.target,
        "protocol": settings.protocol,
        "steps": settings.steps,
        "seed": settings.seed,
        "initial": settings.initial,
        "weights": [list(w) for w in settings.weights],
        "box": settings.box,
        **_recrop_setting(settings),
    }


def _save_case(out: Path, settings: BenchSettings, case_id: str, output: CaseOutput) -> None:
    index, results, masks = output
    record = {"key": _case_key(settings), "case_id": case_id, "results": results}
    text = json.dumps(record, allow_nan=False)
    atomic_write(out / CASES / f"{index:04d}.json", lambda t: t.write_text(text, "utf-8"))
    if masks:
        names = np.array(list(masks))
        stacked = np.stack([np.asarray(m, bool) for m in masks.values()])
        atomic_write(
            out / CASES / "montage.npz",
            lambda t: np.savez_compressed(t, names=names, masks=stacked),
        )


def _saved_cases(
    out: Path, settings: BenchSettings, case_ids: list[str]
) -> tuple[dict[int, dict[str, dict[str, Any]]], dict[str, np.ndarray] | None]:
    """Finished cases in ``out/cases`` that match ``settings`` (and the montage masks)."""
    done: dict[int, dict[str, dict[str, Any]]] = {}
    key = _case_key(settings)
    for index, case_id in enumerate(case_ids):
        path = out / CASES / f"{index:04d}.json"
        if not path.is_file():
            continue
        record = json.loads(path.read_text("utf-8"))
        results = record.get("results", {})
        if record.get("key") == key and record.get("case_id") == case_id:
            if all(name in results for name in settings.methods):
                done[index] = {name: results[name] for name in settings.methods}
    montage = None
    path = out / CASES / "montage.npz"
    if MONTAGE_CASE in done and path.is_file():
        with np.load(path) as saved:
            stored = dict(zip(saved["names"].tolist(), saved["masks"], strict=True))
        montage = {name: stored[name] for name in settings.methods if name in stored}
    return done, montage


def _run_case_index(index: int) -> CaseOutput:
    """Every method on case ``index``: (index, method -> case result, montage masks)."""
    w = _WORKER
    volume, gt = w["dataset"].load_case(w["cases"][index], w["values"])
    results, masks = {}, {}
    for name, method in w["methods"].items():
        results[name], mask = run_case(
            w["settings"],
            method,
            index,
            volume.array,
            gt,
            volume.spacing,
            keep_mask=index == MONTAGE_CASE,
            initial=w["initial"],
        )
        if mask is not None:
            masks[name] = mask
    return index, results, masks or None


def _case_outputs(
    settings: BenchSettings, indices: list[int], case_ids: Sequence[str]
) -> Iterator[CaseOutput]:
    """Outputs of the cases ``indices`` (of ``case_ids``): in this process, or in
    ``settings.jobs`` workers."""
    if not indices:
        return
    if settings.jobs <= 1:
        _init_worker(settings, None, case_ids)
        for index in indices:
            yield _run_case_index(index)
        return
    threads = max(1, (os.cpu_count() or 1) // settings.jobs)
    with ProcessPoolExecutor(
        max_workers=settings.jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(settings, threads, list(case_ids)),
    ) as pool:
        yield from pool.map(_run_case_index, indices)


def run_benchmark(
    settings: BenchSettings,
    out: Path,
    *,
    force: bool = False,
    progress: bool = True,
    resume: bool = False,
) -> dict[str, Any]:
    """Run every method on every case of the split; write and return the results.
    ``resume``: keep the matching cases already in ``out/cases`` (module docstring)."""
    if settings.protocol not in PROTOCOLS:
        raise ConfigError(
            f"protocol {settings.protocol!r} is not available",
            hint=f"choose one of {', '.join(PROTOCOLS)}",
        )
    if settings.jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {settings.jobs}")
    out = Path(out)
    if (out / "results.json").exists() and not (force or resume):
        raise OverwriteError("results already there", path=out, hint="pass --force or --resume")
    ds = open_dataset(settings.data)
    values = ds.resolve_target(settings.target)
    cases, skipped = benchmark_cases(ds, settings)
    if not cases:
        raise ConfigError(
            f"no case of split {settings.split!r} holds the target",
            path=settings.data,
            hint="choose another --target or --split",
        )
    if skipped:
        log.warning("%d cases without the target passed over: %s", len(skipped), skipped)
    for name in settings.methods:  # fail early on an unknown name or a missing bundle
        built = methods.build(name, dict(settings.weights).get(name), Path(settings.data).name)
        if PROTOCOLS[settings.protocol]["user"] in FG_BG_USERS:
            # and on a method that cannot take the protocol's clicks
            cvpr25.check_method(name, built, settings.protocol)
    _initial_segmenter(settings)  # and on a missing initial segmenter
    case_ids = [c.case_id for c in cases]
    by_index, montage = _saved_cases(out, settings, case_ids) if resume else ({}, None)
    if by_index:
        log.info("resuming: %d of %d cases already in %s", len(by_index), len(cases), out)
    todo = [i for i in range(len(cases)) if i not in by_index]
    outputs = _case_outputs(settings, todo, case_ids)
    for output in tqdm(outputs, total=len(todo), disable=not progress, unit="case"):
        index, results, masks = output
        _save_case(out, settings, case_ids[index], output)
        by_index[index] = results
        montage = masks or montage
    report: dict[str, Any] = {
        "protocol": settings.protocol,
        "initial": settings.initial,
        "dataset": str(settings.data),
        "split": settings.split,
        "target": settings.target,
        "skipped_cases": skipped,  # without the target: not run
        "steps": settings.steps,
        "seed": settings.seed,
        "weights": [list(w) for w in settings.weights],
        **_recrop_setting(settings),
        "models": {  # the model each learned method ran (None: it has none)
            name: methods.model_for(
                name, dict(settings.weights).get(name), Path(settings.data).name
            )
            for name in settings.methods
        },
        "methods": {
            name: summarise({cases[i].case_id: by_index[i][name] for i in range(len(cases))})
            for name in settings.methods
        },
    }
    reference = settings.methods[0]
    report["paired"] = {
        "reference": reference,
        "step": settings.steps,
        "methods": stats.paired_against(report, reference),
    }
    write_results(report, out)
    if montage is not None:
        volume, gt = ds.load_case(cases[MONTAGE_CASE], values)
        case_id = cases[MONTAGE_CASE].case_id
        dice = {
            name: report["methods"][name]["cases"][case_id]["steps"][-1]["dice"] for name in montage
        }
        plots.plot_montage(volume.array, gt, montage, dice, out / "montage.png", title=case_id)
    return report
