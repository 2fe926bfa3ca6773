"""What the registry knows about one method: :class:`MethodSpec`.

A method family declares one spec per method it offers (its ``SPECS``), and
:mod:`mecca.methods.registry` registers them. Everything a command needs to know about a
method is here, so the CLI, the demo, the benchmark and the server ask the registry instead
of keeping lists of method names: how to build it, whether it runs a trained model (and
whose shipped bundles it loads), its training settings class and how it is trained and
exported (MONAI Label's ``TaskConfig`` idea: inference and training declared together).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mecca.interface import InteractiveMethod


@dataclass(frozen=True)
class TrainRequest:
    """One ``mecca train`` call as a family's train function receives it.

    Attributes:
        data: the MSD-layout dataset folder.
        out: the run folder.
        config_file: a YAML preset, or None.
        values: settings from the command line (``--set``, ``--method``, ``--target``,
            ``--labeled-fraction``), applied over the preset.
        resume: continue the run in ``out`` from its ``last.pt``.
        progress: show a progress bar.
        device: ``auto``, ``cpu`` or ``cuda``.
    """

    data: Path
    out: Path
    config_file: Path | None = None
    values: Mapping[str, Any] = field(default_factory=dict)
    resume: bool = False
    progress: bool = True
    device: str = "auto"


class ExportFunction(Protocol):
    """Writes a bundle (MONAI Bundle layout) from a training run's checkpoint."""

    def __call__(
        self,
        run: Path,
        out: Path,
        *,
        checkpoint: str = ...,
        name: str | None = ...,
        description: str = ...,
        force: bool = ...,
    ) -> Path: ...


@dataclass(frozen=True)
class MethodSpec:
    """One registered method.

    Attributes:
        name: the registry name (``mecca.methods.get(name)``, ``--method name``).
        factory: builds the method from its options (``model=``, ``device=`` for learned
            methods).
        learned: it runs a trained model: ``model=`` takes a bundle name or folder (or a run
            folder), and by default a shipped bundle is loaded.
        backbone: for a learned method that wraps another method's model (``tta``: a
            P-Net), the method whose shipped bundles it loads; None = its own.
        config: the settings class of its training runs (``mecca train --set KEY=VALUE``).
        train: trains a run (``mecca train --method name``); None = not trained here.
        export: writes a bundle from one of its runs (``mecca export-model``); every
            checkpoint names its method, so the CLI finds this function from the run.
        served: offered by ``mecca serve`` when ``--methods`` is not given (in the order
            of registration; the first is the default).
    """

    name: str
    factory: Callable[..., InteractiveMethod]
    learned: bool = False
    backbone: str | None = None
    config: type | None = None
    train: Callable[[TrainRequest], Path] | None = None
    export: ExportFunction | None = None
    served: bool = False

    @property
    def model_of(self) -> str:
        """Whose shipped bundles this method loads (its backbone's, else its own)."""
        return self.backbone or self.name
