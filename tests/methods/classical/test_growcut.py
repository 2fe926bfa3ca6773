import numpy as np
import pytest
from classical_scenes import A_CLICK, B_CLICK, BG, CENTRE, FG, ball_crop, dice, two_balls_crop

from mecca import methods
from mecca.errors import ConfigError
from mecca.interaction.clicks import Click
from mecca.methods.base import FG_BG, InteractiveMethod
from mecca.methods.classical.growcut import GrowCutMethod, grow_cut
from mecca.methods.classical.seeded import seed_labels


def _step(method, state, clicks):
    return method.step(state, clicks, rng=np.random.default_rng(0))


def test_registry_builds_a_growcut_method():
    method = methods.get("growcut", distance_penalty=0.5)
    assert isinstance(method, InteractiveMethod) and isinstance(method, GrowCutMethod)
    assert method.name == "growcut" and method.accepts == FG_BG
    assert method.distance_penalty == 0.5


def test_one_click_segments_the_ball_with_binary_output():
    # The first GrowCut call in a process loads ITK (a few seconds); later calls take ms.
    crop, gt = ball_crop()
    method = GrowCutMethod()
    state, result = _step(method, method.start(crop), [Click(FG, CENTRE)])
    assert result.prob.dtype == np.float32 and result.prob.shape == crop.grid
    assert set(np.unique(result.prob)) <= {0.0, 1.0}
    assert dice(result.prob > 0.5, gt) > 0.9
    assert state.clicks == (Click(FG, CENTRE),)


def test_border_seeds_grow_despite_the_filters_unpadded_edges():
    # ITK's FastGrowCut never propagates from voxels on the image faces; grow_cut pads.
    seeds = np.zeros((6, 6, 6), np.uint8)
    seeds[0] = 2
    seeds[5, 5, 5] = 1
    labels = grow_cut(np.zeros((6, 6, 6), np.float32), seeds, distance_penalty=1.0)
    assert labels[1, 3, 3] == 2 and labels[4, 4, 4] == 1 and (labels > 0).all()


def test_seeds_are_respected():
    crop, _ = ball_crop()
    method = GrowCutMethod()
    clicks = [Click(FG, CENTRE), Click(BG, (16, 16, 14))]  # the bg click is inside the ball
    _, result = _step(method, method.start(crop), clicks)
    seeds = seed_labels(crop.grid, clicks, radius=1, border_background=True)
    assert (result.prob[seeds == 1] == 1).all() and (result.prob[seeds == 2] == 0).all()


def test_bg_click_removes_a_wrongly_included_ball():
    crop, a, b = two_balls_crop()
    method = GrowCutMethod()
    state, first = _step(method, method.start(crop), [A_CLICK])
    assert (first.prob[b] == 1).mean() > 0.95
    state, second = _step(method, state, [B_CLICK])
    assert state.clicks == (A_CLICK, B_CLICK)
    assert (second.prob[b] == 1).mean() < 0.05 and (second.prob[a] == 1).mean() > 0.95


def test_no_foreground_click_gives_an_empty_mask():
    crop, _ = ball_crop()
    method = GrowCutMethod()
    for clicks in ([], [Click(BG, (3, 3, 3))]):
        _, result = _step(method, method.start(crop), clicks)
        assert not result.prob.any()


def test_without_any_background_seed_everything_is_foreground():
    crop, _ = ball_crop()
    method = GrowCutMethod(border_background=False)
    _, result = _step(method, method.start(crop), [Click(FG, CENTRE)])
    assert (result.prob == 1).all()


@pytest.mark.parametrize(
    ("options", "message"),
    [({"distance_penalty": -0.1}, "distance_penalty"), ({"seed_radius": -1}, "seed_radius")],
)
def test_bad_settings_raise_config_error(options, message):
    with pytest.raises(ConfigError, match=message):
        methods.get("growcut", **options)
