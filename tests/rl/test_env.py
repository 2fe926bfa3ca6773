"""Batched voxel-agent environment on tiny spheres: shapes, clipping, clicks, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import sphere
from mecca.errors import InputError
from mecca.interaction.clicks import InteractionKind
from mecca.interaction.hints import HintEncoder
from mecca.interaction.users import EdgeUser, ErrorCentreUser, NoUser
from mecca.rl.env import VoxelEnv

SHAPE = (16, 16, 10)


def batch(b: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    labels = np.stack([sphere(SHAPE, (8 + i, 8, 5), 4 + i) for i in range(b)])
    images = (labels + 0.1 * rng.standard_normal(labels.shape)).astype(np.float32)
    return images, labels


def make_env(**kw) -> VoxelEnv:
    return VoxelEnv(HintEncoder("gaussian", "edge"), EdgeUser(first=6, later=2), **kw)


def test_reset_state_and_first_clicks():
    images, labels = batch()
    env = make_env(steps=3)
    state = env.reset(images, labels, np.random.default_rng(0))
    assert state.shape == (2, 3, *SHAPE) and state.dtype == torch.float32
    assert env.n_channels == 3 and env.t == 0 and not env.done
    assert torch.equal(state[:, 0], torch.from_numpy(images))
    assert torch.all(state[:, 1] == 0.5)
    for b in range(2):
        (first,) = env.clicks[b]
        assert len(first) == 6 and all(c.kind is InteractionKind.EDGE for c in first)
        for c in first:  # the Gaussian edge hint is 1 at every click
            assert state[b, 2][c.position].item() == pytest.approx(1.0)
            assert labels[b][c.position]  # edge points lie on the object


def test_step_applies_actions_and_clips():
    images, labels = batch()
    env = make_env(steps=3)
    env.reset(images, labels, np.random.default_rng(0))
    up = torch.full((2, *SHAPE), 5, dtype=torch.long)  # +0.4
    out = env.step(up)
    assert torch.all(out.p_prev == 0.5)
    assert torch.allclose(out.p_next, torch.full_like(out.p_next, 0.9))
    assert torch.equal(out.state_next[:, 1], out.p_next)
    out = env.step(up)
    assert torch.all(out.p_next == 1.0)  # clipped
    assert torch.all((env.prob >= 0) & (env.prob <= 1))
    down = torch.zeros((2, *SHAPE), dtype=torch.long)  # -0.4
    out = env.step(down)
    assert torch.allclose(out.p_next, torch.full_like(out.p_next, 0.6))
    assert out.done and env.done and env.t == 3


def test_clicks_follow_the_new_mask_and_stop_at_the_end():
    images, labels = batch()
    env = make_env(steps=2)
    env.reset(images, labels, np.random.default_rng(1))
    hints_before = env.hints
    out = env.step(torch.full((2, *SHAPE), 5, dtype=torch.long))  # everything foreground
    assert not out.done
    for b in range(2):
        assert len(out.clicks[b]) == 2  # 'later' clicks at step 2
        for c in out.clicks[b]:
            assert out.state_next[b, 2][c.position].item() == pytest.approx(1.0)
    assert np.all(env.hints >= hints_before)  # accumulated, never forgotten
    last = env.step(torch.zeros((2, *SHAPE), dtype=torch.long))
    assert last.done and last.clicks == ((), ())
    assert [len(steps) for steps in env.clicks] == [2, 2]
    with pytest.raises(InputError, match="over"):
        env.step(torch.zeros((2, *SHAPE), dtype=torch.long))


def test_same_rng_same_episode():
    images, labels = batch()
    actions = torch.from_numpy(np.random.default_rng(5).integers(0, 6, (3, 2, *SHAPE)))
    runs = []
    for _ in range(2):
        env = make_env(steps=3)
        states = [env.reset(images, labels, np.random.default_rng(42))]
        states += [env.step(a).state_next for a in actions]
        runs.append((states, env.clicks))
    assert all(torch.equal(a, b) for a, b in zip(runs[0][0], runs[1][0], strict=True))
    assert runs[0][1] == runs[1][1]


def test_init_prob_and_fg_bg_channels():
    images, labels = batch(1)
    init = np.where(labels, 0.8, 0.2).astype(np.float32)
    init[0, 8, 8, 5] = 0.2  # one false negative
    env = VoxelEnv(HintEncoder("euclidean", "fg_bg"), ErrorCentreUser(n=1, max_offset=0))
    state = env.reset(images, labels, 0, init_prob=init)
    assert state.shape == (1, 4, *SHAPE)
    assert torch.allclose(state[0, 1], torch.from_numpy(init[0]))
    (first,) = env.clicks[0]
    assert [c.kind for c in first] == [InteractionKind.FOREGROUND]
    assert first[0].position == (8, 8, 5)
    assert state[0, 2, 8, 8, 5] == 0.0  # distance channel is 0 at the fg click
    assert torch.all(state[0, 3] == 1.0)  # no background click: far everywhere
    with pytest.raises(InputError, match="init_prob"):
        env.reset(images, labels, 0, init_prob=init + 1.0)


def test_unlabeled_volumes_get_no_clicks_and_no_labels():
    images, _ = batch()
    env = make_env(steps=2)
    state = env.reset(images, None, np.random.default_rng(0))
    assert not env.labeled
    assert env.clicks == [[[]], [[]]]  # step 1 recorded, with no clicks
    assert torch.all(state[:, 2] == 0.0)
    out = env.step(torch.full((2, *SHAPE), 3, dtype=torch.long))
    assert out.clicks == ((), ())
    assert env.clicks == [[[], []], [[], []]]
    with pytest.raises(InputError, match="no labels"):
        _ = env.labels_tensor


def test_labels_tensor_and_bad_input():
    images, labels = batch()
    env = VoxelEnv(HintEncoder(), NoUser())
    with pytest.raises(InputError, match="reset"):
        env.step(torch.zeros((2, *SHAPE), dtype=torch.long))
    env.reset(images, labels, 0)
    assert env.labels_tensor.dtype == torch.bool and torch.equal(
        env.labels_tensor, torch.from_numpy(labels)
    )
    assert env.clicks == [[[]], [[]]]
    with pytest.raises(InputError, match="match"):
        env.reset(images, labels[:, :8], 0)
    with pytest.raises(InputError, match="B, I, J, K"):
        env.reset(images[0], labels[0], 0)
    with pytest.raises(InputError, match="does not match"):
        env.step(torch.zeros((1, *SHAPE), dtype=torch.long))


def test_advice_restricts_next_clicks():
    images, labels = batch(1)
    env = make_env(steps=2)
    env.reset(images, labels, np.random.default_rng(0))
    advice = np.zeros((1, *SHAPE), dtype=np.int64)
    advice[0, :8] = 1
    out = env.step(torch.zeros((1, *SHAPE), dtype=torch.long), advice=advice)
    assert out.clicks[0] and all(c.position[0] < 8 for c in out.clicks[0])
