import numpy as np
import pytest
from classical_scenes import A_CLICK, B_CLICK, BG, CENTRE, FG, ball_crop, dice, two_balls_crop

from mecca import methods
from mecca.errors import ConfigError
from mecca.interaction.clicks import Click
from mecca.methods.base import FG_BG, InteractiveMethod
from mecca.methods.classical.graphcut import GraphCutMethod, contrast_sigma
from mecca.methods.classical.seeded import seed_labels


def _step(method, state, clicks):
    return method.step(state, clicks, rng=np.random.default_rng(0))


def test_registry_builds_a_graphcut_method():
    method = methods.get("graphcut", lam=2.0)
    assert isinstance(method, InteractiveMethod) and isinstance(method, GraphCutMethod)
    assert method.name == "graphcut" and method.accepts == FG_BG and method.lam == 2.0


def test_one_click_segments_the_ball_with_binary_output():
    crop, gt = ball_crop()
    method = GraphCutMethod()
    state, result = _step(method, method.start(crop), [Click(FG, CENTRE)])
    assert result.prob.dtype == np.float32 and result.prob.shape == crop.grid
    assert set(np.unique(result.prob)) <= {0.0, 1.0}
    assert dice(result.prob > 0.5, gt) > 0.9
    assert state.clicks == (Click(FG, CENTRE),) and result.seconds > 0


def test_seeds_are_hard_constraints():
    crop, _ = ball_crop()
    method = GraphCutMethod()
    clicks = [Click(FG, CENTRE), Click(BG, (16, 16, 14))]  # the bg click is inside the ball
    _, result = _step(method, method.start(crop), clicks)
    seeds = seed_labels(crop.grid, clicks, radius=1, border_background=True)
    assert (result.prob[seeds == 1] == 1).all() and (result.prob[seeds == 2] == 0).all()


def test_bg_click_in_a_wrongly_included_ball_only_removes_its_seed():
    # Graph cut's region term is global: ball B has the foreground's intensity, so a bg click
    # there removes the hard-constrained cube (and whatever the boundary term lets go), not B.
    crop, a, b = two_balls_crop()
    method = GraphCutMethod()
    state, first = _step(method, method.start(crop), [A_CLICK])
    assert (first.prob[b] == 1).mean() > 0.95
    state, second = _step(method, state, [B_CLICK])
    assert state.clicks == (A_CLICK, B_CLICK)
    assert second.prob[B_CLICK.position] == 0
    assert second.prob[b].sum() < first.prob[b].sum()
    assert (second.prob[a] == 1).all()


def test_no_foreground_click_gives_an_empty_mask():
    crop, _ = ball_crop()
    method = GraphCutMethod()
    for clicks in ([], [Click(BG, (3, 3, 3))]):
        _, result = _step(method, method.start(crop), clicks)
        assert not result.prob.any()


def test_without_background_seeds_the_background_model_uses_the_other_voxels():
    crop, gt = ball_crop()
    method = GraphCutMethod(border_background=False)
    _, result = _step(method, method.start(crop), [Click(FG, CENTRE)])
    assert dice(result.prob > 0.5, gt) > 0.9


def test_explicit_sigma_and_contrast_estimate():
    crop, gt = ball_crop()
    assert contrast_sigma(np.zeros((4, 4, 4))) == 1.0
    assert contrast_sigma(crop.image) > 0
    method = GraphCutMethod(sigma=0.5, lam=1.0)
    _, result = _step(method, method.start(crop), [Click(FG, CENTRE)])
    assert dice(result.prob > 0.5, gt) > 0.9


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lam": -1.0}, "lam"),
        ({"lam": float("inf")}, "lam"),
        ({"sigma": 0.0}, "sigma"),
        ({"min_std": 0.0}, "min_std"),
        ({"seed_radius": -1}, "seed_radius"),
    ],
)
def test_bad_settings_raise_config_error(options, message):
    with pytest.raises(ConfigError, match=message):
        methods.get("graphcut", **options)
