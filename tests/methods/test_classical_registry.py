import numpy as np
import pytest
from classical_scenes import ball_image

from mecca import methods
from mecca.episode import run_episode
from mecca.interaction.clicks import make_user
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


def test_default_model_prefers_the_dataset_then_phantom_then_any_shipped(monkeypatch):
    from mecca import bundle, methods

    monkeypatch.setattr(bundle, "shipped_bundles", lambda: ["pnet_hippocampus", "mecca_phantom"])
    assert methods.default_model("pnet", "hippocampus") == "pnet_hippocampus"
    assert methods.default_model("pnet", "left_atrium") == "pnet_hippocampus"  # the only one
    assert methods.default_model("mecca", "left_atrium") == "mecca_phantom"
    assert methods.default_model("unet") == "unet_phantom"  # none shipped: the loader says so


def test_takes_only_edge_points_tells_the_edge_point_methods_apart():
    from mecca.interaction.clicks import InteractionKind as K
    from mecca.methods.base import takes_only_edge_points

    assert takes_only_edge_points(frozenset({K.EDGE}))
    assert not takes_only_edge_points(frozenset({K.EDGE, K.FOREGROUND, K.BACKGROUND}))
    assert not takes_only_edge_points(frozenset({K.FOREGROUND, K.BACKGROUND}))
    assert not takes_only_edge_points(frozenset())
