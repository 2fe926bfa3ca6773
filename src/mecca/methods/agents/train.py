"""Training IteR-MRL and MECCA: synchronous A2C over batched voxel-agent episodes.

One training episode (IteR-MRL Sec. 3, MECCA Sec. 3 and Algorithm 1 with every volume
labeled): B augmented ROI crops start at p = 0.5; the simulated user clicks; for T steps
the policy samples one action per voxel, ``p <- clip(p + a, 0, 1)``, the reward of every
voxel is computed (relative cross-entropy gain, or MECCA's confidence-weighted gain, ...),
and the user clicks on the new mask. The A2C loss over the episode updates the
actor-critic; the confidence network (MECCA) is trained with the symmetric BCE of Eq. 6
on the actions taken. IteR-MRL0 pre-training runs the first ``pretrain_episodes`` with no
user (no hints).

The run folder, resume, log and checkpoints are :mod:`mecca.training.run`'s (one step is
an episode here; checkpoints add the networks, optimisers and the torch generator).
Validation: Dice on the original grid after each step on the first ``val_cases`` cases of
the val split. Under ``torchrun`` the same code trains data-parallel (DDP); only rank 0
writes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mecca.bundle import model_checkpoint
from mecca.checkpoint import load_checkpoint
from mecca.config import config_to_dict, load_config
from mecca.data.cases import HeldCase, load_cases, sample_crops
from mecca.data.roi import Box, Crop, NormaliseConfig, random_margin_box
from mecca.episode import initial_prob_on_grid, run_episode
from mecca.errors import ConfigError
from mecca.interaction.users import make_user
from mecca.interface import Segmenter
from mecca.methods.agents.config import RESUME_MAY_CHANGE, TrainConfig, hint_encoder
from mecca.methods.agents.method import RLAgentMethod
from mecca.methods.spec import TrainRequest
from mecca.methods.supervised.bundle import load_supervised
from mecca.nets import (
    ActorCritic,
    ConfidenceConfig,
    ConfidenceNet,
    PNetConfig,
    action_confidence,
    batch_statistics,
    confidence_loss,
)
from mecca.rl.a2c import LossTerms, a2c_loss
from mecca.rl.actions import ACTIONS, action_values
from mecca.rl.env import VoxelEnv
from mecca.rl.rewards import RewardConfig, compute_reward
from mecca.rl.semisup import DeltaSchedule, HeldLabels, run_split, simulated_labels
from mecca.runtime import (
    DistInfo,
    dist_from_env,
    init_distributed,
    resolve_device,
    shutdown_distributed,
)
from mecca.training.run import Trainer, Validation, due

log = logging.getLogger(__name__)


@dataclass
class Models:
    """The networks and their optimisers (the DDP wrappers, when distributed, in ``ddp``)."""

    net: ActorCritic
    optimiser: torch.optim.Optimizer
    confidence: ConfidenceNet | None
    confidence_optimiser: torch.optim.Optimizer | None
    ddp: dict[str, nn.Module]


def build_models(cfg: TrainConfig, device: torch.device, *, seed: int) -> Models:
    """Fresh networks (Xavier init from ``seed``) and Adam optimisers."""
    torch.manual_seed(seed)  # init only; training randomness uses explicit generators
    channels = 2 + hint_encoder(cfg).n_channels
    net = ActorCritic(PNetConfig(in_channels=channels, width=cfg.width)).to(device)
    conf = None
    conf_opt = None
    if cfg.confidence:
        conf = ConfidenceNet(ConfidenceConfig(in_channels=channels + 1, width=cfg.width))
        conf = conf.to(device)
        conf_opt = torch.optim.Adam(conf.parameters(), lr=cfg.confidence_lr)
    return Models(net, torch.optim.Adam(net.parameters(), lr=cfg.lr), conf, conf_opt, {})


def load_initial_weights(models: Models, source: str) -> None:
    """Copy the networks of ``source`` (see ``TrainConfig.init_from``) into ``models``.

    The confidence network is copied too when both sides have one; a source without one
    leaves the run's freshly initialised. Different network shapes are refused."""
    path = model_checkpoint(source, "model to start from (init_from)")
    data = load_checkpoint(path)
    pairs: list[tuple[str, nn.Module | None]] = [
        ("net", models.net),
        ("confidence", models.confidence),
    ]
    for key, module in pairs:
        state = data.get(key)
        if module is None or state is None:
            continue
        try:
            module.load_state_dict(state)
        except RuntimeError as err:
            raise ConfigError(
                f"init_from: the {key} network of {source!r} has another shape than this run's",
                path=path,
                hint="use the width, grid channels and hints the source was trained with",
            ) from err
    log.info("initial weights from %s", path)


def sample_actions(logits: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One action per voxel from softmax(logits) over dim 1 (Gumbel-max, seeded)."""
    u = torch.rand(logits.shape, generator=gen, device="cpu").to(logits.device)
    gumbel = -torch.log(-torch.log(u.clamp_(1e-10, 1.0 - 1e-7)))
    return (logits.detach() + gumbel).argmax(dim=1)


@dataclass(frozen=True)
class EpisodeStats:
    """Diagnostics of one training episode."""

    loss: LossTerms
    confidence_loss: float
    dice_per_step: list[float]
    labeled: bool = True


def _dice(prob: torch.Tensor, labels: torch.Tensor) -> float:
    pred = prob > 0.5
    inter = (pred & labels).sum().item()
    total = pred.sum().item() + labels.sum().item()
    return 1.0 if total == 0 else 2.0 * inter / total


def train_episode(
    models: Models,
    env: VoxelEnv,
    images: np.ndarray,
    labels: np.ndarray,
    cfg: TrainConfig,
    rng: np.random.Generator,
    gen: torch.Generator,
    *,
    labeled: bool = True,
    delta: float = 0.85,
    init_prob: np.ndarray | None = None,
) -> EpisodeStats:
    """Play one batched episode and take one optimiser step of each network.

    ``init_prob``: (B, I, J, K) start probability (IteR-MRL update mode); None = 0.5.

    ``labeled=False`` (MECCA Algorithm 1, lines 11-18): the labels only drive the simulated
    user (hints); rewards use the simulated labels of each step (Eq. 10; or held, see
    ``TrainConfig.simulated_labels``), the losses only
    the voxels whose confidence passes ``delta`` (Eq. 11), and the confidence network is
    not trained on the batch. Rewards outside that mask count as 0 (``a2c_loss``), so
    that a masked voxel's return holds no reward from an untrusted label of a later step.
    """
    net = models.ddp.get("net", models.net)
    assert cfg.reward is not None, "call TrainConfig.resolved() first"
    reward_cfg = RewardConfig(
        kind=cfg.reward,
        alpha=cfg.reward_alpha,
        beta=cfg.reward_beta,
        lam=cfg.reward_lambda,
        eps=cfg.reward_eps,
    )
    models.net.train()
    state = env.reset(images, labels, rng, init_prob=init_prob)
    y = env.labels_tensor
    logits_t, values_t, actions_t, rewards_t, states_t, dice = [], [], [], [], [], []
    masks_t: list[torch.Tensor] = []
    held = HeldLabels() if cfg.simulated_labels == "episode" else None
    for _ in range(cfg.steps):
        logits, value = net(state)
        idx = sample_actions(logits, gen)
        out = env.step(idx)
        conf = None
        taken = action_values(idx, ACTIONS)
        if models.confidence is not None:
            models.confidence.eval()
            with batch_statistics(models.confidence), torch.no_grad():
                conf = action_confidence(models.confidence, state, taken[:, None])[:, 0]
        target = y
        if not labeled:
            assert conf is not None, "unlabeled episodes need the confidence network"
            guess = simulated_labels(taken, conf)
            if held is None:
                guessed, mask = guess.labels, guess.mask_fn(delta)
            else:
                guessed, mask = held.update(guess, delta)
            target = guessed > 0.5
            masks_t.append(mask)
        rewards_t.append(compute_reward(reward_cfg, out.p_prev, out.p_next, target, conf))
        logits_t.append(logits)
        values_t.append(value)
        actions_t.append(idx)
        states_t.append(state)
        dice.append(_dice(out.p_next, y))
        state = out.state_next
    terms = a2c_loss(
        torch.stack(logits_t),
        torch.stack(values_t),
        torch.stack(actions_t),
        torch.stack(rewards_t),
        gamma=cfg.gamma,
        advantage_mode=cfg.advantage,
        value_coef=cfg.value_coef,
        entropy_coef=cfg.entropy_coef,
        mask=torch.stack(masks_t) if masks_t else None,
    )
    models.optimiser.zero_grad(set_to_none=True)
    terms.total.backward()
    models.optimiser.step()
    conf_loss = float("nan")
    if labeled:
        conf_loss = _train_confidence(models, states_t, actions_t, y, cfg, rng)
    return EpisodeStats(terms, conf_loss, dice, labeled)


def _train_confidence(
    models: Models,
    states: list[torch.Tensor],
    actions: list[torch.Tensor],
    labels: torch.Tensor,
    cfg: TrainConfig,
    rng: np.random.Generator,
) -> float:
    """One Adam step of the confidence network on ``confidence_samples`` episode steps."""
    if models.confidence is None or models.confidence_optimiser is None:
        return float("nan")
    conf_net = models.ddp.get("confidence", models.confidence)
    models.confidence.train()
    picks = rng.choice(len(states), size=min(cfg.confidence_samples, len(states)), replace=False)
    state = torch.cat([states[int(t)].detach() for t in picks])
    values = torch.cat([action_values(actions[int(t)], ACTIONS)[:, None] for t in picks])
    target = labels[:, None].float().repeat(len(picks), 1, 1, 1, 1)
    loss = confidence_loss(conf_net, state, values, target)
    models.confidence_optimiser.zero_grad(set_to_none=True)
    loss.backward()
    models.confidence_optimiser.step()
    return float(loss.item())


def agent_method(models: Models, cfg: TrainConfig, device: torch.device) -> RLAgentMethod:
    """The current networks as an ``InteractiveMethod`` (evaluation mode)."""
    return RLAgentMethod(
        net=models.net,
        encoder=hint_encoder(cfg),
        confidence=models.confidence,
        name=cfg.method,
        device=device,
    )


def load_initial(cfg: TrainConfig) -> Segmenter | None:
    """The update mode's initial segmenter (``cfg.initial``, loaded), or None."""
    if cfg.initial is None:
        return None
    segmenter = load_supervised(cfg.initial)
    if tuple(segmenter.grid) != tuple(cfg.grid):
        raise ConfigError(
            f"initial segmenter {cfg.initial!r} works on grid {tuple(segmenter.grid)}, "
            f"this run on {tuple(cfg.grid)}",
            hint="train the initial segmenter on the run's grid",
        )
    return segmenter


def initial_maps(segmenter: Segmenter, images: np.ndarray) -> np.ndarray:
    """The initial segmenter's probability for each crop of a (B, I, J, K) batch, which is
    already on the segmenter's grid."""
    _, i, j, k = images.shape
    grid = (int(i), int(j), int(k))
    whole = Box((0, 0, 0), grid)
    return np.stack(
        [
            segmenter.initial_prob(Crop(np.asarray(im, np.float32), whole, grid, grid))
            for im in images
        ]
    ).astype(np.float32)


def validate(
    models: Models,
    cfg: TrainConfig,
    cases: list[HeldCase],
    device: torch.device,
    initial: Segmenter | None = None,
) -> list[float]:
    """Mean Dice (original grid) after each step on the validation cases, same protocol.

    Each case's ROI and clicks come from a generator seeded by the case's position, so
    every validation of a run sees the same boxes and the numbers are comparable.
    ``initial``: the update mode's segmenter (episodes start from its map).
    """
    method = agent_method(models, cfg, device)
    user = make_user(str(cfg.user))
    steps = cfg.val_steps or cfg.steps
    per_step = np.zeros(steps)
    for i, case in enumerate(cases):
        rng = np.random.default_rng([cfg.seed, 10_000 + i])
        box = random_margin_box(case.mask, rng)
        init = None
        if initial is not None:
            init = initial_prob_on_grid(initial, case.image, box, cfg.grid)
        record = run_episode(
            method,
            case.image,
            case.mask,
            user,
            rng=rng,
            steps=steps,
            box=box,
            grid=cfg.grid,
            init_prob=init,
        )
        per_step += np.asarray(record.dice_per_step)
    models.net.train()
    return (per_step / max(1, len(cases))).tolist()


class AgentTrainer(Trainer):
    """Runs (or resumes) one IteR-MRL or MECCA run into ``out``; see the module docstring."""

    unit = "episode"
    bar_unit = "ep"
    resume_may_change = frozenset(RESUME_MAY_CHANGE)

    def __init__(
        self,
        cfg: TrainConfig,
        data: Path,
        out: Path,
        *,
        device: str = "auto",
        resume: bool = False,
        progress: bool = True,
    ):
        self.dist: DistInfo = dist_from_env()
        self.device = resolve_device(device, local_rank=self.dist.local_rank)
        cfg = cfg.resolved()
        rng = np.random.default_rng([cfg.seed, self.dist.rank])
        super().__init__(
            cfg,
            out,
            method=cfg.method,
            resume=resume,
            progress=progress,
            rng=rng,
            is_main=self.dist.is_main,
        )
        self.cfg: TrainConfig = cfg
        self.data = Path(data)
        init_distributed(self.dist, self.device)
        self.models = build_models(cfg, self.device, seed=cfg.seed)
        self.initial = load_initial(cfg)
        self.gen = torch.Generator().manual_seed(cfg.seed * 1000 + self.dist.rank)
        saved = self.checkpoint_to_resume(resume)
        if saved is not None:
            self.resume_from(saved)
        elif cfg.init_from is not None:
            load_initial_weights(self.models, cfg.init_from)
        if self.dist.distributed:
            self.models.ddp["net"] = DistributedDataParallel(self.models.net)
            if self.models.confidence is not None:
                self.models.ddp["confidence"] = DistributedDataParallel(self.models.confidence)

    @property
    def episode(self) -> int:
        """Episodes done (this trainer's steps)."""
        return self.step

    @property
    def total(self) -> int:
        return self.cfg.episodes

    def state(self) -> dict[str, Any]:
        m = self.models
        return {
            "net": m.net.state_dict(),
            "net_config": config_to_dict(m.net.config),
            "optimiser": m.optimiser.state_dict(),
            "confidence": None if m.confidence is None else m.confidence.state_dict(),
            "confidence_config": None
            if m.confidence is None
            else config_to_dict(m.confidence.config),
            "confidence_optimiser": None
            if m.confidence_optimiser is None
            else m.confidence_optimiser.state_dict(),
            "torch_gen": self.gen.get_state(),
        }

    def restore(self, data: dict[str, Any]) -> None:
        m = self.models
        m.net.load_state_dict(data["net"])
        m.optimiser.load_state_dict(data["optimiser"])
        if m.confidence is not None and m.confidence_optimiser is not None:
            m.confidence.load_state_dict(data["confidence"])
            m.confidence_optimiser.load_state_dict(data["confidence_optimiser"])
        self.gen.set_state(data["torch_gen"])

    def _set_learning_rates(self) -> None:
        """Both optimisers at the configured rates, times the decay once it has begun."""
        cfg, m = self.cfg, self.models
        decayed = cfg.lr_decay_episode is not None and self.step >= cfg.lr_decay_episode
        factor = cfg.lr_decay_factor if decayed else 1.0
        if decayed and self.step == cfg.lr_decay_episode:
            log.info("episode %d: learning rates x %g", self.step, factor)
        pairs = [(m.optimiser, cfg.lr), (m.confidence_optimiser, cfg.confidence_lr)]
        for optimiser, lr in pairs:
            for group in [] if optimiser is None else optimiser.param_groups:
                group["lr"] = lr * factor

    def begin(self) -> dict[str, Any]:
        cfg = self.cfg
        self.cases = load_cases(self.data, cfg.train_split, cfg.target, cfg.max_cases)
        self.labeled, self.unlabeled = run_split(self.cases, cfg.labeled_fraction, cfg.seed)
        self.delta = DeltaSchedule(cfg.delta_start, cfg.delta_end, cfg.delta_step)
        self.val: list[HeldCase] = (
            load_cases(self.data, cfg.val_split, cfg.target, cfg.val_cases) if cfg.val_every else []
        )
        user = make_user(str(cfg.user))
        self.env_hinted = VoxelEnv(hint_encoder(cfg), user, steps=cfg.steps, device=self.device)
        self.env_plain = VoxelEnv(hint_encoder(cfg), None, steps=cfg.steps, device=self.device)
        return {"device": str(self.device), "world_size": self.dist.world_size}

    def train_step(self) -> dict[str, Any]:
        cfg, episode = self.cfg, self.step
        self._set_learning_rates()
        labeled = not self.unlabeled or episode < cfg.unlabeled_from or episode % 2 == 0
        batch = sample_crops(
            self.labeled if labeled else self.unlabeled,
            cfg.batch_size,
            self.rng,
            grid=cfg.grid,
            normalise=NormaliseConfig(),
            augment=cfg.augment,
        )
        env = self.env_plain if episode < cfg.pretrain_episodes else self.env_hinted
        epoch = episode * cfg.batch_size // len(self.cases)
        stats = train_episode(
            self.models,
            env,
            batch.images,
            batch.labels,
            cfg,
            self.rng,
            self.gen,
            labeled=labeled,
            delta=self.delta.value(epoch),
            init_prob=None if self.initial is None else initial_maps(self.initial, batch.images),
        )
        return {
            **stats.loss.as_dict(),
            "confidence_loss": None if np.isnan(stats.confidence_loss) else stats.confidence_loss,
            "labeled": stats.labeled,
            "dice_per_step": [round(d, 4) for d in stats.dice_per_step],
        }

    def postfix(self, record: dict[str, Any]) -> dict[str, str]:
        return {
            "reward": f"{record['mean_reward']:.4f}",
            "dice": f"{record['dice_per_step'][-1]:.3f}",
        }

    def validate(self) -> Validation | None:
        if not (self.val and due(self.step, self.cfg.val_every)):
            return None
        dice = validate(self.models, self.cfg, self.val, self.device, self.initial)
        record = {"cases": len(self.val), "dice_per_step": dice}
        return Validation(dice[-1], record)


def train(
    cfg: TrainConfig,
    data: Path,
    out: Path,
    *,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Train (or resume) a run; see :class:`AgentTrainer`."""
    run = AgentTrainer(cfg, data, out, device=device, resume=resume, progress=progress).run()
    shutdown_distributed()  # under torchrun: every rank done, then the group ends
    return run


def train_request(request: TrainRequest) -> Path:
    """``mecca train`` for ``mecca`` and ``itermrl`` (the registry's train function)."""
    cfg = load_config(TrainConfig, request.config_file, request.values)
    return train(
        cfg,
        request.data,
        request.out,
        device=request.device,
        resume=request.resume,
        progress=request.progress,
    )
