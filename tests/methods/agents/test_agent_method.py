import numpy as np
import pytest
import torch

from conftest import sphere
from mecca.data.roi import Box, make_crop
from mecca.episode import run_episode
from mecca.interaction.clicks import Click, InteractionKind
from mecca.interaction.hints import HintEncoder
from mecca.interaction.users import make_user
from mecca.methods.agents.method import RLAgentMethod
from mecca.methods.base import InteractiveMethod
from mecca.nets import ActorCritic, ConfidenceConfig, ConfidenceNet, PNetConfig
from mecca.rl.actions import ACTIONS


def _crop():
    rng = np.random.default_rng(0)
    gt = sphere((20, 20, 12), (10, 10, 6), 5)
    image = gt * 2.0 + rng.normal(0, 0.2, gt.shape)
    return make_crop(image, Box((0, 0, 0), gt.shape), grid=gt.shape), gt


def _mecca() -> RLAgentMethod:
    torch.manual_seed(0)
    net = ActorCritic(PNetConfig(in_channels=3, width=4))
    conf = ConfidenceNet(ConfidenceConfig(in_channels=4, width=4))
    return RLAgentMethod(net, HintEncoder("gaussian", "edge"), confidence=conf)


def test_mecca_step_moves_every_voxel_by_an_action_and_gives_confidence():
    crop, _ = _crop()
    method = _mecca()
    assert isinstance(method, InteractiveMethod)
    assert method.accepts == frozenset({InteractionKind.EDGE})
    state = method.start(crop)
    assert state.prob is not None and np.all(state.prob == 0.5)
    state, result = method.step(state, [Click(InteractionKind.EDGE, (10, 10, 1))],
                                rng=np.random.default_rng(0))
    assert result.prob.shape == crop.grid and result.prob.dtype == np.float32
    moves = np.unique(result.prob - 0.5)
    assert np.abs(moves[:, None] - np.asarray(ACTIONS)[None]).min(axis=1).max() < 1e-6
    assert result.confidence is not None and result.confidence.shape == crop.grid
    assert 0.0 <= result.confidence.min() and result.confidence.max() <= 1.0
    assert method.gives_confidence and result.advice is None  # advice: the session's job
    assert state.extra["step"] == 1 and len(state.clicks) == 1
    assert state.extra["hints"].max() == pytest.approx(1.0)


def test_greedy_steps_are_deterministic_and_states_are_not_mutated():
    crop, _ = _crop()
    method = _mecca()
    start = method.start(crop)
    s1, r1 = method.step(start, [], rng=np.random.default_rng(0))
    s2, r2 = method.step(start, [], rng=np.random.default_rng(1))
    np.testing.assert_array_equal(r1.prob, r2.prob)
    assert np.all(start.prob == 0.5) and start.extra["step"] == 0


def test_itermrl_agent_takes_fg_bg_clicks_and_has_no_confidence():
    crop, _ = _crop()
    net = ActorCritic(PNetConfig(in_channels=4, width=4))
    method = RLAgentMethod(net, HintEncoder("geodesic", "fg_bg"), name="itermrl")
    assert method.accepts == frozenset({InteractionKind.FOREGROUND, InteractionKind.BACKGROUND})
    state = method.start(crop, init_prob=np.full(crop.grid, 0.2, np.float32))
    _, result = method.step(state, [Click(InteractionKind.FOREGROUND, (10, 10, 6))],
                            rng=np.random.default_rng(0))
    assert result.confidence is None and result.advice is None and not method.gives_confidence
    assert np.all((result.prob >= 0) & (result.prob <= 0.6 + 1e-6))


def test_an_agent_runs_a_whole_episode_on_the_original_grid():
    gt = sphere((30, 30, 16), (15, 15, 8), 6)
    image = gt * 2.0 + np.random.default_rng(1).normal(0, 0.3, gt.shape)
    record = run_episode(_mecca(), image, gt, make_user("edge"), rng=np.random.default_rng(0),
                         steps=2, grid=(20, 20, 12))
    assert len(record.dice_per_step) == 2
    assert all(0.0 <= d <= 1.0 for d in record.dice_per_step)
