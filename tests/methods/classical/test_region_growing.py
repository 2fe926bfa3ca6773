import numpy as np
import pytest
from classical_scenes import A_CLICK, B_CLICK, BG, CENTRE, FG, ball_crop, dice, two_balls_crop

from mecca import methods
from mecca.errors import ConfigError
from mecca.interaction.clicks import Click
from mecca.methods.base import FG_BG, InteractiveMethod
from mecca.methods.classical.region_growing import RegionGrowingMethod, grow_region
from mecca.methods.classical.seeded import seed_labels


def _step(method, state, clicks):
    return method.step(state, clicks, rng=np.random.default_rng(0))


def test_registry_builds_a_region_growing_method():
    method = methods.get("region_growing", k=3.0)
    assert isinstance(method, InteractiveMethod) and isinstance(method, RegionGrowingMethod)
    assert method.name == "region_growing" and method.accepts == FG_BG and method.k == 3.0


def test_one_click_segments_the_ball_with_binary_output():
    crop, gt = ball_crop()
    method = RegionGrowingMethod()
    state, result = _step(method, method.start(crop), [Click(FG, CENTRE)])
    assert result.prob.dtype == np.float32 and result.prob.shape == crop.grid
    assert set(np.unique(result.prob)) <= {0.0, 1.0}
    assert dice(result.prob > 0.5, gt) > 0.9
    assert state.clicks == (Click(FG, CENTRE),)


def test_growth_stays_in_the_connected_in_range_region():
    image = np.zeros((12, 12, 12))
    image[2:5, 2:5, 2:5] = 1.0  # seeded block
    image[8:11, 8:11, 8:11] = 1.0  # same intensity, not connected
    seeds = np.zeros(image.shape, np.uint8)
    seeds[3, 3, 3] = 1
    region = grow_region(image, seeds, k=2.0, min_std=0.1)
    assert region.sum() == 27 and region[2:5, 2:5, 2:5].all()


def test_seeds_are_respected():
    crop, _ = ball_crop()
    method = RegionGrowingMethod()
    clicks = [Click(FG, CENTRE), Click(BG, (16, 16, 14))]  # the bg click is inside the ball
    _, result = _step(method, method.start(crop), clicks)
    seeds = seed_labels(crop.grid, clicks, radius=1, border_background=True)
    assert (result.prob[seeds == 1] == 1).all() and (result.prob[seeds == 2] == 0).all()


def test_bg_click_splits_off_a_wrongly_included_ball():
    crop, a, b = two_balls_crop()
    method = RegionGrowingMethod()
    state, first = _step(method, method.start(crop), [A_CLICK])
    assert (first.prob[b] == 1).mean() > 0.95
    state, second = _step(method, state, [B_CLICK])
    assert state.clicks == (A_CLICK, B_CLICK)
    assert (second.prob[b] == 1).mean() < 0.05 and (second.prob[a] == 1).mean() > 0.95


def test_no_foreground_click_gives_an_empty_mask():
    crop, _ = ball_crop()
    method = RegionGrowingMethod()
    for clicks in ([], [Click(BG, (3, 3, 3))]):
        _, result = _step(method, method.start(crop), clicks)
        assert not result.prob.any()


def test_without_any_background_seed_the_region_still_grows():
    crop, gt = ball_crop()
    method = RegionGrowingMethod(border_background=False)
    _, result = _step(method, method.start(crop), [Click(FG, CENTRE)])
    assert dice(result.prob > 0.5, gt) > 0.9


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"k": 0.0}, "k must"),
        ({"min_std": -1.0}, "min_std"),
        ({"gradient_sigma": float("nan")}, "gradient_sigma"),
        ({"seed_radius": -1}, "seed_radius"),
    ],
)
def test_bad_settings_raise_config_error(options, message):
    with pytest.raises(ConfigError, match=message):
        methods.get("region_growing", **options)
