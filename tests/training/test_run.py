"""The run skeleton every trainer shares (mecca.training.run), on a trainer that only draws
random numbers: folder, log, checkpoints naming their method, exact resume, the resume
rule, best.pt, and the save on Ctrl-C."""

import json
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest
import yaml

from mecca.checkpoint import checkpoint_method, load_checkpoint
from mecca.errors import ConfigError, OverwriteError
from mecca.training.run import Trainer, Validation, due, read_log


@dataclass(frozen=True)
class _Cfg:
    steps: int = 3
    lr: float = 0.1
    checkpoint_every: int = 2
    val_every: int = 0


class _Draws(Trainer):
    """Each step draws one number from the run's generator and adds it up."""

    def __init__(self, cfg: _Cfg, out, *, resume: bool = False):
        rng = np.random.default_rng(0)
        super().__init__(cfg, out, method="draws", resume=resume, progress=False, rng=rng)
        self.sum = 0.0
        saved = self.checkpoint_to_resume(resume)
        if saved is not None:
            self.resume_from(saved)

    @property
    def total(self) -> int:
        return self.cfg.steps

    def state(self) -> dict[str, Any]:
        return {"sum": self.sum}

    def restore(self, data: dict[str, Any]) -> None:
        self.sum = float(data["sum"])

    def train_step(self) -> dict[str, Any]:
        x = float(self.rng.random())
        self.sum += x
        return {"x": x}

    def validate(self) -> Validation | None:
        if not due(self.step, self.cfg.val_every):
            return None
        return Validation(float(self.step % 3), {"score": self.step % 3})


def test_a_run_writes_its_folder_and_resumes_exactly(tmp_path):
    straight = _Draws(_Cfg(steps=5), tmp_path / "a").run()
    half = _Draws(_Cfg(steps=3), tmp_path / "b").run()
    _Draws(_Cfg(steps=5), half, resume=True).run()
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(half / "last.pt")
    assert checkpoint_method(a) == "draws" and a["step"] == b["step"] == 5
    assert a["sum"] == b["sum"] and a["rng"] == b["rng"]
    xs = [r["x"] for r in read_log(half) if r["type"] == "train"]
    assert xs == [r["x"] for r in read_log(straight) if r["type"] == "train"]
    assert [r["step"] for r in read_log(half) if r["type"] == "start"] == [0, 3]
    assert yaml.safe_load((half / "config.yaml").read_text())["steps"] == 5


def test_a_run_is_not_overwritten_and_resumes_only_with_its_settings(tmp_path):
    run = _Draws(_Cfg(), tmp_path / "r").run()
    with pytest.raises(OverwriteError, match="--resume"):
        _Draws(_Cfg(), run)
    with pytest.raises(ConfigError, match="lr"):
        _Draws(_Cfg(lr=0.2), run, resume=True)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    del saved["val_every"]  # as written before the setting existed: it takes its default
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    assert _Draws(_Cfg(steps=4), run, resume=True).run() == run


def test_validation_keeps_the_best_checkpoint(tmp_path):
    run = _Draws(_Cfg(steps=5, val_every=1), tmp_path / "v").run()
    scores = [r["score"] for r in read_log(run) if r["type"] == "val"]
    assert scores == [1, 2, 0, 1, 2]
    best = load_checkpoint(run / "best.pt")
    assert best["step"] == 2 and best["best"] == 2.0


def test_ctrl_c_saves_last_pt(tmp_path, monkeypatch):
    def interrupt(self):
        if self.step == 2:
            raise KeyboardInterrupt
        return {"x": 0.0}

    monkeypatch.setattr(_Draws, "train_step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        _Draws(replace(_Cfg(), steps=10, checkpoint_every=0), tmp_path / "c").run()
    assert load_checkpoint(tmp_path / "c" / "last.pt")["step"] == 2
    lines = (tmp_path / "c" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["start", "train", "train"]
