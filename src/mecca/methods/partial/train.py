"""Training the partial-segmentation cVAE (:mod:`mecca.methods.partial.model`).

Each step draws ``batch_size`` training pairs (:func:`~mecca.methods.partial.model.
training_batch`) and takes one Adam step on the paper's loss. The run folder, resume, log
and checkpoints are :mod:`mecca.training.run`'s: one ``train`` line per ``log_every``
steps (mean losses and seconds per step over them), ``last.pt`` every
``checkpoint_every`` steps; there is no validation (so no ``best.pt``).

On a dataset (``mecca train --method partial``): crops of the training cases on the
network grid (ground-truth box + random 1-11 voxel margin, as every other method's crops),
``crops_per_case`` per case, each z-scored, then :func:`train_partial`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mecca.config import load_config, read_settings
from mecca.data.cases import load_cases
from mecca.data.roi import NormaliseConfig, make_crop, random_margin_box
from mecca.errors import ConfigError, InputError
from mecca.methods.partial.model import (
    PartialConfig,
    _binary,
    build_network,
    loss_on_batch,
    normalise_image,
    training_batch,
)
from mecca.methods.spec import TrainRequest
from mecca.training.run import Trainer

RESUMABLE_CHANGES = frozenset({"steps", "log_every", "checkpoint_every"})
"""Settings that may differ when a run is resumed (they change no number of the run)."""


def _training_data(
    cfg: PartialConfig, images: Sequence[np.ndarray], labels: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Stacked normalised images (N, *grid) float32 and labels (N, *grid) bool."""
    if len(images) == 0 or len(images) != len(labels):
        raise InputError(
            f"need as many labels as images, and at least one: got {len(images)} images, "
            f"{len(labels)} labels"
        )
    grid = tuple(int(n) for n in cfg.grid)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        if np.shape(image) != grid or np.shape(label) != grid:
            raise InputError(
                f"training case {i}: image {np.shape(image)} and label {np.shape(label)} must "
                f"both have the network grid {grid}",
                hint="crop / resample to the grid first, or change PartialConfig.grid",
            )
        if not np.isfinite(image).all():
            raise InputError(f"training case {i}: image holds NaN or inf")
    stacked = np.stack([normalise_image(im, cfg.normalise) for im in images])
    truth = np.stack([_binary(lab, f"training label {i}") for i, lab in enumerate(labels)])
    return stacked, truth


class PartialTrainer(Trainer):
    """One training run of the cVAE in ``out`` (see :func:`train_partial`)."""

    resume_may_change = RESUMABLE_CHANGES
    log_seconds = False

    def __init__(
        self,
        cfg: PartialConfig,
        images: np.ndarray,
        labels: np.ndarray,
        out: Path,
        *,
        resume: bool = False,
        progress: bool = True,
    ) -> None:
        rng = np.random.default_rng(cfg.seed)
        super().__init__(cfg, out, method="partial", resume=resume, progress=progress, rng=rng)
        self.cfg: PartialConfig = cfg
        self.images, self.labels = images, labels
        self.net = build_network(cfg)
        self.optimiser = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.window: list[tuple[float, float, float, float]] = []
        self.t_window = time.perf_counter()
        saved = self.checkpoint_to_resume(resume)
        if saved is not None:
            self.resume_from(saved)

    @property
    def total(self) -> int:
        return self.cfg.steps

    def state(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "optimiser": self.optimiser.state_dict()}

    def restore(self, data: dict[str, Any]) -> None:
        self.net.load_state_dict(data["net"])
        self.optimiser.load_state_dict(data["optimiser"])

    def begin(self) -> dict[str, Any]:
        self.window, self.t_window = [], time.perf_counter()
        return {"cases": len(self.images)}

    def train_step(self) -> dict[str, Any] | None:
        cfg = self.cfg
        self.net.train()
        x, y = training_batch(self.images, self.labels, cfg, self.rng)
        eps = self.rng.standard_normal((cfg.batch_size, cfg.latent_size)).astype(np.float32)
        loss = loss_on_batch(self.net, x, y, eps, cfg)
        self.optimiser.zero_grad(set_to_none=True)
        loss.total.backward()
        self.optimiser.step()
        self.window.append((float(loss.total.detach()), loss.wdl, loss.dl, loss.kl))
        done = self.step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            return self._window_record()
        return None

    def _window_record(self) -> dict[str, Any]:
        """Mean losses and seconds per step since the last ``train`` line."""
        mean = np.mean(np.asarray(self.window), axis=0)
        seconds = (time.perf_counter() - self.t_window) / len(self.window)
        self.window, self.t_window = [], time.perf_counter()
        return {
            "loss": float(mean[0]),
            "wdl": float(mean[1]),
            "dl": float(mean[2]),
            "kl": float(mean[3]),
            "seconds_per_step": seconds,
        }

    def postfix(self, record: dict[str, Any]) -> dict[str, str]:
        return {"loss": f"{record['loss']:.4f}"}


def train_partial(
    config: PartialConfig,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = False,
) -> Path:
    """Train (or resume) the partial-segmentation cVAE; returns ``out_dir``.

    Args:
        config: the run's settings; on resume only ``steps``, ``log_every`` and
            ``checkpoint_every`` may differ from the saved ones.
        images: equal-shaped arrays on the network grid (``config.grid``), any intensity
            scale (normalised per ``config.normalise``).
        labels: matching binary ground truths (bool or 0/1).
        out_dir: run folder (config.yaml, log.jsonl, last.pt; see the module docstring).
        resume: continue from ``out_dir/last.pt`` (a fresh run when there is none).
        progress: show a progress bar.

    Raises:
        OverwriteError: ``out_dir`` holds a run and ``resume`` is false.
        ConfigError: resuming with different settings.
        InputError: images and labels that do not fit the config.
        KeyboardInterrupt: after saving last.pt, on Ctrl-C or SIGTERM.
    """
    stacked, truth = _training_data(config, images, labels)
    trainer = PartialTrainer(
        config, stacked, truth, Path(out_dir), resume=resume, progress=progress
    )
    return trainer.run()


def dataset_crops(
    data: Path,
    grid: Sequence[int],
    *,
    split: str = "train",
    target: str | None = None,
    crops_per_case: int = 4,
    seed: int = 0,
    max_cases: int | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """z-scored image crops and their labels on ``grid``, ``crops_per_case`` per case."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for case in load_cases(Path(data), split, target, max_cases):
        for _ in range(crops_per_case):
            box = random_margin_box(case.mask, rng)
            crop = make_crop(
                case.image, box, tuple(grid), label=case.mask, normalise=NormaliseConfig()
            )
            images.append(crop.image.astype(np.float32))
            labels.append(np.asarray(crop.label, bool))
    return images, labels


def train_partial_on_dataset(
    config: PartialConfig,
    data: Path,
    out: Path,
    *,
    resume: bool = False,
    crops_per_case: int = 4,
    target: str | None = None,
    progress: bool = True,
) -> Path:
    """``mecca train --method partial``: crops of the train split, then :func:`train_partial`."""
    if config.dims != 3:
        raise ConfigError("training on a dataset's volumes needs dims=3")
    images, labels = dataset_crops(
        data, config.grid, target=target, crops_per_case=crops_per_case, seed=config.seed
    )
    return train_partial(config, images, labels, out, resume=resume, progress=progress)


def train_request(request: TrainRequest) -> Path:
    """``mecca train --method partial`` (the registry's train function): ``target`` and
    ``crops_per_case`` choose the crops; the other settings are :class:`PartialConfig`'s."""
    values = dict(request.values)
    target = values.pop("target", None)
    crops = int(
        values.pop("crops_per_case", read_settings(request.config_file).get("crops_per_case", 4))
    )
    drop = ("method", "target", "crops_per_case")
    cfg = load_config(PartialConfig, request.config_file, values, drop=drop)
    return train_partial_on_dataset(
        cfg,
        request.data,
        request.out,
        resume=request.resume,
        crops_per_case=crops,
        target=None if target is None else str(target),
        progress=request.progress,
    )
