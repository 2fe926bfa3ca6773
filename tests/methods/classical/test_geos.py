import numpy as np
import pytest
from classical_scenes import A_CLICK, B_CLICK, BG, CENTRE, FG, ball_crop, dice, two_balls_crop

from mecca import methods
from mecca.errors import ConfigError
from mecca.interaction.clicks import Click
from mecca.methods.base import FG_BG, InteractiveMethod
from mecca.methods.classical.geos import GeosMethod, geos_probability
from mecca.methods.classical.seeded import seed_labels


def _step(method, state, clicks):
    return method.step(state, clicks, rng=np.random.default_rng(0))


def test_registry_builds_a_geos_method():
    method = methods.get("geos", lamb=0.5)
    assert isinstance(method, InteractiveMethod) and isinstance(method, GeosMethod)
    assert method.name == "geos" and method.accepts == FG_BG and method.lamb == 0.5


def test_one_click_segments_the_ball_with_a_soft_probability():
    crop, gt = ball_crop()
    method = GeosMethod()
    state, result = _step(method, method.start(crop), [Click(FG, CENTRE)])
    assert result.prob.dtype == np.float32 and result.prob.shape == crop.grid
    assert 0 <= result.prob.min() and result.prob.max() <= 1
    assert len(np.unique(result.prob)) > 2  # soft, not a mask
    assert dice(result.prob > 0.5, gt) > 0.9
    assert state.clicks == (Click(FG, CENTRE),) and "geodesic_graph" in state.extra


def test_probability_is_the_distance_ratio():
    d_fg = np.array([0.0, 1.0, 3.0, 0.0, np.inf, 2.0])
    d_bg = np.array([2.0, 3.0, 1.0, 0.0, 1.0, np.inf])
    np.testing.assert_allclose(geos_probability(d_fg, d_bg), [1, 0.75, 0.25, 0.5, 0, 1])


def test_seeds_are_respected():
    crop, _ = ball_crop()
    method = GeosMethod()
    clicks = [Click(FG, CENTRE), Click(BG, (16, 16, 14))]  # the bg click is inside the ball
    _, result = _step(method, method.start(crop), clicks)
    seeds = seed_labels(crop.grid, clicks, radius=1, border_background=True)
    assert (result.prob[seeds == 1] == 1).all() and (result.prob[seeds == 2] == 0).all()


def test_bg_click_removes_a_wrongly_included_ball():
    crop, a, b = two_balls_crop()
    method = GeosMethod()
    state, first = _step(method, method.start(crop), [A_CLICK])
    assert (first.prob[b] > 0.5).mean() > 0.95
    state, second = _step(method, state, [B_CLICK])
    assert state.clicks == (A_CLICK, B_CLICK)
    assert (second.prob[b] > 0.5).mean() < 0.05 and (second.prob[a] > 0.5).mean() > 0.95


def test_no_foreground_click_gives_an_empty_probability():
    crop, _ = ball_crop()
    method = GeosMethod()
    for clicks in ([], [Click(BG, (3, 3, 3))]):
        _, result = _step(method, method.start(crop), clicks)
        assert not result.prob.any()


def test_without_any_background_seed_everything_is_foreground():
    crop, _ = ball_crop()
    method = GeosMethod(border_background=False)
    _, result = _step(method, method.start(crop), [Click(FG, CENTRE)])
    assert (result.prob == 1).all()


@pytest.mark.parametrize(
    ("options", "message"),
    [({"lamb": 1.5}, "lamb"), ({"lamb": -0.1}, "lamb"), ({"seed_radius": -1}, "seed_radius")],
)
def test_bad_settings_raise_config_error(options, message):
    with pytest.raises(ConfigError, match=message):
        methods.get("geos", **options)
