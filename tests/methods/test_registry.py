"""The registry: every method has one spec, and the commands read what they need from it."""

import pytest

from mecca import methods
from mecca.errors import ConfigError
from mecca.methods.base import InteractiveMethod


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


def test_the_registry_names_every_method_once_with_its_spec():
    specs = {s.name: s for s in methods.specs()}
    assert sorted(specs) == methods.available()
    assert methods.served() == (
        "generalist", "mecca", "itermrl", "random_walker", "graphcut", "growcut", "geos",
        "region_growing",
    )  # the default (registry.DEFAULT_METHOD) first, then in registration order
    assert methods.trainable() == [
        "mecca", "itermrl", "pnet", "unet", "uamt", "intercnn", "deepigeos", "partial"
    ]
    for name in methods.trainable():
        assert specs[name].learned and specs[name].config is not None
        assert specs[name].export is not None
    assert specs["tta"].learned and specs["tta"].model_of == "pnet"
    assert not specs["random_walker"].learned and specs["random_walker"].train is None


def test_build_loads_learned_methods_and_refuses_a_model_for_the_others():
    assert methods.build("mecca").name == "mecca"  # the shipped default
    assert isinstance(methods.build("random_walker"), InteractiveMethod)
    with pytest.raises(ConfigError, match="takes no --model"):
        methods.build("random_walker", model="mecca_phantom")
    with pytest.raises(ConfigError, match="unknown method"):
        methods.build("telepath")


def test_a_users_own_method_is_one_register_call_away():
    from mecca.methods.classical import RandomWalkerMethod

    methods.register("my_walker", lambda **kw: RandomWalkerMethod(beta=10.0, **kw))
    try:
        assert methods.get("my_walker").beta == 10.0
        assert "my_walker" in methods.available() and "my_walker" not in methods.served()
    finally:
        from mecca.methods import registry

        del registry._SPECS["my_walker"]
