"""Batched voxel-agent environment: B crops, their probabilities, a simulated user, hints.

One episode of the interactive loop on the network grid, for training (IteR-MRL Sec. 3,
MECCA Sec. 3.1, Algorithm 1). Each of the B volumes is a crop already on the network grid
(intensities normalised); every voxel is an agent whose action moves its probability
(:mod:`mecca.rl.actions`). The state of a voxel is ``[intensity, probability, hints...]``,
so a state tensor is float32 (B, 2 + C_hint, I, J, K).

Click timing (the benchmark protocol of :mod:`mecca.episode`, MECCA Tables 1-2): the user
clicks *before* each action step, looking at the mask ``p > 0.5`` that the step will
refine.

* :meth:`VoxelEnv.reset` sets the start probability (0.5 everywhere, or a given initial
  segmenter's map, IteR-MRL "update" mode) and lets the user click on it with ``step=1``.
  With p = 0.5 the mask ``p > 0.5`` is empty, so the first clicks see an empty prediction
  (MECCA: 25 edge points on the whole boundary).
* :meth:`VoxelEnv.step` applies the actions (step t), then, unless the episode is over,
  the user looks at the new mask and clicks with ``step=t+1`` (MECCA: 5 points); the hint
  maps are updated incrementally (:meth:`HintEncoder.update`) and the next state is built.
  After the last step (t = T) nobody clicks: T steps use T rounds of clicks (MECCA:
  25 + 4 x 5 = 45 points), exactly as in the benchmark.

Rewards are not computed here: the trainer calls :func:`mecca.rl.rewards.compute_reward`
with ``p_prev``, ``p_next`` from :class:`StepOutput`, :attr:`VoxelEnv.labels_tensor` and
whatever confidence it has.

Unlabeled volumes (``labels=None``, semi-supervised training): there is no ground truth
for a simulated user, so nobody clicks (the hint channels stay empty) and
:attr:`VoxelEnv.labels_tensor` raises. MECCA's unlabeled volumes "contain only hint
information": to simulate that, pass the ground truth as ``labels`` (the user needs it)
and compute the rewards from :func:`mecca.rl.semisup.simulated_labels` instead of
``labels_tensor``.

Randomness: the one ``rng`` given to :meth:`VoxelEnv.reset` is used by the user for all
volumes, in batch order, step after step, so the same seed gives the same clicks. The
clicks are recorded per volume and step (:attr:`VoxelEnv.clicks`) for replay.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mecca.errors import InputError
from mecca.interaction.clicks import Click
from mecca.interaction.hints import HintEncoder
from mecca.rl.actions import ACTIONS, apply_actions, check_actions

logger = logging.getLogger(__name__)

User = Callable[..., list[Click]]
"""A simulated user: ``user(pred, gt, *, step, rng, advice=None, image=None) -> clicks``."""

ArrayLike = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class StepOutput:
    """What one :meth:`VoxelEnv.step` returns.

    Attributes:
        state_next: float32 (B, C, I, J, K) state after the actions and the user's clicks.
        p_prev: float32 (B, I, J, K) probability before the actions.
        p_next: float32 (B, I, J, K) probability after the actions.
        done: True after the last step of the episode.
        clicks: per volume, the clicks given after this step (empty when ``done``).
    """

    state_next: torch.Tensor
    p_prev: torch.Tensor
    p_next: torch.Tensor
    done: bool
    clicks: tuple[tuple[Click, ...], ...] = ()


def _as_numpy(x: ArrayLike, name: str, dtype: type) -> np.ndarray:
    """A (B, I, J, K) numpy copy of an array or tensor; InputError if not 4D."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 4:
        raise InputError(f"{name} must be a (B, I, J, K) batch, got shape {arr.shape}")
    return np.array(arr, dtype=dtype)


class VoxelEnv:
    """A batch of B crops played as one interactive episode of ``steps`` steps.

    Args:
        encoder: turns the clicks so far into hint channels.
        user: a simulated user (:mod:`mecca.interaction.users`); None = nobody clicks.
        actions: the action set (index = action id).
        steps: episode length T (both papers: 5).
        device: where the state and probability tensors live (a torch device; resolve
            ``'auto'`` first with the project's one device helper).
    """

    def __init__(
        self,
        encoder: HintEncoder,
        user: User | None,
        *,
        actions: Sequence[float] = ACTIONS,
        steps: int = 5,
        device: str | torch.device = "cpu",
    ):
        if steps < 1:
            raise InputError(f"an episode needs at least one step, got steps={steps}")
        self.encoder = encoder
        self.user = user
        self.actions = check_actions(actions)
        self.steps = int(steps)
        self.device = torch.device(device)
        self._t = -1
        self._images = np.zeros((0, 1, 1, 1), dtype=np.float32)
        self._labels: np.ndarray | None = None
        self._prob = torch.zeros(0)
        self._hints = np.zeros((0, encoder.n_channels, 1, 1, 1), dtype=np.float32)
        self._clicks: list[list[list[Click]]] = []
        self._rng = np.random.default_rng(0)

    # ------------------------------------------------------------------ episode

    def reset(
        self,
        images: ArrayLike,
        labels: ArrayLike | None,
        rng: np.random.Generator | int,
        init_prob: ArrayLike | None = None,
    ) -> torch.Tensor:
        """Start an episode; the user gives the step-1 clicks on the initial mask.

        Args:
            images: float (B, I, J, K) normalised crops on the network grid.
            labels: bool (B, I, J, K) ground truth, or None for unlabeled volumes.
            rng: generator (or seed) for the user's random choices in this episode.
            init_prob: float (B, I, J, K) start probability in [0, 1]; None = 0.5.

        Returns:
            Float32 (B, 2 + encoder.n_channels, I, J, K) state.
        """
        imgs = _as_numpy(images, "images", np.float32)
        if not np.all(np.isfinite(imgs)):
            raise InputError("images have NaN or infinite values")
        self._labels = None if labels is None else self._check_like(labels, imgs, "labels", bool)
        if init_prob is None:
            prob = np.full(imgs.shape, 0.5, dtype=np.float32)
        else:
            prob = self._check_like(init_prob, imgs, "init_prob", np.float32)
            if not np.all((prob >= 0) & (prob <= 1)):
                raise InputError("init_prob must lie in [0, 1]")
        self._images = imgs
        self._prob = torch.from_numpy(prob).to(self.device)
        self._hints = np.stack([self.encoder.empty(img) for img in imgs])
        self._clicks = [[] for _ in range(len(imgs))]
        self._rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self._t = 0
        self._interact(step=1, advice=None)
        return self.state

    def step(self, action_idx: torch.Tensor, *, advice: ArrayLike | None = None) -> StepOutput:
        """Apply one action per voxel, then let the user click on the new mask.

        Args:
            action_idx: integer (B, I, J, K) action indices into ``actions``.
            advice: optional int (B, I, J, K) advice regions (0 = none) for the clicks
                that follow this step (MECCA interaction guide); ignored on the last step.

        Returns:
            :class:`StepOutput`; ``done`` is True after step T, when no more steps are
            allowed until the next :meth:`reset`.
        """
        if self._t < 0:
            raise InputError("call reset() before step()")
        if self._t >= self.steps:
            raise InputError(f"the episode is over after {self.steps} steps; call reset()")
        p_prev = self._prob
        p_next = apply_actions(p_prev, action_idx.to(self.device), self.actions)
        self._prob = p_next
        self._t += 1
        done = self._t >= self.steps
        new: list[list[Click]] = [[] for _ in range(len(self._images))]
        if not done:
            new = self._interact(step=self._t + 1, advice=advice)
        return StepOutput(
            state_next=self.state,
            p_prev=p_prev,
            p_next=p_next,
            done=done,
            clicks=tuple(tuple(c) for c in new),
        )

    def _interact(self, *, step: int, advice: ArrayLike | None) -> list[list[Click]]:
        """The user's clicks (protocol step ``step``) on ``p > 0.5``; hints updated, recorded."""
        n = len(self._images)
        new: list[list[Click]] = [[] for _ in range(n)]
        if self.user is not None and self._labels is not None:
            adv = (
                None
                if advice is None
                else self._check_like(advice, self._images, "advice", np.int64)
            )
            pred = (self._prob > 0.5).cpu().numpy()
            for b in range(n):
                new[b] = list(
                    self.user(
                        pred[b],
                        self._labels[b],
                        step=step,
                        rng=self._rng,
                        advice=None if adv is None else adv[b],
                        image=self._images[b],
                    )
                )
                if new[b]:
                    self._hints[b] = self.encoder.update(self._hints[b], self._images[b], new[b])
        elif self.user is not None:
            logger.debug("unlabeled volumes: no simulated clicks at step %d", step)
        for b in range(n):
            self._clicks[b].append(new[b])
        return new

    @staticmethod
    def _check_like(x: ArrayLike, ref: np.ndarray, name: str, dtype: type) -> np.ndarray:
        """A numpy copy of ``x`` with ``ref``'s shape; InputError otherwise."""
        arr = _as_numpy(x, name, dtype)
        if arr.shape != ref.shape:
            raise InputError(f"{name} {arr.shape} do not match the images {ref.shape}")
        return arr

    # ------------------------------------------------------------------ views

    @property
    def t(self) -> int:
        """Steps taken in this episode (0 after reset; -1 before the first reset)."""
        return self._t

    @property
    def done(self) -> bool:
        """Whether the episode has run all its steps."""
        return self._t >= self.steps

    @property
    def batch_size(self) -> int:
        """Number of volumes B."""
        return len(self._images)

    @property
    def labeled(self) -> bool:
        """Whether the volumes of this episode have labels."""
        return self._labels is not None

    @property
    def n_channels(self) -> int:
        """State channels C = 2 + hint channels."""
        return 2 + self.encoder.n_channels

    @property
    def prob(self) -> torch.Tensor:
        """Float32 (B, I, J, K) current foreground probability."""
        return self._prob

    @property
    def images(self) -> np.ndarray:
        """Float32 (B, I, J, K) crops of this episode (do not modify)."""
        return self._images

    @property
    def hints(self) -> np.ndarray:
        """Float32 (B, C_hint, I, J, K) hint maps of all clicks so far (a copy)."""
        return self._hints.copy()

    @property
    def labels_tensor(self) -> torch.Tensor:
        """Bool (B, I, J, K) labels on the env's device, for the rewards."""
        if self._labels is None:
            raise InputError(
                "this episode has no labels, so no rewards can be computed from them",
                hint="use mecca.rl.semisup.simulated_labels for unlabeled volumes",
            )
        return torch.from_numpy(self._labels).to(self.device)

    @property
    def clicks(self) -> list[list[list[Click]]]:
        """Per volume, per protocol step (1-based step k at index k - 1), the clicks given."""
        return [[list(step) for step in vol] for vol in self._clicks]

    @property
    def state(self) -> torch.Tensor:
        """Float32 (B, 2 + C_hint, I, J, K) state ``[intensity, probability, hints...]``."""
        if self._t < 0:
            raise InputError("call reset() before asking for the state")
        img = torch.from_numpy(self._images).to(self.device)
        hints = torch.from_numpy(self._hints).to(self.device)
        return torch.cat([img[:, None], self._prob[:, None].to(torch.float32), hints], dim=1)
