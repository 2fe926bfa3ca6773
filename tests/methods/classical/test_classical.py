import numpy as np
import pytest

from conftest import sphere
from mecca import methods
from mecca.data.roi import Box, make_crop
from mecca.errors import ConfigError
from mecca.interaction.clicks import Click, InteractionKind
from mecca.methods.base import InteractiveMethod
from mecca.methods.classical.seeded import seed_labels

FG, BG = InteractionKind.FOREGROUND, InteractionKind.BACKGROUND


def _bright_ball_crop():
    rng = np.random.default_rng(0)
    gt = sphere((32, 32, 20), (16, 16, 10), 6)
    image = gt * 2.0 + rng.normal(0, 0.2, gt.shape)
    return make_crop(image, Box((0, 0, 0), gt.shape), grid=gt.shape), gt


def test_registry_lists_and_builds_random_walker():
    assert "random_walker" in methods.available()
    method = methods.get("random_walker", beta=50.0)
    assert isinstance(method, InteractiveMethod)
    assert method.beta == 50.0


def test_registry_unknown_name_lists_valid_ones():
    with pytest.raises(ConfigError, match="random_walker"):
        methods.get("no_such_method")


def test_seed_labels_later_click_wins_and_border():
    clicks = [Click(FG, (5, 5, 5)), Click(BG, (6, 5, 5))]
    seeds = seed_labels((10, 10, 10), clicks, radius=1, border_background=True)
    assert seeds[5, 5, 5] == 2 and seeds[4, 5, 5] == 1
    assert seeds[0, 3, 3] == 2 and seeds[3, 3, 9] == 2
    assert set(np.unique(seeds)) == {0, 1, 2}


def test_random_walker_segments_ball_from_one_click():
    crop, gt = _bright_ball_crop()
    method = methods.get("random_walker")
    state = method.start(crop)
    assert state.prob is not None and not state.prob.any()
    state, result = method.step(state, [Click(FG, (16, 16, 10))], rng=np.random.default_rng(0))
    assert result.prob.shape == crop.grid and result.prob.dtype == np.float32
    pred = result.prob > 0.5
    dice = 2 * (pred & gt).sum() / (pred.sum() + gt.sum())
    assert dice > 0.9
    assert state.clicks == (Click(FG, (16, 16, 10)),)


def test_random_walker_without_foreground_is_empty():
    crop, _ = _bright_ball_crop()
    method = methods.get("random_walker")
    _, result = method.step(method.start(crop), [], rng=np.random.default_rng(0))
    assert not (result.prob > 0.5).any()
