"""``mecca demo``: one volume, one method, a simulated user, Dice after every step."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mecca import methods
from mecca.bench.overlay import centre_slice, overlay_rgb, write_png
from mecca.data.datasets import open_dataset
from mecca.data.phantoms import make_phantom
from mecca.episode import EpisodeRecord, run_episode
from mecca.errors import DatasetError
from mecca.interaction.users import make_user
from mecca.interface import InteractiveMethod, takes_only_edge_points


@dataclass(frozen=True)
class DemoReport:
    """What the demo ran on and what each step scored."""

    source: str
    method: str
    user: str
    shape: tuple[int, int, int]
    episode: EpisodeRecord
    model: str | None = None
    """The model that ran (a learned method's bundle), None for the others."""


def _phantom_case(seed: int) -> tuple[str, np.ndarray, np.ndarray]:
    ph = make_phantom(rng=np.random.default_rng(seed), kind="mr")
    return f"MR phantom (seed {seed})", ph.image, ph.label == 1


def _dataset_case(
    data: Path, case_id: str | None, target: str | None
) -> tuple[str, np.ndarray, np.ndarray]:
    ds = open_dataset(data)
    cases = ds.cases("test") if case_id is None and "test" in ds.splits else ds.cases()
    if case_id is not None:
        cases = [c for c in cases if c.case_id == case_id] or cases
        if cases[0].case_id != case_id:
            raise DatasetError(f"no case {case_id!r}", path=data)
    values = ds.resolve_target(target)
    volume, mask = ds.load_case(cases[0], values)
    name = target or ds.default_target or "labels " + ",".join(str(v) for v in values)
    return f"{data.name}/{cases[0].case_id}  target {name}", volume.array, mask


def default_user(method: InteractiveMethod) -> str:
    """The simulated user a method was built for: edge points for those that take only edge
    points (MECCA, IteR-MRL trained with MECCA's user), else fg/bg clicks at error centres."""
    return "edge" if takes_only_edge_points(method.accepts) else "error_centre"


def run_demo(
    *,
    data: Path | None = None,
    case_id: str | None = None,
    target: str | None = None,
    method: str = methods.registry.DEFAULT_METHOD,
    model: str | None = None,
    user: str | None = None,
    steps: int = 5,
    seed: int = 0,
    overlays: Path | None = None,
) -> DemoReport:
    """Run one simulated episode and return its per-step record.

    With ``overlays`` a PNG per step (``step_1.png`` ...) is written there: the slice
    through the target's centre, prediction in red, true boundary in green, clicks yellow.
    """
    if data is None:
        source, image, gt = _phantom_case(seed)
    else:
        source, image, gt = _dataset_case(data, case_id, target)
    dataset = None if data is None else Path(data).name
    m = methods.build(method, model, dataset)
    user = user or default_user(m)
    rng = np.random.default_rng(seed)
    episode = run_episode(
        m,
        image,
        gt,
        make_user(user),
        rng=rng,
        steps=steps,
        keep_masks=overlays is not None,
    )
    if overlays is not None:
        k = centre_slice(gt)
        for s in episode.steps:
            assert s.mask is not None
            write_png(
                Path(overlays) / f"step_{s.step}.png", overlay_rgb(image, s.mask, gt, k, s.clicks)
            )
    shape = tuple(int(s) for s in image.shape)
    ran = methods.model_for(method, model, dataset)
    return DemoReport(source, method, user, shape, episode, ran)  # type: ignore[arg-type]


def format_table(report: DemoReport) -> str:
    """Plain-text per-step table: clicks so far, Dice (%), seconds of the step."""
    lines = [
        f"{report.source}  shape {report.shape}  method {report.method}"
        + ("" if report.model is None else f"  model {report.model}")
        + f"  user {report.user}",
        f"ROI {report.episode.box.start} -> {report.episode.box.stop}",
        f"{'step':>4}  {'clicks':>6}  {'Dice %':>7}  {'method s':>8}  {'step s':>7}",
        f"{0:>4}  {0:>6}  {100 * report.episode.initial_dice:>7.2f}",
    ]
    total = 0
    for s in report.episode.steps:
        total += len(s.clicks)
        lines.append(
            f"{s.step:>4}  {total:>6}  {100 * s.dice:>7.2f}  {s.method_seconds:>8.3f}"
            f"  {s.total_seconds:>7.3f}"
        )
    return "\n".join(lines)
