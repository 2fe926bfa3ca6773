"""One training run: its folder, its loop and its checkpoints, shared by every trainer.

A run folder holds ``config.yaml`` (every setting, resolved), ``log.jsonl`` (a ``start``
line per session, then the trainer's ``train`` lines and ``val`` lines), ``last.pt`` (every
``checkpoint_every`` steps, at the end and on Ctrl-C or SIGTERM) and, for a trainer that
validates, ``best.pt`` (best validation score). A checkpoint names its method and holds
the config, the trainer's own state (networks, optimisers), the numpy generator's state,
the step counter and the best score, so a resumed run continues exactly where an
uninterrupted one would be.

A folder holding a run is never overwritten: ``resume`` continues it from ``last.pt``, and
only the settings the trainer lists in ``resume_may_change`` may differ from its
``config.yaml`` (settings added to the config class since the run began take their
defaults). Under ``torchrun`` only the main process writes.

A trainer subclasses :class:`Trainer` (nnU-Net's hooks, Stable-Baselines3's callbacks) and
keeps only its own parts: :meth:`~Trainer.begin` (load the data; the start line's
fields), :meth:`~Trainer.train_step` (one step; its log fields),
:meth:`~Trainer.validate` (optional), and :meth:`~Trainer.state` /
:meth:`~Trainer.restore` (what its checkpoints add).
"""

from __future__ import annotations

import json
import logging
import platform
import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import yaml
from tqdm import tqdm

from mecca._version import __version__
from mecca.checkpoint import load_checkpoint, restore_rng, rng_state, save_checkpoint
from mecca.config import config_to_dict
from mecca.errors import ConfigError, OverwriteError
from mecca.io import atomic_write
from mecca.runtime import stop_on_signals

log = logging.getLogger(__name__)


def read_log(run: Path) -> list[dict[str, Any]]:
    """The records of a run's log.jsonl (none when it has no log)."""
    path = Path(run) / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def due(count: int, every: int | None) -> bool:
    """Whether something done every ``every`` steps (0 or None: never) is due at ``count``."""
    return every is not None and every > 0 and count % every == 0


def prepare_folder(out: Path, cfg: Any, *, resume: bool, may_change: Collection[str]) -> None:
    """Check ``out`` (a new run, or one to resume with the same settings) and write its
    ``config.yaml`` (``cfg`` is a config dataclass whose class builds with no arguments)."""
    cfg_path = out / "config.yaml"
    mine = config_to_dict(cfg)
    if cfg_path.exists() or (out / "last.pt").exists():
        if not resume:
            raise OverwriteError(
                "run folder already holds a run",
                path=out,
                hint="pass --resume to continue it, or choose another --out",
            )
        if cfg_path.exists():
            saved = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
            defaults = config_to_dict(type(cfg)())
            for key in set(mine) - set(saved):  # settings added since the run began
                saved[key] = defaults[key]
            diff = sorted(k for k in mine if k not in may_change and saved.get(k) != mine[k])
            if diff:
                raise ConfigError(
                    f"--resume with a different config (differs in {diff})",
                    path=cfg_path,
                    hint="resume with the saved config; only "
                    + ", ".join(repr(k) for k in sorted(may_change))
                    + " may change",
                )
    out.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(mine, sort_keys=False)
    atomic_write(cfg_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


class RunLog:
    """Appends JSON lines to ``log.jsonl`` (the main process only)."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")


@dataclass(frozen=True)
class Validation:
    """One validation: the score that picks ``best.pt`` and the ``val`` line's fields."""

    score: float
    record: dict[str, Any]


@contextmanager
def progress_bar(total: int, initial: int, enabled: bool, unit: str) -> Iterator[Any]:
    """A tqdm bar over the run's steps (none when ``enabled`` is false)."""
    bar = tqdm(total=total, initial=initial, disable=not enabled, unit=unit, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


class Trainer(ABC):
    """The skeleton of a training run; see the module docstring.

    Attributes:
        cfg: the run's (resolved) settings, a config dataclass with ``checkpoint_every``.
        out: the run folder.
        method: the registry name its checkpoints carry.
        step: steps (episodes, for the voxel agents) done so far.
        best: best validation score so far (-1 before the first).
        rng: the run's numpy generator (saved in every checkpoint).
    """

    unit: ClassVar[str] = "step"
    """What one step is called in log lines and checkpoints (the voxel agents: episode)."""
    bar_unit: ClassVar[str] = "step"
    """The progress bar's unit."""
    resume_may_change: ClassVar[frozenset[str]] = frozenset({"steps"})
    """Settings a resumed run may change."""
    log_seconds: ClassVar[bool] = True
    """Add the step's wall time (``seconds``) to each ``train`` line."""

    def __init__(
        self,
        cfg: Any,
        out: Path,
        *,
        method: str,
        resume: bool,
        progress: bool,
        rng: np.random.Generator,
        is_main: bool = True,
    ) -> None:
        self.cfg = cfg
        self.out = Path(out)
        self.method = method
        self.is_main = is_main
        self.progress = progress and is_main
        self.rng = rng
        self.step = 0
        self.best = -1.0
        if is_main:
            prepare_folder(self.out, cfg, resume=resume, may_change=self.resume_may_change)
        self.log = RunLog(self.out / "log.jsonl", is_main)

    # ------------------------------------------------------------------ hooks

    @property
    @abstractmethod
    def total(self) -> int:
        """Steps of the whole run."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """What this trainer's checkpoints hold besides the config, RNG and counters."""

    @abstractmethod
    def restore(self, data: dict[str, Any]) -> None:
        """Take back :meth:`state` from a checkpoint (called by :meth:`resume_from`)."""

    def begin(self) -> dict[str, Any]:
        """Load what the steps need; the ``start`` line's own fields."""
        return {}

    @abstractmethod
    def train_step(self) -> dict[str, Any] | None:
        """One step (``self.step`` is the number done before it); the ``train`` line's
        fields, or None to write no line for this step."""

    def validate(self) -> Validation | None:
        """A validation, when one is due after ``self.step`` steps; None otherwise."""
        return None

    def postfix(self, record: dict[str, Any]) -> dict[str, str]:
        """The progress bar's figures after a step that wrote ``record``."""
        return {}

    # ------------------------------------------------------------------ shared

    def checkpoint_to_resume(self, resume: bool) -> dict[str, Any] | None:
        """``last.pt`` of the run folder when resuming one that has it, else None."""
        last = self.out / "last.pt"
        return load_checkpoint(last) if resume and last.exists() else None

    def resume_from(self, data: dict[str, Any]) -> None:
        """Continue from a checkpoint: the trainer's state, the generator and counters."""
        self.restore(data)
        self.rng = restore_rng(data["rng"])
        self.step = int(data[self.unit])
        self.best = float(data.get("best", -1.0))
        log.info("resumed %s at %s %d", self.out, self.unit, self.step)

    def payload(self) -> dict[str, Any]:
        """Everything a checkpoint holds (the method name is added on saving)."""
        return {
            "config": config_to_dict(self.cfg),
            **self.state(),
            "rng": rng_state(self.rng),
            self.unit: self.step,
            "best": self.best,
        }

    def save(self, name: str = "last.pt") -> None:
        if self.is_main:
            save_checkpoint(self.out / name, self.payload(), method=self.method)

    def run(self) -> Path:
        """Train until :attr:`total` steps are done; returns the run folder."""
        started = self.begin()
        self.log.write(
            {
                "type": "start",
                self.unit: self.step,
                **started,
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "machine": platform.machine(),
                "mecca": __version__,
            }
        )
        try:
            with (
                stop_on_signals(),
                progress_bar(self.total, self.step, self.progress, self.bar_unit) as bar,
            ):
                while self.step < self.total:
                    t0 = time.perf_counter()
                    record = self.train_step()
                    self.step += 1
                    self._after_step(record, time.perf_counter() - t0, bar)
        except KeyboardInterrupt:
            log.warning("interrupted at %s %d: saving last.pt", self.unit, self.step)
            self.save("last.pt")
            raise
        self.save("last.pt")
        return self.out

    def _after_step(self, record: dict[str, Any] | None, seconds: float, bar: Any) -> None:
        if record is not None:
            timing = {"seconds": round(seconds, 3)} if self.log_seconds else {}
            self.log.write({"type": "train", self.unit: self.step, **record, **timing})
            bar.set_postfix(self.postfix(record))
        bar.update(1)
        if due(self.step, self.cfg.checkpoint_every):
            self.save("last.pt")
        if not self.is_main:
            return
        result = self.validate()
        if result is None:
            return
        self.log.write({"type": "val", self.unit: self.step, **result.record})
        log.info("%s %d: validation score %.4f", self.unit, self.step, result.score)
        if result.score > self.best:
            self.best = result.score
            self.save("best.pt")
