from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch

from mecca.checkpoint import load_checkpoint, restore_rng, rng_state, save_checkpoint
from mecca.config import config_to_dict, load_config, parse_overrides
from mecca.errors import ConfigError, InputError
from mecca.runtime import dist_from_env, resolve_device


@dataclass(frozen=True)
class _Cfg:
    lr: float = 1e-4
    grid: tuple[int, int, int] = (55, 55, 30)
    mode: Literal["a", "b"] = "a"
    limit: int | None = None


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1\ngrid: [8, 8, 4]\n")
    cfg = load_config(_Cfg, path, parse_overrides(["mode=b", "limit=3"]))
    assert cfg == _Cfg(lr=1.0, grid=(8, 8, 4), mode="b", limit=3)
    assert isinstance(cfg.lr, float)
    assert config_to_dict(cfg)["grid"] == [8, 8, 4]


def test_exponent_floats_from_the_command_line_are_numbers():
    cfg = load_config(_Cfg, None, parse_overrides(["lr=1e-3"]))
    assert cfg.lr == 1e-3 and isinstance(cfg.lr, float)


@pytest.mark.parametrize(
    "values, match",
    [
        ({"lrr": 1}, "lrr"),
        ({"mode": "c"}, "mode"),
        ({"limit": "x"}, "limit"),
        ({"grid": 3}, "grid"),
        ({"lr": "fast"}, "lr must be a number"),
    ],
)
def test_bad_settings_are_refused_clearly(values, match):
    with pytest.raises(ConfigError, match=match):
        load_config(_Cfg, None, values)


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["lr"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(_Cfg, tmp_path / "none.yaml")


def test_checkpoint_round_trip_resumes_rng_exactly(tmp_path):
    rng = np.random.default_rng(3)
    rng.random(5)
    path = save_checkpoint(
        tmp_path / "ck.pt",
        {"config": {"lr": 1.0}, "rng": rng_state(rng), "w": torch.ones(2)},
        method="pnet",
    )
    data = load_checkpoint(path)
    assert data["mecca_version"] and torch.equal(data["w"], torch.ones(2))
    assert restore_rng(data["rng"]).random() == rng.random()
    assert not list(tmp_path.glob("*.tmp"))


def test_checkpoint_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(InputError, match="cannot read"):
        load_checkpoint(tmp_path / "bad.pt")


def test_device_and_dist_env(monkeypatch):
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ConfigError):
        resolve_device("tpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    info = dist_from_env()
    assert info.distributed and not info.is_main


def test_a_rank_ends_with_its_output_flushed_and_exit_code_0(tmp_path):
    """end_rank_process skips the interpreter's teardown (os._exit), so it flushes first:
    what the rank printed and logged reaches the pipe, and torchrun sees 0."""
    import subprocess
    import sys

    log = tmp_path / "rank.log"
    code = (
        "import logging\n"
        f"logging.basicConfig(filename={str(log)!r}, level=logging.INFO)\n"
        "logging.getLogger('x').info('logged')\n"
        "print('printed', end='')\n"
        "from mecca.runtime import end_rank_process\n"
        "end_rank_process()\n"
        "print('never')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "printed"
    assert "logged" in log.read_text()


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")), ids=lambda p: p.stem
)
def test_every_shipped_training_config_loads(path):
    """The files behind the shipped models' commands stay valid as settings change."""
    import yaml

    from mecca.methods.agents.config import TrainConfig
    from mecca.methods.partial.model import PartialConfig
    from mecca.methods.supervised.config import METHODS as SUPERVISED
    from mecca.methods.supervised.config import SupervisedConfig

    method = yaml.safe_load(path.read_text())["method"]
    if method == "partial":
        load_config(PartialConfig, path, drop=("method", "target", "crops_per_case"))
    elif method == "generalist":
        from mecca import methods

        config = methods.spec(method).config
        assert config is not None
        load_config(config, path, drop=("method",))
    elif method in SUPERVISED:
        load_config(SupervisedConfig, path)
    else:
        assert load_config(TrainConfig, path).resolved().method == method
