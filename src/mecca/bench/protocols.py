"""The benchmark's simulated-user protocols and settings (see :mod:`mecca.bench`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROTOCOLS: dict[str, dict[str, Any]] = {
    "mecca": {"user": "edge", "options": {"first": 25, "later": 5}},
    "mecca_guided": {"user": "edge", "options": {"first": 25, "later": 5}, "guided": True},
    "cvpr25": {"user": "distance", "options": {}, "cvpr25": True},
    "itermrl": {"user": "error_centre", "options": {"n": 5}, "initial": True},
    "itermrl_random": {"user": "random", "options": {"n": 5}, "initial": True},
    "itermrl_none": {"user": "none", "options": {}, "initial": True},
    "scribble": {"user": "scribble", "options": {"n": 1}},
}


@dataclass(frozen=True)
class BenchSettings:
    """One benchmark run."""

    data: Path
    methods: tuple[str, ...]
    split: str = "test"
    target: str | None = None
    protocol: str = "mecca"
    steps: int = 5
    seed: int = 0
    max_cases: int | None = None
    weights: tuple[tuple[str, str], ...] = ()
    """(method, bundle) pairs overriding the shipped model of a learned method."""
    jobs: int = 1
    """Cases run in parallel worker processes (1: in this process)."""
    initial: str | None = None
    """Initial segmenter (run folder or bundle of a supervised baseline) of protocols that
    start from one (``itermrl``)."""
    box: bool = True
    """``cvpr25``: start with the organisers' box (False: no box, clicks only)."""
    recrop: str = "carry"
    """``cvpr25``: how a method starts again when a click leaves its ROI
    (:data:`mecca.bench.cvpr25.RECROPS`)."""


MONTAGE_CASE = 0
"""Index of the case shown in ``montage.png`` (the split's first case)."""
