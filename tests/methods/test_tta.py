"""Scribble-constrained test-time adaptation on tiny networks trained inside the tests.

Two networks are trained once per module (seeded, a few dozen Adam steps, < 2 s): the
project's P-Net segmenter (one foreground logit) on bright spheres in noise, and a plain
3-class ``nn.Sequential`` whose training data only ever show labels 0 and 1. Test images
where they are wrong: a dimmer sphere (the P-Net under-segments) and a dark sphere (label 2,
which the 3-class network has never predicted).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from conftest import sphere
from mecca.data.roi import Box, NormaliseConfig, make_crop
from mecca.episode import run_episode
from mecca.errors import ConfigError, GeometryError, InputError, MeccaError
from mecca.interaction.clicks import Click, InteractionKind
from mecca.interaction.users import ScribbleUser
from mecca.methods.base import InteractiveMethod
from mecca.methods.tta import (
    UNLABELED,
    TTAConfig,
    TTAMethod,
    adapt,
    adapt_run,
    adapted_network,
    adapted_parameter_names,
    border_scribbles,
    box_to_scribbles,
    clicks_to_scribbles,
    grow_scribbles,
    merge_scribbles,
    tta_factory,
    weighted_layers,
)
from mecca.nets.segnet import build_segnet

FG, BG = InteractionKind.FOREGROUND, InteractionKind.BACKGROUND
S = 20
SHAPE = (S, S, S)
CENTRE = (10, 10, 10)
NOISE = 0.35
TOY_ALPHA = 0.01
"""The tests' tiny networks have tiny weights: the default pull of 3.0 (tuned on the
shipped P-Net) would hold them in place, so the mechanics are tested with a weak one."""
NO_GROW = TTAConfig(alpha=TOY_ALPHA, layers=3, iterations=150, grow_threshold=None, click_radius=1)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _bright_sample(rng: np.random.Generator, size: int = S) -> tuple[np.ndarray, np.ndarray]:
    centre = tuple(rng.uniform(6, size - 6, 3))
    gt = sphere((size,) * 3, centre, rng.uniform(3.5, 5.5))
    return (gt + rng.normal(0, NOISE, gt.shape)).astype(np.float32), gt


def _train(net: nn.Module, sample, steps: int, lr: float, loss_fn) -> nn.Module:
    rng = _rng(0)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(steps):
        xs, ys = zip(*[sample(rng) for _ in range(2)], strict=True)
        x = torch.from_numpy(np.stack(xs))[:, None]
        loss = loss_fn(net(x), torch.from_numpy(np.stack(ys)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def pnet() -> nn.Module:
    """The project's P-Net (width 4, one block each, batch norm): 5 parameterised layers."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = build_segnet(
            {"width": 4, "trunk_dilations": [1], "head_dilations": [2], "convs_per_block": 1}
        )

        def bce(logits, y):
            return nn.functional.binary_cross_entropy_with_logits(logits, y[:, None].float())

        return _train(net, _bright_sample, 40, 1e-2, bce)


def _three_class_sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    image, gt = _bright_sample(rng, 18)
    return image, gt.astype(np.int64)  # labels 0 and 1 only: label 2 is never shown


@pytest.fixture(scope="module")
def net3() -> nn.Module:
    """Plain 3-class Sequential (3 conv layers), trained on labels 0 / 1 only."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nn.Sequential(
            nn.Conv3d(1, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv3d(4, 4, 3, padding=2, dilation=2),
            nn.ReLU(),
            nn.Conv3d(4, 3, 1),
        )
        weight = torch.tensor([1.0, 4.0, 1.0])

        def ce(logits, y):
            return nn.functional.cross_entropy(logits, y, weight=weight)

        return _train(net, _three_class_sample, 40, 5e-2, ce)


def _dim_case() -> tuple[np.ndarray, np.ndarray]:
    """A sphere at 0.45 of the training brightness: the network misses much of it."""
    gt = sphere(SHAPE, CENTRE, 5.0)
    image = 0.45 * gt + _rng(5).normal(0, NOISE, SHAPE)
    return image.astype(np.float32), gt


def _dim_scribbles(gt: np.ndarray) -> np.ndarray:
    """A foreground stroke across the sphere's middle, a background stroke 2 voxels out."""
    scribbles = np.full(SHAPE, UNLABELED, np.int16)
    scribbles[6:15, 10, 10] = 1
    scribbles[10, 2:18, 3] = 0
    scribbles[2:18, 17, 10] = 0
    assert (gt[scribbles == 1]).all() and not (gt[scribbles == 0]).any()
    return scribbles


def _dice(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(2 * (pred & gt).sum() / (pred.sum() + gt.sum()))


def _logits(net: nn.Module, image: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return net(torch.from_numpy(image)[None, None])


def _snapshot(net: nn.Module) -> tuple[dict[str, torch.Tensor], list[bool], bool]:
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    return state, [p.requires_grad for p in net.parameters()], net.training


def _same(net: nn.Module, snap) -> bool:
    state, flags, training = snap
    now = net.state_dict()
    return (
        all(torch.equal(now[k], v) for k, v in state.items())
        and flags == [p.requires_grad for p in net.parameters()]
        and training == net.training
    )


# --------------------------------------------------------------------------- config, layers


@pytest.mark.parametrize(
    "bad",
    [
        {"layers": 0},
        {"iterations": -1},
        {"alpha": -1.0},
        {"lr": 0.0},
        {"momentum": 1.0},
        {"tolerance": 1.0},
        {"grow_threshold": 0.0},
        {"grow_radius": -1.0},
        {"click_radius": -1},
        {"foreground_label": 0},
        {"batch_voxels": 0},
        {"max_grad_norm": 0.0},
    ],
)
def test_config_refuses_bad_values(bad):
    with pytest.raises(ConfigError):
        TTAConfig(**bad)


def test_layers_are_the_modules_owning_weights_in_order(pnet):
    assert weighted_layers(pnet) == ["trunk.0.0", "trunk.0.1", "head.0.0", "head.0.1", "out"]
    assert adapted_parameter_names(pnet, 3) == [
        "head.0.0.weight",
        "head.0.1.weight",
        "head.0.1.bias",
        "out.weight",
        "out.bias",
    ]
    with pytest.raises(ConfigError, match="only 5 layers"):
        adapted_parameter_names(pnet, 6)


# --------------------------------------------------------------------------- adaptation


def test_only_the_last_layers_change_and_the_network_is_untouched(pnet):
    image, gt = _dim_case()
    snap = _snapshot(pnet)
    run = adapt_run(pnet, image, _dim_scribbles(gt), NO_GROW, rng=_rng())
    result, logits = run.adaptation, run.logits
    assert _same(pnet, snap)
    assert list(result.params) == adapted_parameter_names(pnet, 3)
    original = dict(pnet.named_parameters())
    assert all(not torch.equal(v, original[k]) for k, v in result.params.items())
    # the returned logits are those of the network with the adapted weights loaded
    adapted = adapted_network(pnet, result.params)
    torch.testing.assert_close(_logits(adapted, image), logits, rtol=1e-4, atol=1e-4)
    frozen = {k for k in original if k not in result.params}
    assert all(torch.equal(dict(adapted.named_parameters())[k], original[k]) for k in frozen)


def test_scribbles_satisfied_and_dice_improves_where_the_network_is_wrong(pnet):
    image, gt = _dim_case()
    before = _logits(pnet, image)[0, 0].numpy() > 0
    scribbles = _dim_scribbles(gt)
    assert not before[scribbles == 1].all()  # the network misses part of the stroke
    run = adapt_run(pnet, image, scribbles, NO_GROW, rng=_rng())
    result, after = run.adaptation, run.logits[0, 0].numpy() > 0
    assert 0 < result.iterations < NO_GROW.iterations and result.seconds > 0
    assert after[scribbles == 1].all() and not after[scribbles == 0].any()
    assert _dice(after, gt) > _dice(before, gt) + 0.1


def test_stop_rule_takes_no_step_when_already_satisfied(pnet):
    image, gt = _dim_case()
    pred = _logits(pnet, image)[0, 0].numpy() > 0
    scribbles = np.full(SHAPE, UNLABELED, np.int16)
    scribbles[CENTRE] = 1
    scribbles[0, 0, :] = 0
    assert pred[CENTRE] and not pred[0, 0, :].any()
    result = adapt(pnet, image, scribbles, NO_GROW, rng=_rng())
    assert result.iterations == 0
    original = dict(pnet.named_parameters())
    assert all(torch.equal(v, original[k]) for k, v in result.params.items())


def test_tolerance_and_iteration_cap(pnet):
    image, gt = _dim_case()
    pred = _logits(pnet, image)[0, 0].numpy() > 0
    scribbles = np.full(SHAPE, UNLABELED, np.int16)
    scribbles[pred] = 1  # all right ...
    wrong = np.argwhere(gt & ~pred)[0]
    scribbles[tuple(wrong)] = 1  # ... but one voxel
    share = 1 / (scribbles >= 0).sum()
    lenient = TTAConfig(
        alpha=TOY_ALPHA, layers=3, iterations=5, grow_threshold=None, tolerance=2 * share
    )
    assert adapt(pnet, image, scribbles, lenient, rng=_rng()).iterations == 0
    strict = TTAConfig(alpha=TOY_ALPHA, layers=3, iterations=2, grow_threshold=None)
    assert adapt(pnet, image, scribbles, strict, rng=_rng()).iterations == 2


def test_warm_start_from_given_weights(pnet):
    image, gt = _dim_case()
    scribbles = _dim_scribbles(gt)
    first = adapt(pnet, image, scribbles, NO_GROW, rng=_rng())
    again = adapt(pnet, image, scribbles, NO_GROW, rng=_rng(), init=first.params)
    assert again.iterations == 0  # already satisfied from the adapted weights
    assert all(torch.equal(again.params[k], v) for k, v in first.params.items())


def test_random_voxel_batches_follow_the_rng(pnet):
    image, gt = _dim_case()
    scribbles = _dim_scribbles(gt)
    cfg = TTAConfig(alpha=TOY_ALPHA, layers=3, iterations=3, grow_threshold=None, batch_voxels=5)
    a = adapt(pnet, image, scribbles, cfg, rng=_rng(1)).params
    b = adapt(pnet, image, scribbles, cfg, rng=_rng(1)).params
    c = adapt(pnet, image, scribbles, cfg, rng=_rng(2)).params
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_three_classes_at_once_inserting_a_missing_label(net3):
    gt = np.zeros((18, 18, 18), np.int64)
    gt[sphere(gt.shape, (5, 5, 9), 3.5)] = 1
    gt[sphere(gt.shape, (12, 12, 9), 3.5)] = 2  # dark: a label the network never predicts
    image = ((gt == 1) * 1.0 - (gt == 2) * 1.0 + _rng(7).normal(0, 0.3, gt.shape)).astype(
        np.float32
    )
    first = _logits(net3, image).argmax(1)[0].numpy()
    assert not (first == 2).any() and _dice(first == 1, gt == 1) > 0.8
    scribbles = np.full(gt.shape, UNLABELED, np.int16)
    scribbles[10:15, 12, 9] = 2  # stroke through the dark sphere
    scribbles[5, 3:8, 9] = 1  # stroke through the bright sphere
    scribbles[16, 2:16, 9] = 0
    scribbles[2:16, 16, 9] = 0
    scribbles[0, 0:11, 9] = 0
    scribbles[0:9, 10, 9] = 0
    scribbles[5, 5, [0, 1, 2, 15, 16, 17]] = 0
    assert (gt[scribbles >= 0] == scribbles[scribbles >= 0]).all()
    cfg = TTAConfig(alpha=TOY_ALPHA, layers=2, iterations=150, grow_threshold=None)
    run = adapt_run(net3, image, scribbles, cfg, rng=_rng())
    result, after = run.adaptation, run.logits.argmax(1)[0].numpy()
    assert result.iterations < cfg.iterations
    assert (after[scribbles >= 0] == scribbles[scribbles >= 0]).all()
    assert _dice(after == 2, gt == 2) > 0.65 and _dice(after == 1, gt == 1) > 0.6


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_round_trip(net3, tmp_path):
    path = tmp_path / "net3.pt"
    torch.jit.save(torch.jit.script(copy.deepcopy(net3)), str(path))
    method = TTAMethod.from_torchscript(path, TTAConfig(alpha=TOY_ALPHA, layers=2, iterations=20))
    image, gt = _bright_sample(_rng(3), 18)
    scribbles = np.full(gt.shape, UNLABELED, np.int16)
    scribbles[tuple(np.argwhere(gt)[0])] = 2
    cfg = TTAConfig(alpha=TOY_ALPHA, layers=2, iterations=20, grow_threshold=None)
    eager = adapt(net3, image, scribbles, cfg, rng=_rng())
    scripted = adapt(method.net, image, scribbles, cfg, rng=_rng())
    assert isinstance(method.net, torch.jit.ScriptModule)
    assert eager.iterations == scripted.iterations > 0
    for k, v in eager.params.items():
        torch.testing.assert_close(scripted.params[k], v, rtol=1e-4, atol=1e-5)
    crop = _crop(image)
    state, result = method.step_scribbles(method.start(crop), scribbles, rng=_rng())
    assert result.prob.shape == gt.shape and state.extra["probs"].shape == (3, *gt.shape)


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs_raise_mecca_errors(pnet, net3):
    image, gt = _dim_case()
    good = _dim_scribbles(gt)
    cases = [
        (GeometryError, "not on the image grid", pnet, good[:-1]),
        (InputError, r"-1\.\.1", pnet, np.where(good == 1, 2, good)),
        (InputError, r"-1\.\.2", net3, np.where(good == 1, 3, good)),
        (InputError, "no scribbled voxel", pnet, np.full(SHAPE, UNLABELED, np.int16)),
        (InputError, "integer label", pnet, good.astype(np.float32)),
    ]
    for error, message, net, scribbles in cases:
        with pytest.raises(error, match=message):
            adapt(net, image, scribbles, NO_GROW, rng=_rng())
    with pytest.raises(ConfigError, match="at most 5"):
        adapt(pnet, image, good, TTAConfig(alpha=TOY_ALPHA, layers=9), rng=_rng())
    with pytest.raises(ConfigError, match="only 3 layers"):
        TTAMethod.from_module(net3, TTAConfig(alpha=TOY_ALPHA, layers=4))


def test_bad_interactions_and_files_raise_mecca_errors(pnet, tmp_path):
    with pytest.raises(InputError, match="foreground/background"):
        clicks_to_scribbles([Click(InteractionKind.EDGE, (1, 1, 1))], SHAPE)
    with pytest.raises(GeometryError, match="outside the grid"):
        clicks_to_scribbles([Click(FG, (1, 1, S))], SHAPE)
    with pytest.raises(InputError, match="6 values"):
        box_to_scribbles((1, 2, 3), SHAPE)
    bad = tmp_path / "not_a_model.pt"
    bad.write_text("hello")
    with pytest.raises(MeccaError, match="TorchScript"):
        TTAMethod.from_torchscript(bad)
    method = TTAMethod.from_module(pnet, NO_GROW, grid=SHAPE)
    state = method.start(_crop(_dim_case()[0]))
    with pytest.raises(GeometryError):
        method.step_scribbles(state, np.zeros((2, 2, 2), np.int16), rng=_rng())
    with pytest.raises(InputError):
        method.step_scribbles(state, np.zeros(SHAPE, np.float32), rng=_rng())


# --------------------------------------------------------------------------- scribbles


def test_clicks_become_balls_and_later_clicks_win():
    vol = clicks_to_scribbles([Click(FG, (5, 5, 5)), Click(BG, (6, 5, 5))], SHAPE, radius=1)
    assert vol.dtype == np.int16 and (vol == 0).sum() == 7 and (vol == 1).sum() == 5
    assert vol[5, 5, 5] == 0 and vol[4, 5, 5] == 1 and vol[0, 0, 0] == UNLABELED
    one = clicks_to_scribbles([Click(FG, (0, 0, 0))], SHAPE, radius=0, foreground_label=2)
    assert (one == 2).sum() == 1 and one[0, 0, 0] == 2


def test_box_marks_outside_as_background_and_merge_keeps_old_labels():
    box = box_to_scribbles((2, 3, 4, 10, 11, 12), SHAPE)
    assert (box[2:10, 3:11, 4:12] == UNLABELED).all() and (box == 0).sum() == S**3 - 8**3
    assert (box_to_scribbles(Box((2, 3, 4), (10, 11, 12)), SHAPE) == box).all()
    old = np.full(SHAPE, UNLABELED, np.int16)
    old[5, 5, 5] = 1
    old[0, 0, 0] = 1
    merged = merge_scribbles(old, box)
    assert merged[5, 5, 5] == 1 and merged[0, 0, 0] == 0 and old[0, 0, 0] == 1


def test_region_growing_stays_in_similar_intensity_and_stops_at_an_edge():
    image = np.zeros((12, 12, 12), np.float32)
    image[:, 6:, :] = 2.0  # an edge between j = 5 and j = 6
    image += _rng(0).uniform(-0.1, 0.1, image.shape).astype(np.float32)
    scribbles = np.full(image.shape, UNLABELED, np.int16)
    scribbles[6, 4, 6] = 1  # one voxel left of the edge
    scribbles[6, 9, 6] = 0  # one voxel right of it
    grown = grow_scribbles(image, scribbles, threshold=0.5, radius=3.0)
    ones, zeros = np.argwhere(grown == 1), np.argwhere(grown == 0)
    assert (ones[:, 1] <= 5).all() and (zeros[:, 1] >= 6).all()  # never across the edge
    dist_1 = np.linalg.norm(ones - [6, 4, 6], axis=1)
    dist_0 = np.linalg.norm(zeros - [6, 9, 6], axis=1)
    assert dist_1.max() <= 3.0 and dist_0.max() <= 3.0  # the radius cap
    ball = sphere(image.shape, (6, 4, 6), 3.0) & (np.indices(image.shape)[1] <= 5)
    assert ((grown == 1) == ball).all()  # everything similar within reach joined
    assert grown[6, 4, 6] == 1 and grown[6, 9, 6] == 0


def test_region_growing_compares_with_the_scribble_mean_and_needs_connection():
    image = np.zeros((9, 9, 9), np.float32)
    image[4, 4, 5] = 0.3  # similar to the scribble, adjacent
    image[4, 4, 6] = 0.6  # 0.6 from the mean: excluded, though 0.3 from its neighbour
    image[4, 4, 7] = 0.0  # similar but only reachable through the excluded voxel ...
    image[3:6, 3:6, 7] = 0.0
    image[:, :, 6] = 5.0  # ... a wall cuts it off
    image[4, 4, 6] = 0.6
    scribbles = np.full(image.shape, UNLABELED, np.int16)
    scribbles[4, 4, 4] = 0
    grown = grow_scribbles(image, scribbles, threshold=0.5, radius=3.0)
    assert grown[4, 4, 5] == 0 and grown[4, 4, 6] == UNLABELED and grown[4, 4, 7] == UNLABELED
    labels, _ = ndimage.label(grown == 0)
    assert labels.max() == 1  # one connected region


def test_in_one_region_each_voxel_joins_the_nearest_scribble():
    image = np.zeros((12, 12, 12), np.float32)
    scribbles = np.full(image.shape, UNLABELED, np.int16)
    seeds = {0: np.array([6, 4, 6]), 1: np.array([6, 8, 6])}
    for label, seed in seeds.items():
        scribbles[tuple(seed)] = label
    grown = grow_scribbles(image, scribbles, threshold=0.5, radius=3.0)
    for label, seed in seeds.items():
        pts = np.argwhere(grown == label)
        own = np.linalg.norm(pts - seed, axis=1)
        other = np.linalg.norm(pts - seeds[1 - label], axis=1)
        assert len(pts) > 40 and (own <= other).all() and own.max() <= 3.0


def test_each_scribble_grows_with_its_own_mean():
    image = np.zeros((12, 12, 12), np.float32)
    image[:, 6:, :] = 2.0
    scribbles = np.full(image.shape, UNLABELED, np.int16)
    scribbles[6, 2, 6] = 0  # two scribbles of one label, in regions of different intensity:
    scribbles[6, 9, 6] = 0  # the label's overall mean (1.0) would let neither grow
    grown = grow_scribbles(image, scribbles, threshold=0.5, radius=1.0)
    assert (grown == 0).sum() == 2 * 7


# --------------------------------------------------------------------------- the method


IDENTITY = NormaliseConfig(mode="dataset", mean=0.0, std=1.0)


def _crop(image: np.ndarray):
    """The whole image as the crop, intensities unchanged (the networks' training scale)."""
    return make_crop(image, Box((0, 0, 0), image.shape), grid=image.shape, normalise=IDENTITY)


def test_method_start_and_steps_accumulate_scribbles(pnet):
    image, gt = _dim_case()
    method = TTAMethod.from_module(pnet, NO_GROW, grid=SHAPE)
    assert isinstance(method, InteractiveMethod) and method.name == "tta"
    assert method.accepts == frozenset({FG, BG})
    crop = _crop(image)
    start = method.start(crop)
    expected = torch.sigmoid(_logits(pnet, crop.image))[0, 0].numpy()
    np.testing.assert_allclose(start.prob, expected, atol=1e-5)
    clicks1 = [Click(FG, (7, 10, 10)), Click(BG, (10, 10, 3))]
    s1, r1 = method.step(start, clicks1, rng=_rng())
    clicks2 = [Click(FG, (13, 10, 10)), Click(BG, (10, 17, 10))]
    s2, r2 = method.step(s1, clicks2, rng=_rng())
    assert s2.clicks == tuple(clicks1 + clicks2)
    border = border_scribbles(SHAPE)  # the crop's outer layer: background from the start
    np.testing.assert_array_equal(start.extra["scribbles"], border)
    assert start.extra["params"] is None
    assert (s2.extra["scribbles"] >= 0).sum() - (border >= 0).sum() == 4 * 7
    assert (s1.extra["scribbles"] >= 0).sum() - (border >= 0).sum() == 2 * 7  # s1 unchanged
    assert s2.extra["iterations"] > 0
    for state, result in ((s1, r1), (s2, r2)):
        assert result.prob.dtype == np.float32 and result.seconds > 0
        assert (result.prob[state.extra["scribbles"] == 1] > 0.5).all()
        assert (result.prob[state.extra["scribbles"] == 0] <= 0.5).all()
    assert _dice(r2.prob > 0.5, gt) > _dice(start.prob > 0.5, gt)
    same, result = method.step(s2, [], rng=_rng())
    assert same is s2 and result.prob is s2.prob


def test_the_border_keeps_a_one_label_stroke_from_flipping_the_crop(pnet):
    """A foreground stroke where the image is dark: the cheapest fit shifts the foreground
    logit everywhere; the crop border (background: the user's box) holds the outside."""
    image, _ = _dim_case()
    clicks = [Click(FG, (4, j, 4)) for j in range(4, 9)]
    outer = border_scribbles(SHAPE) == 0
    flipped = {}
    for border in (False, True):
        cfg = TTAConfig(
            alpha=TOY_ALPHA, layers=3, iterations=150, grow_threshold=None, border_background=border
        )
        method = TTAMethod.from_module(pnet, cfg, grid=SHAPE)
        state, result = method.step(method.start(_crop(image)), clicks, rng=_rng())
        assert (result.prob[state.extra["scribbles"] == 1] > 0.5).all()
        flipped[border] = (result.prob[outer] > 0.5).mean()
    assert flipped[False] > 0.3 and flipped[True] < 0.05, flipped


def test_cold_start_equals_adapting_all_scribbles_from_the_original(pnet):
    image, gt = _dim_case()
    cfg = TTAConfig(
        alpha=TOY_ALPHA, layers=3, iterations=150, grow_threshold=None, warm_start=False
    )
    method = TTAMethod.from_module(pnet, cfg, grid=SHAPE)
    s1, _ = method.step(method.start(_crop(image)), [Click(FG, (7, 10, 10))], rng=_rng())
    s2, r2 = method.step(s1, [Click(BG, (10, 10, 3))], rng=_rng())
    direct = adapt(pnet, _crop(image).image, s2.extra["scribbles"], cfg, rng=_rng())
    assert all(torch.equal(s2.extra["params"][k], v) for k, v in direct.params.items())


def test_interleaved_sessions_do_not_influence_each_other(pnet):
    image_a, gt = _dim_case()
    image_b = (0.6 * sphere(SHAPE, (9, 11, 10), 4.0) + _rng(9).normal(0, NOISE, SHAPE)).astype(
        np.float32
    )
    clicks_a = [[Click(FG, (7, 10, 10)), Click(BG, (10, 10, 3))], [Click(FG, (13, 10, 10))]]
    clicks_b = [[Click(FG, (9, 11, 8)), Click(BG, (2, 2, 2))], [Click(BG, (9, 17, 10))]]
    snap = _snapshot(pnet)

    def run(method, image, rounds):
        state = method.start(_crop(image))
        for clicks in rounds:
            state, _ = method.step(state, clicks, rng=_rng())
        return state

    alone_a = run(TTAMethod.from_module(pnet, NO_GROW, grid=SHAPE), image_a, clicks_a)
    alone_b = run(TTAMethod.from_module(pnet, NO_GROW, grid=SHAPE), image_b, clicks_b)
    shared = TTAMethod.from_module(pnet, NO_GROW, grid=SHAPE)
    a, b = shared.start(_crop(image_a)), shared.start(_crop(image_b))
    for ca, cb in zip(clicks_a, clicks_b, strict=True):
        a, _ = shared.step(a, ca, rng=_rng())
        b, _ = shared.step(b, cb, rng=_rng())
    np.testing.assert_array_equal(a.prob, alone_a.prob)
    np.testing.assert_array_equal(b.prob, alone_b.prob)
    assert not np.array_equal(a.extra["params"]["out.bias"], b.extra["params"]["out.bias"])
    assert _same(pnet, snap)


def test_box_step_removes_foreground_outside_the_box(pnet):
    image, gt = _dim_case()
    image[:3] += 1.0  # a bright slab at one side, outside the box
    method = TTAMethod.from_module(pnet, NO_GROW, grid=SHAPE)
    start = method.start(_crop(image))
    assert (start.prob[:3] > 0.5).sum() > 50
    state, result = method.step_box(start, Box((4, 4, 4), (17, 17, 17)), rng=_rng())
    outside = state.extra["scribbles"] == 0
    assert outside.sum() == S**3 - 13**3 and not (result.prob[outside] > 0.5).any()


def test_region_growing_inside_the_method_enlarges_the_constraints_and_helps(pnet):
    image, gt = _dim_case()
    clicks = [Click(FG, CENTRE), Click(BG, (2, 2, 2))]
    plain = TTAMethod.from_module(pnet, NO_GROW, grid=SHAPE)
    start = plain.start(_crop(image))
    _, without = plain.step(start, clicks, rng=_rng())
    grow = TTAConfig(
        alpha=TOY_ALPHA,
        layers=3,
        iterations=150,
        grow_threshold=0.5,
        grow_radius=3.0,
        click_radius=1,
    )
    method = TTAMethod.from_module(pnet, grow, grid=SHAPE)
    state, result = method.step(start, clicks, rng=_rng())
    scribbles, constraints = state.extra["scribbles"], state.extra["constraints"]
    assert (constraints[scribbles >= 0] == scribbles[scribbles >= 0]).all()
    assert (constraints >= 0).sum() > 2 * (scribbles >= 0).sum()
    expected = grow_scribbles(state.crop.image, scribbles, threshold=0.5, radius=3.0)
    np.testing.assert_array_equal(constraints, expected)
    assert state.extra["iterations"] > 0
    assert (result.prob[constraints == 1] > 0.5).all()
    assert (result.prob[constraints == 0] <= 0.5).all()
    # the two clicks alone are already satisfied; grown, they correct the segmentation
    assert _dice(without.prob > 0.5, gt) == _dice(start.prob > 0.5, gt)
    assert _dice(result.prob > 0.5, gt) > _dice(without.prob > 0.5, gt) + 0.1


# --------------------------------------------------------------------------- loading, loop


def _save_supervised(path, net: nn.Module, method: str = "pnet"):
    from mecca.checkpoint import save_checkpoint

    key = "pnet" if method == "pnet" else "intercnn"
    payload = {
        "config": {"method": method, "grid": list(SHAPE)},
        "net_configs": {key: net.config.to_dict()},
        "nets": {key: net.state_dict()},
    }
    return save_checkpoint(path, payload, method=method)


def test_from_supervised_and_the_registry_factory(pnet, tmp_path, monkeypatch):
    ckpt = _save_supervised(tmp_path / "pnet.pt", pnet)
    method = tta_factory(model=str(ckpt), layers=2, grow_threshold=None)
    assert method.grid == SHAPE and method.config.layers == 2 and method.net is not pnet
    image, _ = _dim_case()
    np.testing.assert_allclose(
        method.start(_crop(image)).prob,
        TTAMethod.from_module(pnet, grid=SHAPE).start(_crop(image)).prob,
        atol=1e-6,
    )
    with pytest.raises(ConfigError, match="bad option"):
        tta_factory(model=str(ckpt), no_such_setting=1)
    monkeypatch.setattr("mecca.bundle.shipped_bundles", lambda: [])
    with pytest.raises(ConfigError, match="none is shipped"):
        tta_factory()
    with torch.random.fork_rng():
        refiner = build_segnet({"in_channels": 4, "width": 4, "trunk_dilations": [1]})
    bad = _save_supervised(tmp_path / "intercnn.pt", refiner, method="intercnn")
    with pytest.raises(ConfigError, match="image-only segmenter"):
        TTAMethod.from_supervised(bad)


def test_runs_in_the_project_episode_loop_with_the_scribbling_user(pnet):
    image, gt = _dim_case()
    # the paper's plain setting (scribbles only, no border), one voxel per click
    strokes = TTAConfig(
        alpha=TOY_ALPHA, layers=3, iterations=150, grow_threshold=None, border_background=False
    )
    method = TTAMethod.from_module(pnet, strokes, grid=SHAPE)
    record = run_episode(
        method,
        image,
        gt,
        ScribbleUser(n=2, max_offset=0),
        rng=_rng(),
        steps=2,
        box=Box((0, 0, 0), SHAPE),
        grid=SHAPE,
        normalise=IDENTITY,
    )
    assert all(len(s.clicks) > 1 for s in record.steps)  # strokes, not single clicks
    assert record.steps[0].dice > record.initial_dice + 0.1
    assert record.steps[-1].dice > record.initial_dice
