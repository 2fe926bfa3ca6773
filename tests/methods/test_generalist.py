"""The generalist as an interactive method, its training data, trainer and bundle."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from conftest import sphere
from mecca.bench import cvpr25
from mecca.data.roi import Box, make_crop, resample_box
from mecca.errors import ConfigError, InputError, OverwriteError
from mecca.interaction.clicks import Click, InteractionKind
from mecca.methods.base import InteractiveMethod
from mecca.methods.generalist import GeneralistMethod, box_prompt
from mecca.methods.generalist.bundle import (
    add_box_weights,
    export_bundle,
    load_box_weights,
    load_weights,
)
from mecca.methods.generalist.data import (
    HeldOut,
    Sampler,
    SamplerConfig,
    build_cache,
    cache_key,
    resample_crop,
)
from mecca.methods.generalist.method import keep_local_changes
from mecca.methods.generalist.net import GeneralistNet, GeneralistNetConfig
from mecca.methods.generalist.prompts import box_map, middle_slice_box, slice_box_map
from mecca.methods.generalist.train import (
    GeneralistConfig,
    _loop,
    _setup,
    _Stop,
    correction_round,
    dice_bce,
    learning_rate,
    train,
    train_step,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FG, BG, BOX = InteractionKind.FOREGROUND, InteractionKind.BACKGROUND, InteractionKind.BOX
GRID = (16, 16, 8)
TINY = GeneralistNetConfig(widths=(8, 16), blocks=(1, 1), fine=4)


@pytest.fixture(scope="module")
def method() -> GeneralistMethod:
    torch.manual_seed(0)
    return GeneralistMethod(GeneralistNet(TINY), GRID)


def _crop():
    gt = sphere(GRID, (8, 8, 4), 4)
    image = (gt * 2.0 + np.random.default_rng(0).normal(0, 0.3, GRID)).astype(np.float32)
    return make_crop(image, Box((0, 0, 0), GRID), grid=GRID)


# ----------------------------------------------------------------------------- method


def test_it_is_an_interactive_method_taking_points_and_boxes(method):
    assert isinstance(method, InteractiveMethod)
    assert method.accepts == frozenset({FG, BG, BOX}) and method.name == "generalist"


def test_test_time_flips_average_the_flipped_copies(method):
    channels = np.random.default_rng(1).random((5, *GRID)).astype(np.float32)
    flips, once = ((0,), (1, 2)), GeneralistMethod(method.net, GRID, flips=())
    expected = [once.predict(channels)]
    for axes in flips:
        copy = np.flip(channels, [a + 1 for a in axes]).copy()  # axis 0 holds the channels
        expected.append(np.flip(once.predict(copy), axes))
    flipped = GeneralistMethod(method.net, GRID, flips=flips)
    np.testing.assert_allclose(flipped.predict(channels), np.mean(expected, 0), atol=1e-5)
    assert not np.allclose(flipped.predict(channels), expected[0], atol=1e-4)
    np.testing.assert_array_equal(flipped.predict(channels, flip=False), expected[0])


def test_a_points_only_first_step_runs_unflipped_and_the_rest_flipped(method):
    class Recording(GeneralistMethod):
        seen: list = []

        def predict(self, channels, *, flip=True, slice_box=False):
            self.seen.append(flip)
            return super().predict(channels, flip=flip, slice_box=slice_box)

    crop, rng = _crop(), np.random.default_rng(0)
    points = Recording(method.net, GRID)
    s1, _ = points.step(points.start(crop), [Click(FG, (8, 8, 4))], rng=rng)
    points.step(s1, [Click(BG, (1, 1, 1))], rng=rng)
    assert points.seen == [False, True]  # one click's reach is the single pass's call
    boxed = Recording(method.net, GRID, roi_as_box=True)
    boxed.seen = []
    boxed.step(boxed.start(crop), [Click(FG, (8, 8, 4))], rng=rng)
    assert boxed.seen == [True]  # a box is given: flipped from the first step


def test_steps_give_a_probability_and_keep_old_states(method):
    crop = _crop()
    rng = np.random.default_rng(0)
    state = method.start(crop)
    assert np.all(state.prob == 0.5)
    same, res = method.step(state, [], rng=rng)  # nothing to go on: the start state
    assert same is state and np.all(res.prob == 0.5)
    box = [Click(BOX, (3, 3, 1)), Click(BOX, (12, 12, 6))]
    s1, r1 = method.step(state, box, rng=rng)
    assert r1.prob.shape == GRID and r1.prob.dtype == np.float32
    assert 0.0 <= r1.prob.min() and r1.prob.max() <= 1.0 and r1.seconds > 0
    assert s1.extra["box"].sum() == 10 * 10 * 6 and state.extra["box"].sum() == 0
    s2, r2 = method.step(s1, [Click(FG, (8, 8, 4)), Click(BG, (0, 0, 0))], rng=rng)
    assert s2.clicks == (*box, Click(FG, (8, 8, 4)), Click(BG, (0, 0, 0)))
    assert s2.extra["fg"][8, 8, 4] == 1.0 and s1.extra["fg"].max() == 0.0
    np.testing.assert_array_equal(s2.extra["prev"], r2.prob)
    s3, r3 = method.step(s2, [], rng=rng)  # no new clicks: the result stays
    assert s3 is s2 and r3.prob is s2.prob


def test_steps_are_deterministic(method):
    crop = _crop()
    clicks = [Click(FG, (8, 8, 4))]
    a = method.step(method.start(crop), clicks, rng=np.random.default_rng(0))[1].prob
    b = method.step(method.start(crop), clicks, rng=np.random.default_rng(99))[1].prob
    np.testing.assert_array_equal(a, b)


def test_roi_as_box_and_init_prob(method):
    crop = _crop()
    roi_method = GeneralistMethod(method.net, GRID, roi_as_box=True)
    state = roi_method.start(crop)
    assert state.extra["box"].min() == 1.0
    s1, r1 = roi_method.step(state, [], rng=np.random.default_rng(0))  # the crop is the box
    assert s1 is not state and r1.prob.shape == GRID
    assert roi_method.step(s1, [], rng=np.random.default_rng(0))[0] is s1
    init = np.zeros(GRID, np.float32)
    assert method.start(crop, init_prob=init).prob is not None
    with pytest.raises(InputError, match="init_prob"):
        method.start(crop, init_prob=np.zeros((4, 4, 4), np.float32))
    with pytest.raises(InputError, match="grid"):
        method.start(make_crop(crop.image, Box((0, 0, 0), GRID), grid=(8, 8, 8)))


def _probs(method, steps, roi_as_box=False):
    """The probability after each step of ``steps`` (lists of clicks) on :func:`_crop`."""
    method.roi_as_box = roi_as_box
    state, out, rng = method.start(_crop()), [], np.random.default_rng(0)
    for clicks in steps:
        state, result = method.step(state, clicks, rng=rng)
        out.append(result.prob)
    method.roi_as_box = False
    return out


def test_box_weights_run_every_input_with_a_box_and_only_those(method):
    torch.manual_seed(1)
    other = GeneralistNet(TINY)
    both = GeneralistMethod(method.net, GRID, box_net=other)
    only_box = GeneralistMethod(other, GRID)
    run = _probs

    points = [[Click(FG, (8, 8, 4))], [Click(BG, (2, 2, 2))]]
    for a, b in zip(run(both, points), run(method, points), strict=True):
        np.testing.assert_array_equal(a, b)  # no box: the first weights
    boxed = [[Click(BOX, (3, 3, 1)), Click(BOX, (12, 12, 7))], [Click(FG, (8, 8, 4))]]
    for a, b in zip(run(both, boxed), run(only_box, boxed), strict=True):
        np.testing.assert_array_equal(a, b)  # a box, then clicks: the box weights
    for a, b in zip(run(both, points, True), run(only_box, points, True), strict=True):
        np.testing.assert_array_equal(a, b)  # the ROI as the box counts as a box


def test_a_slice_box_prompt_is_encoded_as_drawn_on_its_middle_slice(method):
    crop, box = _crop(), [Click(BOX, (3, 3, 1)), Click(BOX, (12, 12, 6))]
    told = GeneralistMethod(method.net, GRID, slice_boxes=True)
    state, _ = told.step(told.start(crop), box, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(state.extra["box"], slice_box_map(GRID, (3, 3, 1), (12, 12, 6)))
    plain, _ = method.step(method.start(crop), box, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(plain.extra["box"], box_map(GRID, (3, 3, 1), (12, 12, 6)))


def test_slice_box_weights_run_a_box_drawn_on_one_slice_and_nothing_else(method):
    torch.manual_seed(2)
    box_net, slice_net = GeneralistNet(TINY), GeneralistNet(TINY)
    three = GeneralistMethod(method.net, GRID, box_net=box_net, slice_box_net=slice_net)
    assert not three.slice_boxes and three.for_slice_boxes() is not three
    told = three.for_slice_boxes()
    assert told.slice_boxes and not three.slice_boxes  # a copy; the original is unchanged
    assert method.for_slice_boxes() is method  # no slice-box weights: a 3D box stays one
    box, run = [Click(BOX, (3, 3, 1)), Click(BOX, (12, 12, 6))], _probs

    alone = GeneralistMethod(slice_net, GRID, slice_boxes=True)
    boxed = [box, [Click(FG, (8, 8, 4))]]
    for a, b in zip(run(told, boxed), run(alone, boxed), strict=True):
        np.testing.assert_array_equal(a, b)  # a slice box, then a click: the slice weights
    three_d = GeneralistMethod(box_net, GRID)
    for a, b in zip(run(three, boxed), run(three_d, boxed), strict=True):
        np.testing.assert_array_equal(a, b)  # not told: the box weights, a 3D box
    points = [[Click(FG, (8, 8, 4))]]
    for a, b in zip(run(told, points, True), run(three_d, points, True), strict=True):
        np.testing.assert_array_equal(a, b)  # the ROI as the box is a 3D box
    np.testing.assert_array_equal(run(told, points)[0], run(method, points)[0])  # no box


def test_a_logit_offset_lowers_the_threshold_of_the_returned_probability(method):
    crop, clicks = _crop(), [Click(FG, (8, 8, 4))]
    plain_state, plain = method.step(method.start(crop), clicks, rng=np.random.default_rng(0))
    shifted_method = GeneralistMethod(method.net, GRID, logit_offset=0.847)  # threshold 0.3
    state, shifted = shifted_method.step(
        shifted_method.start(crop), clicks, rng=np.random.default_rng(0)
    )
    near = np.abs(plain.prob - 0.3) < 1e-3  # float rounding at the threshold itself
    np.testing.assert_array_equal((shifted.prob > 0.5)[~near], (plain.prob > 0.3)[~near])
    np.testing.assert_array_equal(state.extra["prev"], plain_state.extra["prev"])  # raw kept
    assert np.all(shifted.prob > plain.prob - 1e-6) and np.any(shifted.prob > plain.prob + 0.01)
    box = [Click(BOX, (3, 3, 1)), Click(BOX, (12, 12, 6))]
    boxed = GeneralistMethod(method.net, GRID, box_logit_offset=0.847)  # the box step only
    s1, r1 = boxed.step(boxed.start(crop), box, rng=np.random.default_rng(0))
    p1 = method.step(method.start(crop), box, rng=np.random.default_rng(0))[1].prob
    assert np.any(r1.prob > p1 + 0.01) and np.array_equal(s1.extra["prev"], p1)
    r2 = boxed.step(s1, clicks, rng=np.random.default_rng(0))[1]
    p2 = method.step(
        method.step(method.start(crop), box, rng=np.random.default_rng(0))[0],
        clicks,
        rng=np.random.default_rng(0),
    )[1]
    np.testing.assert_array_equal(r2.prob, p2.prob)  # a click step: the plain threshold


def test_local_changes_keep_only_the_pieces_next_to_a_click():
    old = np.zeros((12, 12, 12), np.float32)
    old[2:5, 2:5, 2:5] = 0.9  # a correct piece far from the click
    new = np.zeros_like(old)
    new[7:10, 7:10, 7:10] = 0.8  # added where the user clicked
    new[0, 0, 0] = 0.7  # added far away
    kept = keep_local_changes(old, new, [(8, 8, 8)])
    np.testing.assert_array_equal(kept[7:10, 7:10, 7:10], new[7:10, 7:10, 7:10])  # clicked: new
    np.testing.assert_array_equal(kept[2:5, 2:5, 2:5], old[2:5, 2:5, 2:5])  # far loss reverts
    assert kept[0, 0, 0] == 0.0 and kept.dtype == np.float32  # so does the far gain
    touching = keep_local_changes(old, new, [(10, 10, 10)])  # one voxel off the piece
    np.testing.assert_array_equal(touching[7:10, 7:10, 7:10], new[7:10, 7:10, 7:10])
    np.testing.assert_array_equal(keep_local_changes(old, old, [(1, 1, 1)]), old)


def test_a_local_method_keeps_correction_clicks_near_them_once_a_box_is_given(method):
    first = np.zeros(GRID, np.float32)
    first[4:12, 4:12, 2:6] = 0.9
    second = first.copy()
    second[0:2, 0:2, 0:2] = 0.8  # a gain next to the click
    second[14:16, 14:16, 6:8] = 0.8  # a gain far from it
    second[4:12, 4:12, 2:6] = 0.2  # the correct mask lost, not touching the click

    class Scripted(GeneralistMethod):
        outputs: list = []

        def predict(self, channels, *, flip=True, slice_box=False):
            return self.outputs.pop(0)

    crop, rng = _crop(), np.random.default_rng(0)
    for local, box in [(False, True), (True, False), (True, True)]:
        scripted = Scripted(method.net, GRID, local=local, roi_as_box=box)
        scripted.outputs = [first.copy(), second.copy()]
        s1, r1 = scripted.step(scripted.start(crop), [Click(FG, (8, 8, 4))], rng=rng)
        np.testing.assert_array_equal(r1.prob, first)  # the first step is global
        s2, r2 = scripted.step(s1, [Click(FG, (1, 1, 1))], rng=rng)
        want = keep_local_changes(first, second, [(1, 1, 1)]) if local and box else second
        np.testing.assert_array_equal(r2.prob, want)
        np.testing.assert_array_equal(s2.extra["prev"], r2.prob)  # the next step reads it
    assert r2.prob[0, 0, 0] == second[0, 0, 0] and r2.prob[15, 15, 7] == 0.0
    np.testing.assert_array_equal(r2.prob[4:12, 4:12, 2:6], first[4:12, 4:12, 2:6])


def test_a_session_drives_it_with_a_box_prompt(method):
    from mecca.io import Volume
    from mecca.session import Session

    rng = np.random.default_rng(0)
    gt = sphere((40, 40, 20), (20, 18, 10), 6)
    vol = Volume((gt * 100 + rng.normal(0, 10, gt.shape)).astype(np.float32), np.eye(4))
    roi, corners = box_prompt(Box.from_mask(gt), vol.shape)
    session = Session(vol, roi, method)
    assert session.grid == method.grid_for(roi.shape) == GRID  # an ROI, not a box prompt
    session.add_clicks([*corners, Click(FG, (20, 18, 10))])
    result = session.step()
    assert result.mask.shape == vol.shape and result.prob_box.shape == roi.shape
    with pytest.raises(InputError, match="cannot take edge"):
        session.add_click(InteractionKind.EDGE, (20, 18, 10))


# ----------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def cache(phantoms: Path, tmp_path_factory) -> Path:
    top = tmp_path_factory.mktemp("cache")
    return build_cache([phantoms], top, held_out=HeldOut(("*:distractor",)), synthetic=3)


def test_cache_keeps_trained_targets_only(cache):
    index = json.loads(cache.read_text())
    names = {d["name"]: d for d in index["datasets"]}
    assert set(names) == {"ph", "synthetic"}
    assert len(names["ph"]["cases"]) == 3  # the train split
    assert all(set(c["targets"]) == {"lesion"} for c in names["ph"]["cases"])
    assert HeldOut(("chaos_mr", "a:b")).target("chaos_mr", "liver")
    assert HeldOut(("a:b",)).target("a", "b") and not HeldOut(("a:b",)).target("a", "c")


def test_large_synthetic_volumes_are_a_dataset_of_the_cache(phantoms, tmp_path):
    held = HeldOut(("*:distractor",))
    index = build_cache([phantoms], tmp_path, held_out=held, large_synthetic=2)
    names = {d["name"]: d for d in json.loads(index.read_text())["datasets"]}
    assert set(names) == {"ph", "synthetic_large"} and len(names["synthetic_large"]["cases"]) == 2
    assert index.parent.name == cache_key([str(phantoms)], held, "train", 0, 0, 2)
    before = cache_key([str(phantoms)], held, "train", 400, 0)  # caches built before it
    assert cache_key([str(phantoms)], held, "train", 400, 0, 0) == before
    organ = build_cache([phantoms], tmp_path, held_out=held, large_synthetic=2, organ_only=True)
    assert organ != index  # a cache of its own
    large = {d["name"]: d for d in json.loads(organ.read_text())["datasets"]}["synthetic_large"]
    assert all(set(c["targets"]) == {"object_1"} for c in large["cases"])
    assert any(len(c["targets"]) > 1 for c in names["synthetic_large"]["cases"])
    vessels = build_cache(
        [phantoms], tmp_path, held_out=held, large_synthetic=2, organ_vessels=True
    )
    assert vessels not in (index, organ)
    assert vessels.parent.name == cache_key([str(phantoms)], held, "train", 0, 0, 2, False, True)


def test_sampler_draws_prompted_crops(cache):
    sampler = Sampler(cache, SamplerConfig(grid=GRID))
    rng = np.random.default_rng(0)
    modes = set()
    for _ in range(30):
        s = sampler.sample(rng)
        modes.add(s.mode)
        for a in (s.image, s.target, s.prev, s.fg, s.bg, s.box):
            assert a.shape == GRID and a.dtype == np.float32 and np.isfinite(a).all()
        assert 0 <= s.target.min() and s.target.max() <= 1 and (s.target > 0.5).sum() >= 3
        if s.mode == "roi_box":
            assert s.box.min() == 1.0
        elif s.mode == "points":
            assert max(s.fg.max(), s.bg.max()) == 1.0 and s.box.max() == 0.0
        else:
            assert s.box.max() == 1.0 and s.box.min() == 0.0
    assert modes == {"box", "roi_box", "points"}


def test_click_roi_samples_are_cropped_around_a_target_voxel(cache):
    cfg = SamplerConfig(grid=GRID, p_box=0.0, p_roi_box=0.0, p_click_roi=1.0, p_init=0.0)
    sampler = Sampler(cache, cfg)
    rng = np.random.default_rng(2)
    for _ in range(10):
        s = sampler.sample(rng)
        assert s.mode == "click_roi" and s.box.max() == 0.0
        assert s.fg.max() == 1.0  # the first click, at the object's deepest voxel in the crop
        assert (s.target > 0.5).sum() >= 3


def test_first_click_samples_hold_one_foreground_click_of_the_named_dataset(cache):
    sampler = Sampler(cache, SamplerConfig(grid=GRID))  # p_click_roi 0: forced all the same
    rng = np.random.default_rng(4)
    for _ in range(8):
        s = sampler.first_click_sample(rng, "synthetic")
        assert s.mode == "first_click" and s.dataset == "synthetic"
        assert s.fg.max() == 1.0 and s.bg.max() == 0.0 and s.box.max() == 0.0
        assert s.prev.max() == 0.0  # nothing before the click
        clicked = np.argwhere(s.fg == 1.0)
        assert len(clicked) == 1 and s.target[tuple(clicked[0])] > 0.5  # inside the object
    with pytest.raises(ConfigError, match="no dataset 'liver'"):
        sampler.first_click_sample(rng, "liver")
    drawn = {sampler.first_click_sample(rng).dataset for _ in range(12)}
    assert drawn == {"ph", "synthetic"}  # unnamed: any dataset, by weight


class _Recording(torch.nn.Module):
    """Keeps every input the wrapped net sees."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.seen = net, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.net(x)


def test_first_click_samples_skip_the_batchs_correction_rounds(cache, phantoms, tmp_path):
    cfg = _tiny_config(phantoms, tmp_path / "cache", p_first_click=0.5)
    sampler, rng = Sampler(cache, cfg.sampler_config()), np.random.default_rng(0)
    samples = [sampler.first_click_sample(rng, "synthetic"), sampler.sample(rng)]
    net = _Recording(GeneralistNet(cfg.net_config()))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    train_step(net, opt, samples, 2, cfg, torch.device("cpu"), rng)
    assert len(net.seen) == 3  # two rounds without gradient, then the trained forward
    trained = net.seen[-1].numpy()
    first = samples[0]
    for c, a in enumerate((first.prev, first.fg, first.bg, first.box), start=1):
        np.testing.assert_array_equal(trained[0, c], a)  # its first prompt, untouched
    assert trained[1, 1].max() > 0  # the other sample carries the rounds' probability
    with pytest.raises(ConfigError, match="p_first_click"):
        _tiny_config(phantoms, tmp_path / "cache", p_first_click=1.5)
    every = _tiny_config(phantoms, tmp_path / "cache", p_first_click=1.0)
    assert (train(every, tmp_path / "run") / "last.pt").is_file()  # first clicks only


def test_fine_grid_batches(cache, phantoms, tmp_path):
    sampler = Sampler(cache, SamplerConfig(grid=GRID))
    s = sampler.sample(np.random.default_rng(0), (20, 20, 12))
    assert s.image.shape == s.target.shape == s.box.shape == (20, 20, 12)
    cfg = _tiny_config(phantoms, tmp_path / "cache", fine_grid_share=1.0, iterations=2)
    assert cfg.fine_grid == (20, 20, 12)  # widths (8, 16): factor 4
    train(cfg, tmp_path / "run")  # every batch on the finer grid
    with pytest.raises(ConfigError, match="fine_grid_share"):
        _tiny_config(phantoms, tmp_path / "cache", fine_grid_share=1.5)


def test_slice_box_samples_carry_the_middle_slices_box(cache):
    sampler = Sampler(cache, SamplerConfig(grid=GRID, p_box=1.0, p_roi_box=0.0, p_slice_box=1.0))
    rng = np.random.default_rng(1)
    for _ in range(10):
        s = sampler.sample(rng)
        assert s.mode == "slice_box"
        corners = middle_slice_box(s.target > 0.5)
        np.testing.assert_array_equal(s.box, box_map(GRID, *corners))
        # the crop is the box grown by a quarter per side: the box lies off the crop's edges
        ii, jj, kk = np.nonzero(s.box)
        assert ii.min() > 0 and jj.min() > 0 and ii.max() < GRID[0] - 1
    told = SamplerConfig(
        grid=GRID, p_box=1.0, p_roi_box=0.0, p_slice_box=1.0, slice_box_encoding=True
    )
    s = Sampler(cache, told).sample(np.random.default_rng(1))
    corners = middle_slice_box(s.target > 0.5)
    np.testing.assert_array_equal(s.box > 0, box_map(GRID, *corners) > 0)
    drawn = np.flatnonzero((s.box == 1.0).any(axis=(0, 1)))  # a slab of whole slices
    mid = corners[0][2] + (corners[1][2] - corners[0][2] + 1) // 2
    assert mid in drawn and np.all(np.diff(drawn) == 1) and (s.box == 0.5).any()
    np.testing.assert_array_equal(s.box, slice_box_map(GRID, *corners, len(drawn)))


def test_box_crops_are_widened_to_the_least_extent_as_box_prompt_widens(cache):
    def box_share(extent: tuple[int, int, int] | None) -> float:
        cfg = SamplerConfig(grid=GRID, p_box=1.0, p_roi_box=0.0, box_min_extent=extent)
        sampler, rng, shares = Sampler(cache, cfg), np.random.default_rng(5), []
        for _ in range(12):
            s = sampler.sample(rng)
            assert s.mode == "box" and s.box.any()
            shares.append(s.box.mean())
        return float(np.median(shares))

    # the cached regions are wider than their objects' boxes, so a large least extent
    # leaves the box a smaller share of the crop
    assert box_share((200, 200, 200)) < 0.5 * box_share(None)


def test_loose_box_samples_carry_a_box_with_room_to_spare(cache, phantoms, tmp_path):
    def box_over_object(p_loose_box: float) -> float:
        cfg = SamplerConfig(grid=GRID, p_box=1.0, p_roi_box=0.0, p_loose_box=p_loose_box)
        sampler, rng, ratios = Sampler(cache, cfg), np.random.default_rng(3), []
        for _ in range(20):
            s = sampler.sample(rng)
            assert s.mode == "box"
            found = np.argwhere(s.target > 0.5)
            bbox = np.prod(found.max(0) - found.min(0) + 1)
            ratios.append(s.box.sum() / bbox)
        return float(np.median(ratios))

    tight, loose = box_over_object(0.0), box_over_object(1.0)
    assert 0.7 < tight < 1.3 and loose > 1.25 * tight, (tight, loose)
    with pytest.raises(ConfigError, match="p_loose_box"):
        _tiny_config(phantoms, tmp_path / "cache", p_loose_box=2.0)


def test_middle_slice_box_is_the_cvpr25_box():
    mask = np.zeros((20, 20, 9), bool)
    mask[5:8, 5:8, 1:4] = True  # slices 1-3: a small part
    mask[2:15, 3:18, 4:8] = True  # slices 4-7: wider; the middle of 1..7 is slice 4
    assert middle_slice_box(mask) == ((2, 3, 1), (14, 17, 7))
    mask[:, :, 4] = False  # middle of 1, 2, 3, 5, 6, 7 (index 3) is slice 5
    assert middle_slice_box(mask) == ((2, 3, 1), (14, 17, 7))
    mask[2:15, 3:18, 5] = False
    mask[9:11, 9:12, 5] = True
    assert middle_slice_box(mask) == ((9, 9, 1), (10, 11, 7))
    assert middle_slice_box(np.zeros((3, 3, 3), bool)) is None
    rng = np.random.default_rng(0)
    for _ in range(5):  # the same box as the benchmark's protocol gives
        blob = ndimage.gaussian_filter(rng.random((16, 14, 12)), 2) > 0.52
        organisers = cvpr25.box_to_roi(cvpr25.middle_slice_box(cvpr25.to_zyx(blob)))
        first, last = middle_slice_box(blob)
        assert (organisers.start, organisers.stop) == (first, tuple(v + 1 for v in last))


def test_unrotated_crops_resample_like_make_crop():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(30, 26, 14)).astype(np.float32)
    label = sphere((30, 26, 14), (15, 12, 7), 5).astype(np.uint8)
    c0, c1 = np.array([3, 2, 1]), np.array([27, 25, 13])
    img, lab = resample_crop(image, label, c0, c1, GRID, values=[1])
    box = Box(tuple(c0), tuple(c1))
    np.testing.assert_allclose(img, resample_box(image, box, GRID), atol=1e-5)
    np.testing.assert_allclose(lab, resample_box(label.astype(np.float32), box, GRID), atol=1e-5)
    rot_img, rot_lab = resample_crop(image, label, c0, c1, GRID, 10.0, values=[1])
    assert rot_img.shape == GRID and 0 <= rot_lab.min() and rot_lab.max() <= 1


# ----------------------------------------------------------------------------- training


def test_loss_and_schedule():
    target = torch.zeros(2, 1, 4, 4, 4)
    target[:, :, 1:3, 1:3, 1:3] = 1
    good, _ = dice_bce(20 * (2 * target - 1), target)
    bad, parts = dice_bce(-20 * (2 * target - 1), target)
    assert float(good) < 0.01 < 1.5 < float(bad) and parts["dice_loss"] > 0.9
    cfg = GeneralistConfig(iterations=100, warmup=10, lr=1e-3, min_lr=1e-5)
    assert learning_rate(cfg, 0) == pytest.approx(1e-4)
    assert learning_rate(cfg, 10) == pytest.approx(1e-3)
    assert learning_rate(cfg, 100) == pytest.approx(1e-5)


class _EmptyNet(torch.nn.Module):
    """Predicts nothing anywhere: every correction round sees a mask that misses all."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x[:, :1], -5.0)


def test_correction_rounds_with_turns_click_the_kind_drawn():
    net = _EmptyNet()
    gt = sphere(GRID, (8, 8, 4), 4)[None]
    x = np.zeros((1, 5, *GRID), np.float32)
    kinds = set()
    for seed in range(8):
        rng = np.random.default_rng(seed)
        out = correction_round(net, x, gt, torch.device("cpu"), rng, turns=[True])
        kinds |= {c for c, m in (("fg", out[0, 2]), ("bg", out[0, 3])) if m.max() == 1.0}
        assert (out[0, 2].max() == 1.0) + (out[0, 3].max() == 1.0) == 1  # one click a round
    assert kinds == {"fg", "bg"}  # a background click although only misses exist
    plain = correction_round(net, x, gt, torch.device("cpu"), np.random.default_rng(0))
    assert plain[0, 3].max() == 0.0 and plain[0, 2].max() == 1.0  # the error user: inside
    with pytest.raises(ConfigError, match="p_turns"):
        GeneralistConfig(p_turns=1.5)


def _tiny_config(phantoms: Path, cache_dir: Path, **kw) -> GeneralistConfig:
    values = dict(
        datasets=(str(phantoms),),
        held_out=("*:distractor",),
        val_cases=1,
        val_steps=2,
        grid=GRID,
        widths=(8, 16),
        blocks=(1, 1),
        fine=4,
        synthetic_volumes=2,
        batch_size=2,
        iterations=4,
        warmup=1,
        checkpoint_every=2,
        val_every=2,
        log_every=2,
        cache_dir=str(cache_dir),
    )
    values.update(kw)
    return GeneralistConfig(**values)


def test_training_logs_validates_checkpoints_and_resumes(phantoms, tmp_path):
    cfg = _tiny_config(phantoms, tmp_path / "cache")
    out = train(cfg, tmp_path / "run")
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    kinds = [r["type"] for r in records]
    assert kinds == ["start", "train", "val", "train", "val"]
    val = records[2]
    assert set(val["groups"]) == {"ph", "unseen:ph"}
    assert len(val["groups"]["ph"]["dice_per_step"]) == 3  # the box, then 2 clicks
    assert (out / "last.pt").is_file() and (out / "best.pt").is_file()
    train(_tiny_config(phantoms, tmp_path / "cache", iterations=6), out)  # resumes at 4
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    starts = [r for r in records if r["type"] == "start"]
    assert [s["iteration"] for s in starts] == [0, 4]
    assert records[-1] == {**records[-1], "type": "val", "iteration": 6}
    size = (out / "log.jsonl").stat().st_size
    train(_tiny_config(phantoms, tmp_path / "cache", iterations=6), out)  # complete: nothing
    assert (out / "log.jsonl").stat().st_size == size


def test_snapshots_keep_the_weights_along_the_run_from_their_first_iteration(phantoms, tmp_path):
    cfg = _tiny_config(phantoms, tmp_path / "cache", snapshot_every=1, snapshot_from=3)
    out = train(cfg, tmp_path / "run")
    assert sorted(p.name for p in out.glob("snapshot_*.pt")) == [
        "snapshot_000003.pt",
        "snapshot_000004.pt",
    ]
    snap, last = (
        torch.load(p, weights_only=True) for p in (out / "snapshot_000004.pt", out / "last.pt")
    )
    assert snap["iteration"] == 4
    assert all(torch.equal(snap["net"][k], v) for k, v in last["net"].items())
    with pytest.raises(ConfigError, match="snapshot"):
        GeneralistConfig(snapshot_every=-1)


def test_a_stop_request_checkpoints_without_training(phantoms, tmp_path, cache):
    cfg = _tiny_config(phantoms, tmp_path / "cache")
    out = tmp_path / "stopped"
    out.mkdir()
    net, opt, st = _setup(cfg, out, False, torch.device("cpu"))
    stop = _Stop()
    stop(15, None)
    _loop(
        cfg, net, opt, st, Sampler(cache, cfg.sampler_config()), [], out, torch.device("cpu"), stop
    )
    assert (out / "last.pt").is_file() and st.iteration == 0


def test_bundle_round_trip(phantoms, tmp_path):
    run = train(_tiny_config(phantoms, tmp_path / "cache", iterations=2), tmp_path / "run")
    bundle = export_bundle(run, tmp_path / "bundle", checkpoint="best.pt")
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["held_out"] == ["*:distractor"] and meta["grid"] == list(GRID)
    assert "Held out" in (bundle / "docs" / "README.md").read_text()
    with pytest.raises(OverwriteError):
        export_bundle(run, bundle)
    crop = _crop()
    clicks = [Click(FG, (8, 8, 4))]
    probs = []
    for path in (bundle, run, run / "best.pt"):
        m = GeneralistMethod.load(path)
        assert m.grid == GRID
        probs.append(m.step(m.start(crop), clicks, rng=np.random.default_rng(0))[1].prob)
    np.testing.assert_allclose(probs[0], probs[1], atol=5e-3)  # float16 weights
    np.testing.assert_array_equal(probs[1], probs[2])
    weights = bundle / "models" / "model.pt"
    weights.write_bytes(weights.read_bytes() + b"0")
    with pytest.raises(InputError, match="SHA-256"):
        load_weights(bundle)


def test_box_weights_in_a_bundle(phantoms, tmp_path):
    run = train(_tiny_config(phantoms, tmp_path / "cache", iterations=2), tmp_path / "run")
    bundle = export_bundle(run, tmp_path / "bundle", checkpoint="best.pt")
    assert load_box_weights(bundle, GRID) is None and GeneralistMethod.load(bundle).box_net is None
    add_box_weights(bundle, run / "last.pt", "Made for the test.")
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["box_model"]["description"] == "Made for the test."
    assert "models/box_model.pt" in (bundle / "docs" / "README.md").read_text()
    box_net = GeneralistMethod.load(bundle).box_net
    last, _ = load_weights(run / "last.pt")
    assert box_net is not None
    for name, value in last.state_dict().items():  # float16 in the bundle
        torch.testing.assert_close(box_net.state_dict()[name], value, atol=2e-3, rtol=2e-3)
    assert load_box_weights(run, GRID) is None  # a run folder has none
    with pytest.raises(InputError, match="differs"):
        load_box_weights(bundle, (32, 32, 16))
    with pytest.raises(InputError, match="not a generalist bundle"):
        add_box_weights(tmp_path / "nothing", run / "last.pt", "")
    weights = bundle / "models" / "box_model.pt"
    weights.write_bytes(weights.read_bytes() + b"0")
    with pytest.raises(InputError, match="box_model.pt does not match"):
        GeneralistMethod.load(bundle)


def test_slice_box_weights_in_a_bundle(phantoms, tmp_path):
    run = train(_tiny_config(phantoms, tmp_path / "cache", iterations=2), tmp_path / "run")
    bundle = export_bundle(run, tmp_path / "bundle", checkpoint="best.pt")
    assert GeneralistMethod.load(bundle).slice_box_net is None
    add_box_weights(bundle, run / "last.pt", "Made for the slice test.", kind="slice_box")
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["slice_box_model"]["description"] == "Made for the slice test."
    assert "box_model" not in meta  # the other set is untouched (absent here)
    card = (bundle / "docs" / "README.md").read_text()
    assert "models/slice_box_model.pt" in card and "Made for the slice test." in card
    loaded = GeneralistMethod.load(bundle)
    assert loaded.box_net is None and loaded.slice_box_net is not None
    last, _ = load_weights(run / "last.pt")
    for name, value in last.state_dict().items():  # float16 in the bundle
        torch.testing.assert_close(
            loaded.slice_box_net.state_dict()[name], value, atol=2e-3, rtol=2e-3
        )
    assert loaded.for_slice_boxes().slice_boxes
    with pytest.raises(InputError, match="unknown box weights"):
        add_box_weights(bundle, run / "last.pt", "", kind="tight")
    weights = bundle / "models" / "slice_box_model.pt"
    weights.write_bytes(weights.read_bytes() + b"0")
    with pytest.raises(InputError, match="slice_box_model.pt does not match"):
        GeneralistMethod.load(bundle)
    export_bundle(run, bundle, checkpoint="best.pt", force=True)  # a new export drops them
    assert not weights.exists() and GeneralistMethod.load(bundle).slice_box_net is None


def test_command_lines(phantoms, tmp_path):
    import yaml

    from mecca.methods.generalist import bundle as bundle_cli
    from mecca.methods.generalist import train as train_cli

    cfg = _tiny_config(phantoms, tmp_path / "cache", iterations=2)
    path = tmp_path / "g.yaml"
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.__dict__.items()}
    path.write_text(yaml.safe_dump(values))
    run = tmp_path / "run"
    args = ["--config", str(path), "--out", str(run)]
    assert train_cli.main([*args, "--resume"]) == 2  # nothing to resume yet
    sets = ["--set", "warmup=2", "lr=0.002", "--set", "iterations=3"]  # listed and repeated
    assert train_cli.main([*args, *sets]) == 0
    assert (run / "best.pt").is_file()
    start = json.loads((run / "log.jsonl").read_text().splitlines()[0])["config"]
    assert (start["iterations"], start["warmup"], start["lr"]) == (3, 2, 0.002)
    assert bundle_cli.main([str(run), str(tmp_path / "b")]) == 0
    assert bundle_cli.main([str(run), str(tmp_path / "b")]) == 2  # not empty, no --force
    assert bundle_cli.main([str(run), str(tmp_path / "b"), "--box", "--description", "x"]) == 0
    assert (tmp_path / "b" / "models" / "box_model.pt").is_file()
    assert bundle_cli.main([str(run), str(tmp_path / "b"), "--slice-box"]) == 0
    assert (tmp_path / "b" / "models" / "slice_box_model.pt").is_file()
    with pytest.raises(SystemExit):  # one extra weight set at a time
        bundle_cli.main([str(run), str(tmp_path / "b"), "--box", "--slice-box"])
    assert bundle_cli.main([str(run), str(tmp_path / "b"), "--force"]) == 0  # a new export
    assert not (tmp_path / "b" / "models" / "slice_box_model.pt").exists()
    assert not (tmp_path / "b" / "models" / "box_model.pt").exists()  # drops the old ones


def test_a_new_run_starts_from_a_bundles_weights(phantoms, tmp_path, cache):
    run = train(_tiny_config(phantoms, tmp_path / "cache", iterations=2), tmp_path / "run")
    bundle = export_bundle(run, tmp_path / "bundle", checkpoint="last.pt")
    cfg = _tiny_config(phantoms, tmp_path / "cache", init_from=str(bundle))
    net, _, st = _setup(cfg, tmp_path / "second", False, torch.device("cpu"))
    start, _ = load_weights(bundle)
    assert st.iteration == 0
    for name, value in start.state_dict().items():
        torch.testing.assert_close(net.state_dict()[name], value)
    other = _tiny_config(phantoms, tmp_path / "cache", init_from=str(bundle), widths=(4, 8))
    with pytest.raises(ConfigError, match="another network"):
        _setup(other, tmp_path / "third", False, torch.device("cpu"))


def test_a_deeper_network_starts_from_a_trained_ones_weights(phantoms, tmp_path, cache):
    run = train(_tiny_config(phantoms, tmp_path / "cache", iterations=2), tmp_path / "run")
    cfg = _tiny_config(phantoms, tmp_path / "cache", init_from=str(run), blocks=(1, 3))
    deep, _, _ = _setup(cfg, tmp_path / "deeper", False, torch.device("cpu"))
    start, _ = load_weights(run)
    for name, value in start.state_dict().items():  # every trained weight copied
        torch.testing.assert_close(deep.state_dict()[name], value)
    added = [k for k in deep.state_dict() if k.startswith(("encoder.1.1.", "encoder.1.2."))]
    assert added and all(k in deep.state_dict() for k in added)
    for block in ("encoder.1.1", "encoder.1.2"):  # each added block passes its input on
        assert not deep.state_dict()[f"{block}.norm2.weight"].any()
        assert not deep.state_dict()[f"{block}.norm2.bias"].any()
    x = torch.randn(1, 5, *GRID)
    with torch.no_grad():
        # the same up to the added blocks' final leaky ReLU (0.01 x a negative feature)
        torch.testing.assert_close(deep.eval()(x), start.eval()(x), atol=0.05, rtol=0.0)
    deep_run = train(
        _tiny_config(phantoms, tmp_path / "cache", blocks=(2, 2), iterations=2), tmp_path / "deep"
    )
    fewer = _tiny_config(phantoms, tmp_path / "cache", init_from=str(deep_run))  # (1, 1)
    with pytest.raises(ConfigError, match="another network"):  # blocks are never dropped
        _setup(fewer, tmp_path / "fewer", False, torch.device("cpu"))


def test_its_grid_follows_the_roi_when_asked():
    assert GeneralistMethod(GeneralistNet(TINY), GRID).grid_for((99, 99, 99)) == GRID  # default
    m = GeneralistMethod(GeneralistNet(TINY), GRID)
    m.max_grid = m.finer_grid()  # factor 4: (20, 20, 12)
    assert m.max_grid == (20, 20, 12)
    assert m.grid_for((20, 22, 11)) == GRID  # at most 1.375 x the base grid
    assert m.grid_for((24, 10, 4)) == (20, 20, 12)  # 1.5 x along i
    assert m.grid_for((10, 10, 12)) == (20, 20, 12)  # 1.5 x along k
    assert GeneralistMethod(GeneralistNet(TINY), GRID, max_grid=GRID).grid_for((99, 99, 99)) == GRID
    image = np.random.default_rng(0).normal(size=(40, 40, 20)).astype(np.float32)
    state = m.start(make_crop(image, Box((0, 0, 0), (40, 40, 20)), grid=(20, 20, 12)))
    _, res = m.step(state, [Click(FG, (10, 10, 6))], rng=np.random.default_rng(0))
    assert res.prob.shape == (20, 20, 12)
    with pytest.raises(InputError, match="not one the model runs on"):
        m.start(make_crop(image, Box((0, 0, 0), (40, 40, 20)), grid=(24, 24, 12)))


def test_a_session_and_the_cvpr25_loop_crop_a_large_roi_finer():
    from mecca.io import Volume
    from mecca.session import Session

    m = GeneralistMethod(GeneralistNet(TINY), GRID, max_grid=(20, 20, 12))
    gt = sphere((48, 48, 24), (24, 24, 12), 9)
    image = (gt * 2.0 + np.random.default_rng(1).normal(0, 0.3, gt.shape)).astype(np.float32)
    small = Session(Volume(image, np.eye(4)), roi=Box((18, 18, 8), (31, 31, 17)), method=m)
    large = Session(Volume(image, np.eye(4)), roi=Box((10, 10, 2), (38, 38, 22)), method=m)
    assert small.grid == GRID and large.grid == (20, 20, 12)
    large.add_click(FG, (24, 24, 12))
    large.step()
    assert large.result is not None and large.result.mask.shape == gt.shape
    rec, _ = cvpr25.run_case(m, image, gt, (1.0, 1.0, 1.0), rng=np.random.default_rng(0))
    assert len(rec["steps"]) == 5


class _Batches(torch.nn.Module):
    """A network that records the batch size (the flipped copies) of each call."""

    def __init__(self, net: GeneralistNet) -> None:
        super().__init__()
        self.net, self.config, self.batches = net, net.config, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(int(x.shape[0]))
        return self.net(x)


def test_a_box_prompts_large_roi_runs_on_the_finer_grid_in_one_forward():
    from mecca.io import Volume
    from mecca.session import Session

    m = GeneralistMethod(GeneralistNet(TINY), GRID)
    assert m.grid_for((24, 10, 4)) == GRID  # points-only: the base grid
    assert m.grid_for((24, 10, 4), boxed=True) == (20, 20, 12)  # 1.5 x along i
    assert m.grid_for((20, 22, 11), boxed=True) == GRID  # at most 1.375 x
    assert GeneralistMethod(GeneralistNet(TINY), GRID, roi_as_box=True).grid_for((24, 10, 4)) == (
        20,
        20,
        12,
    )
    assert (
        GeneralistMethod(GeneralistNet(TINY), GRID, box_fine=False).grid_for(
            (24, 10, 4), boxed=True
        )
        == GRID
    )
    net = _Batches(GeneralistNet(TINY))
    m = GeneralistMethod(net, GRID)  # type: ignore[arg-type]
    for grid, copies in ((GRID, 1 + len(m.flips)), ((20, 20, 12), 1 + len(m.fine_flips))):
        m.predict(np.zeros((5, *grid), np.float32))
        assert net.batches[-1] == copies
    assert (1 + len(m.flips), 1 + len(m.fine_flips)) == (4, 1)

    gt = sphere((48, 48, 24), (24, 24, 12), 9)
    vol = Volume(
        (gt * 2.0 + np.random.default_rng(1).normal(0, 0.3, gt.shape)).astype(np.float32), np.eye(4)
    )
    boxed = Session(vol, roi=Box.from_mask(gt), method=m, roi_as_box=True)
    points = Session(vol, roi=Box((10, 10, 2), (38, 38, 22)), method=m)
    assert boxed.grid == (20, 20, 12) and points.grid == GRID
    result = boxed.step()  # the box alone
    assert result.mask.shape == gt.shape and net.batches[-1] == 1
    boxed.add_click(FG, (24, 24, 12))
    boxed.step()
    assert boxed.grid == (20, 20, 12) and net.batches[-1] == 1
    net.batches.clear()
    rec, _ = cvpr25.run_case(m, vol.array, gt, (1.0, 1.0, 1.0), rng=np.random.default_rng(0))
    assert len(rec["steps"]) == 5 and set(net.batches) == {1}  # the box's ROI: the finer grid
