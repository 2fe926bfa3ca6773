"""IteR-MRL and MECCA at inference: a trained voxel-agent policy as an ``InteractiveMethod``.

Each step (IteR-MRL Sec. 3, MECCA Sec. 3.1): the new clicks update the hint maps, the
state ``[intensity, probability, hints...]`` goes through the policy, every voxel takes
its most probable action (greedy at inference) and ``p <- clip(p + a, 0, 1)``. With a
confidence network (MECCA) the step also returns the per-voxel confidence of the actions
taken; the session turns it into advice regions (Sec. 3.5, :mod:`mecca.interaction.guide`),
so a benchmark that needs no advice does not pay for SLIC.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from mecca.data.roi import Crop
from mecca.interaction.clicks import Click, InteractionKind
from mecca.interaction.hints import HintEncoder
from mecca.interface import MethodState, StepResult
from mecca.nets import ActorCritic, ConfidenceNet, action_confidence, batch_statistics
from mecca.rl.actions import ACTIONS, action_values, apply_actions


def agent_state(image: np.ndarray, prob: np.ndarray, hints: np.ndarray) -> torch.Tensor:
    """The network input (1, 2 + C, I, J, K) float32 from numpy arrays on the grid."""
    stacked = np.concatenate([image[None], prob[None], hints]).astype(np.float32, copy=False)
    return torch.from_numpy(stacked)[None]


@dataclass
class RLAgentMethod:
    """A trained policy (and optional confidence network) behind ``InteractiveMethod``.

    Attributes:
        net: the actor-critic network; only its policy head runs here.
        encoder: how clicks become hint channels (must match training).
        confidence: MECCA's confidence network, or None (IteR-MRL).
        actions: the action set the policy was trained with.
        init_prob: start probability when no initial segmentation is given.
        grid: the network grid the model was trained on; callers crop to it.
    """

    net: ActorCritic
    encoder: HintEncoder
    confidence: ConfidenceNet | None = None
    actions: tuple[float, ...] = ACTIONS
    init_prob: float = 0.5
    name: str = "mecca"
    grid: tuple[int, int, int] = (55, 55, 30)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self) -> None:
        self.net.eval().to(self.device)
        if self.confidence is not None:
            self.confidence.eval().to(self.device)

    @property
    def gives_confidence(self) -> bool:
        """Whether steps return a confidence map (so advice regions can be shown)."""
        return self.confidence is not None

    @property
    def accepts(self) -> frozenset[InteractionKind]:
        return frozenset(self.encoder.kinds)

    def start(self, crop: Crop, *, init_prob: np.ndarray | None = None) -> MethodState:
        prob = (
            np.full(crop.grid, self.init_prob, np.float32)
            if init_prob is None
            else np.asarray(init_prob, np.float32)
        )
        hints = self.encoder.empty(crop.image)
        return MethodState(crop=crop, prob=prob, extra={"hints": hints, "step": 0})

    def step(
        self, state: MethodState, new: Sequence[Click], *, rng: np.random.Generator
    ) -> tuple[MethodState, StepResult]:
        t0 = time.perf_counter()
        crop, prob = state.crop, state.prob
        assert prob is not None
        hints = state.extra["hints"]
        if new:
            hints = self.encoder.update(hints, crop.image, list(new))
        x = agent_state(crop.image, prob, hints).to(self.device)
        with batch_statistics(self.net, self.confidence), torch.inference_mode():
            idx = self.net.policy_logits(x).argmax(dim=1)
            p_next = apply_actions(torch.from_numpy(prob)[None].to(self.device), idx, self.actions)
            conf = None
            if self.confidence is not None:
                values = action_values(idx, self.actions)[:, None]
                c = action_confidence(self.confidence, x, values)
                conf = c[0, 0].float().cpu().numpy()
        prob_next = p_next[0].float().cpu().numpy()
        step = int(state.extra["step"]) + 1
        seconds = time.perf_counter() - t0
        new_state = MethodState(
            crop=crop,
            clicks=state.clicks + tuple(new),
            prob=prob_next,
            extra={"hints": hints, "step": step},
        )
        return new_state, StepResult(prob_next, conf, None, seconds)
