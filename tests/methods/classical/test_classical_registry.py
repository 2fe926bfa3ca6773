import numpy as np
import pytest
from classical_scenes import ball_image

from mecca import methods
from mecca.episode import run_episode
from mecca.interaction.users import make_user
from mecca.methods.base import InteractiveMethod

CLASSICAL = ("random_walker", "graphcut", "growcut", "geos", "region_growing")


def test_every_classical_method_is_registered():
    assert set(CLASSICAL) <= set(methods.available())


@pytest.mark.parametrize("name", CLASSICAL)
def test_classical_method_runs_an_edge_user_episode(name):
    image, gt = ball_image()
    method = methods.get(name)
    assert isinstance(method, InteractiveMethod)
    # A small network grid keeps every method well under a second (the random walker's
    # conjugate gradients took ~2 s per step on a 32 x 32 x 20 grid here, 0.04 s on this one).
    record = run_episode(
        method,
        image,
        gt,
        make_user("edge"),
        rng=np.random.default_rng(5),
        steps=2,
        grid=(28, 28, 18),
    )
    dice = record.dice_per_step
    assert len(dice) == 2 and all(0.0 <= d <= 1.0 for d in dice)
    assert dice[-1] > 0.8, dice
