"""Self-describing checkpoints: weights, optimisers, RNG and schedule state, config.

A checkpoint holds everything needed to resume a run exactly where it stopped (model and
optimiser states, the numpy generator's state, torch's RNG state, the step counter)
and everything needed to use the model without the run folder (the method it belongs to,
the fully resolved config and the package version), so that no reader has to guess a
checkpoint's kind from its keys (nnU-Net v2 stores its trainer's name the same way).
Files are written atomically (temp file + rename), so a run stopped mid-write keeps its
previous checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mecca._version import __version__
from mecca.errors import InputError
from mecca.io import atomic_write


def save_checkpoint(path: Path, payload: dict[str, Any], *, method: str) -> Path:
    """Write ``payload`` (plus the registry name of its ``method`` and the package version)
    to ``path`` atomically."""
    data = {**payload, "method": method, "mecca_version": __version__}
    return atomic_write(Path(path), lambda tmp: torch.save(data, tmp))


def checkpoint_method(data: dict[str, Any]) -> str:
    """The method a checkpoint belongs to: its ``method``; a checkpoint written before
    every checkpoint named its method carries it in its config (RL and supervised runs),
    or names it as its ``kind`` (the generalist's first runs)."""
    method = data.get("method") or data["config"].get("method") or data.get("kind")
    if not method:
        raise InputError("the checkpoint names no method", hint="export it with this version")
    return str(method)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors, numbers, strings only)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("checkpoint not found", path=path, hint="check the run folder")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt files
        raise InputError(f"cannot read checkpoint ({err.__class__.__name__})", path=path) from err
    if not isinstance(data, dict) or "config" not in data:
        raise InputError("not a MECCA checkpoint (no config inside)", path=path)
    return data


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """The numpy generator's state as plain data (weights_only-loadable)."""
    state = rng.bit_generator.state
    return {
        "bit_generator": state["bit_generator"],
        "state": dict(state["state"]),
        "has_uint32": state["has_uint32"],
        "uinteger": state["uinteger"],
    }


def restore_rng(state: dict[str, Any]) -> np.random.Generator:
    """A numpy generator continuing exactly from a saved :func:`rng_state`."""
    rng = np.random.default_rng()
    if state["bit_generator"] != rng.bit_generator.state["bit_generator"]:
        raise InputError(f"checkpoint RNG is {state['bit_generator']}, expected PCG64")
    rng.bit_generator.state = state
    return rng
