"""The random walker's fast solver: the same system as scikit-image, solved once per step
from the previous probability on a graph built once per crop."""

from dataclasses import replace

import numpy as np
import pytest
from classical_scenes import A_CLICK, B_CLICK, BG, FG, ball_crop, dice, two_balls_crop
from skimage.segmentation import random_walker

from mecca.errors import ConfigError
from mecca.interaction.clicks import Click
from mecca.methods.classical import RandomWalkerMethod
from mecca.methods.classical.random_walker import solve_foreground, walker_laplacian
from mecca.methods.classical.seeded import seed_labels

RNG = np.random.default_rng(0)


def test_laplacian_is_symmetric_with_zero_row_sums():
    data = np.random.default_rng(1).normal(size=(5, 4, 3))
    lap = walker_laplacian(data, 130.0)
    assert lap.shape == (60, 60)
    assert abs(lap - lap.T).max() < 1e-12
    assert np.allclose(lap.sum(axis=1), 0.0, atol=1e-9)
    assert lap.nnz == 60 + 2 * (4 * 4 * 3 + 5 * 3 * 3 + 5 * 4 * 2)  # diagonal + 6-neighbours


def test_fast_solve_matches_scikit_image_exact_solve():
    crop, _ = ball_crop()
    seeds = seed_labels(crop.grid, [Click(FG, (16, 16, 10))], border_background=True)
    exact = random_walker(crop.image, seeds, beta=130.0, mode="bf", return_full_prob=True)[0]
    fast = solve_foreground(walker_laplacian(crop.image, 130.0), seeds, 1e-6)
    assert np.abs(fast - exact).max() < 1e-4


@pytest.mark.parametrize("solver", ["fast", "skimage"])
def test_both_solvers_segment_the_ball(solver):
    crop, gt = ball_crop()
    method = RandomWalkerMethod(solver=solver)
    _, result = method.step(method.start(crop), [Click(FG, (16, 16, 10))], rng=RNG)
    assert result.prob.dtype == np.float32 and result.prob.shape == crop.grid
    assert 0.0 <= result.prob.min() and result.prob.max() <= 1.0
    assert dice(result.prob > 0.5, gt) > 0.9


def test_warm_started_steps_reuse_the_graph_and_agree_with_a_cold_solve():
    crop, a, b = two_balls_crop()
    method = RandomWalkerMethod()
    state, first = method.step(method.start(crop), [A_CLICK], rng=RNG)
    graph = state.extra["walker_graph"]
    assert state.extra["walker_prob"] is state.prob  # the warm start costs no copy
    state, second = method.step(state, [B_CLICK], rng=RNG)
    assert state.extra["walker_graph"] is graph  # built once per crop
    cold = RandomWalkerMethod(solver="skimage")
    _, reference = cold.step(cold.start(crop), [A_CLICK, B_CLICK], rng=RNG)
    # both stop at the relative residual 1e-3: probabilities within a few %, masks equal
    assert np.abs(second.prob - reference.prob).max() < 0.05
    assert ((second.prob > 0.5) == (reference.prob > 0.5)).mean() > 0.999
    assert (second.prob > 0.5)[b].mean() < (first.prob > 0.5)[b].mean()  # the bg click acts
    assert (second.prob > 0.5)[a].mean() > 0.9


def test_flat_crop_and_missing_seeds_need_no_solve():
    crop, _ = ball_crop()
    flat = replace(crop, image=np.zeros(crop.grid, np.float32))
    method = RandomWalkerMethod()
    _, result = method.step(method.start(flat), [Click(FG, (16, 16, 10))], rng=RNG)
    assert np.isfinite(result.prob).all() and result.prob[16, 16, 10] == 1.0
    no_bg = RandomWalkerMethod(border_background=False)
    _, only_fg = no_bg.step(no_bg.start(crop), [Click(FG, (16, 16, 10))], rng=RNG)
    assert (only_fg.prob == 1.0).all()
    _, with_bg = no_bg.step(no_bg.start(crop), [Click(BG, (2, 2, 2))], rng=RNG)
    assert not with_bg.prob.any()


def test_unknown_solver_and_negative_radius_are_refused():
    with pytest.raises(ConfigError, match="solver"):
        RandomWalkerMethod(solver="amg")
    with pytest.raises(ConfigError, match="seed_radius"):
        RandomWalkerMethod(seed_radius=-1)
