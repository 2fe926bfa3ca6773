"""Probabilistic partial segmentation (seed 003): network shapes, enforced guarantees, the
training-pair generator, the loss, the resumable trainer and bad inputs."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import sphere
from mecca.episode import pick_closest, proposal_dice
from mecca.errors import ConfigError, InputError, OverwriteError
from mecca.methods.base import Proposal
from mecca.methods.partial import model as pm
from mecca.methods.partial import train as pt
from mecca.methods.partial.model import (
    PartialConfig,
    PartialProposer,
    build_network,
    kl_to_standard_normal,
    make_pair,
    partial_loss,
    random_shapes,
    soft_dice_loss,
)
from mecca.methods.partial.train import train_partial
from mecca.nets.cvae import CVAEConfig, PartialCVAE, enforce

TINY2 = PartialConfig(
    dims=2,
    grid=(16, 16),
    enc_widths=(4, 4),
    dec_width=8,
    latent_size=4,
    latent_grid=2,
    z_channels=2,
    batch_size=4,
    steps=3,
    log_every=1,
    checkpoint_every=100,
)
TINY3 = replace(TINY2, dims=3, grid=(12, 12, 8))


def _square_data(n: int, rng: np.random.Generator, grid=(16, 16)):
    """Bright squares (the labels) on a noisy background."""
    images, labels = [], []
    for _ in range(n):
        label = np.zeros(grid, bool)
        a, b = rng.integers(2, 7, size=2)
        label[a : a + 7, b : b + 7] = True
        images.append(label + rng.normal(0, 0.1, grid).astype(np.float32))
        labels.append(label)
    return images, labels


def _random_input(shape, rng):
    x_m = rng.random(shape) < 0.4
    x_s = x_m & (rng.random(shape) < 0.5)
    return rng.normal(size=shape).astype(np.float32), x_m, x_s


def _assert_guarantees(p: Proposal, x_m, x_s):
    assert p.mask.dtype == bool and p.seg.dtype == bool
    assert p.mask.shape == x_m.shape == p.seg.shape
    assert (p.mask[x_m]).all(), "the input's decided voxels must stay decided"
    assert (p.seg[x_m] == x_s[x_m]).all(), "the input segmentation must be kept"
    assert not (p.seg & ~p.mask).any(), "foreground only where decided"
    new = p.mask & ~x_m
    assert p.added_foreground == int((p.seg & new).sum())
    assert p.added_background == int((new & ~p.seg).sum())


# --- network -------------------------------------------------------------------------------


@pytest.mark.parametrize("grid", [(16, 16), (15, 13), (12, 10, 9), (8, 8, 8)])
def test_network_shapes_in_2d_and_3d_including_odd_sizes(grid):
    net = PartialCVAE(CVAEConfig(dims=len(grid), enc_widths=(4, 4), dec_width=4, latent_size=3))
    x, y = torch.rand(2, 3, *grid), torch.rand(2, 2, *grid)
    m, s, mu, logvar = net(x, y, torch.randn(2, 3))
    assert m.shape == s.shape == (2, 1, *grid)
    assert mu.shape == logvar.shape == (2, 3)
    assert net.decode_logits(x, torch.zeros(2, 3)).shape == (2, 2, *grid)


def test_network_refuses_wrong_channels_dims_and_latent():
    net = PartialCVAE(CVAEConfig(dims=2, enc_widths=(4,), dec_width=4, latent_size=3))
    with pytest.raises(ConfigError, match="dims=2"):
        net.decode(torch.rand(1, 3, 8, 8, 8), torch.zeros(1, 3))
    with pytest.raises(ConfigError, match="condition x"):
        net.decode(torch.rand(1, 2, 8, 8), torch.zeros(1, 3))
    with pytest.raises(ConfigError, match="z of shape"):
        net.decode(torch.rand(1, 3, 8, 8), torch.zeros(1, 5))
    with pytest.raises(ConfigError, match="dims"):
        CVAEConfig(dims=4)  # type: ignore[arg-type]


def test_enforce_keeps_the_input_for_any_logits():
    gen = torch.Generator().manual_seed(0)
    logits = 20 * torch.randn(3, 2, 9, 7, generator=gen)
    x_m = (torch.rand(3, 1, 9, 7, generator=gen) < 0.5).float()
    x_s = x_m * (torch.rand(3, 1, 9, 7, generator=gen) < 0.5).float()
    m, s = enforce(logits, x_m, x_s)
    inside = x_m.bool()
    assert (m[inside] == 1).all() and torch.equal(s[inside], x_s[inside])
    assert (s <= m).all() and (s >= 0).all() and (m <= 1).all()


def test_initialisation_is_seeded_and_leaves_torch_rng_alone():
    before = torch.get_rng_state()
    a, b = build_network(TINY2), build_network(TINY2)
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    c = build_network(replace(TINY2, seed=1))
    assert not torch.equal(a.head.weight, c.head.weight)


# --- guarantees on an untrained network ------------------------------------------------------


@pytest.mark.parametrize("cfg", [TINY2, TINY3], ids=["2d", "3d"])
def test_untrained_proposals_keep_the_guarantees(cfg):
    rng = np.random.default_rng(0)
    image, x_m, x_s = _random_input(cfg.grid, rng)
    proposer = PartialProposer(build_network(cfg))
    proposals = proposer.propose(image, x_m, x_s, 5, np.random.default_rng(1))
    assert len(proposals) == 5
    for p in proposals:
        _assert_guarantees(p, x_m, x_s)


@pytest.mark.parametrize(("bias_m", "bias_s"), [(-30.0, 30.0), (30.0, 30.0), (30.0, -30.0)])
def test_guarantees_hold_against_adversarial_weights(bias_m, bias_s):
    """Logits that say 'undecide everything' or 'foreground everywhere' cannot break them."""
    net = build_network(TINY2)
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.copy_(torch.tensor([bias_m, bias_s]))
    rng = np.random.default_rng(2)
    image, x_m, x_s = _random_input(TINY2.grid, rng)
    (p,) = PartialProposer(net).propose(image, x_m, x_s, 1, rng)
    _assert_guarantees(p, x_m, x_s)
    outside = ~x_m
    assert (p.mask[outside] == (bias_m > 0)).all()
    assert (p.seg[outside] == (bias_m > 0 and bias_s > 0)).all()


def test_proposals_are_deterministic_for_an_rng_and_sorted_by_size():
    rng = np.random.default_rng(3)
    image, x_m, x_s = _random_input(TINY2.grid, rng)
    proposer = PartialProposer(build_network(TINY2))
    a = proposer.propose(image, x_m, x_s, 10, np.random.default_rng(7))
    b = proposer.propose(image, x_m.astype(np.uint8), x_s.astype(int), 10, np.random.default_rng(7))
    assert [p.added for p in a] == sorted((p.added for p in a), reverse=True)
    for p, q in zip(a, b, strict=True):
        assert np.array_equal(p.mask, q.mask) and np.array_equal(p.seg, q.seg)


# --- training pairs ------------------------------------------------------------------------


def test_random_shapes_are_labels_in_range():
    labels = random_shapes((20, 18), 6, 2.0, np.random.default_rng(0))
    assert labels.shape == (20, 18) and labels.min() >= 0 and labels.max() < 6
    assert len(np.unique(labels)) > 2


@pytest.mark.parametrize("shape", [(24, 20), (14, 12, 10)])
def test_pair_generator_invariants(shape):
    if len(shape) == 3:
        truth = sphere(shape, (7, 6, 5), 4)
    else:
        truth = np.zeros(shape, bool)
        truth[5:15, 4:12] = True
    rng = np.random.default_rng(0)
    empty_inputs = 0
    for _ in range(60):
        p = make_pair(truth.astype(np.uint8), rng, n_shapes=6, max_added_shapes=2)
        assert all(a.dtype == bool and a.shape == shape for a in (p.x_m, p.x_s, p.y_m, p.y_s))
        assert not (p.x_m & ~p.y_m).any() and p.y_m.sum() > p.x_m.sum()  # strictly larger
        assert not (p.x_s & ~p.y_s).any()
        assert np.array_equal(p.x_s, truth & p.x_m) and np.array_equal(p.y_s, truth & p.y_m)
        empty_inputs += not p.x_m.any()
    assert 0 < empty_inputs < 60  # an empty input is possible, not the rule
    again = make_pair(truth, np.random.default_rng(5))
    assert np.array_equal(again.y_m, make_pair(truth, np.random.default_rng(5)).y_m)


def test_pair_generator_refuses_non_binary_truth():
    with pytest.raises(InputError, match="binary"):
        make_pair(np.full((8, 8), 2), np.random.default_rng(0))
    with pytest.raises(InputError, match="2D or 3D"):
        make_pair(np.zeros(8, bool), np.random.default_rng(0))


# --- loss ----------------------------------------------------------------------------------


def test_soft_dice_loss_matches_hand_values():
    t = torch.tensor([[1.0, 0.0]])
    assert soft_dice_loss(t, t).item() == pytest.approx(0.0)
    # 1 - (2*1 + 1) / (1 + (1 + 1) + 1) = 0.25
    assert soft_dice_loss(t, torch.tensor([[1.0, 1.0]])).item() == pytest.approx(0.25)
    w = torch.tensor([[1.0, 0.0]])  # the wrong voxel has no weight
    assert soft_dice_loss(t, torch.tensor([[1.0, 1.0]]), w).item() == pytest.approx(0.0)
    assert soft_dice_loss(torch.zeros(1, 3), torch.zeros(1, 3)).item() == pytest.approx(0.0)


def test_kl_matches_hand_values():
    zero = torch.zeros(2, 4)
    assert kl_to_standard_normal(zero, zero).item() == pytest.approx(0.0)
    assert kl_to_standard_normal(torch.ones(2, 4), zero).item() == pytest.approx(2.0)


def test_weighted_term_ignores_voxels_outside_the_new_region():
    shape = (2, 1, 6, 6)
    x_m = torch.zeros(shape)
    x_m[..., :2] = 1
    y_m = torch.zeros(shape)
    y_m[..., :4] = 1
    y_s = y_m * (torch.arange(6) % 2 == 0).float()
    mu, logvar = torch.zeros(2, 3), torch.zeros(2, 3)
    pred_s = torch.full(shape, 0.3)
    base = partial_loss(y_m, pred_s, mu, logvar, x_m, y_m, y_s)
    changed = pred_s.clone()
    changed[..., :2] = 0.9  # inside x_m
    changed[..., 4:] = 0.9  # outside y_m
    assert partial_loss(y_m, changed, mu, logvar, x_m, y_m, y_s).wdl == pytest.approx(base.wdl)
    changed[..., 2:4] = y_s[..., 2:4]  # the new region, now right
    assert partial_loss(y_m, changed, mu, logvar, x_m, y_m, y_s).wdl < base.wdl
    mu1 = torch.ones(2, 3)
    with_kl = partial_loss(y_m, pred_s, mu1, logvar, x_m, y_m, y_s, beta1=0.5)
    assert with_kl.total.item() == pytest.approx(base.total.item() + 0.5 * 1.5)


def test_loss_decreases_on_a_tiny_problem(tmp_path):
    cfg = replace(TINY2, steps=40, batch_size=8, lr=3e-3, log_every=40)
    images, labels = _square_data(8, np.random.default_rng(0))
    rng = np.random.default_rng(42)
    data = pt._training_data(cfg, images, labels)
    x, y = pm.training_batch(*data, replace(cfg, batch_size=32), rng)
    eps = np.zeros((32, cfg.latent_size), np.float32)
    before = pm.loss_on_batch(build_network(cfg), x, y, eps, cfg)
    train_partial(cfg, images, labels, tmp_path / "run")
    trained = PartialProposer.from_checkpoint(tmp_path / "run" / "last.pt").net
    with torch.no_grad():
        after = pm.loss_on_batch(trained, x, y, eps, cfg)
    assert after.total.item() < 0.8 * before.total.item()
    assert after.wdl < before.wdl


# --- trainer: folder, checkpoint, resume ----------------------------------------------------


def _log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_run_folder_and_a_weights_only_checkpoint(tmp_path):
    images, labels = _square_data(3, np.random.default_rng(0))
    run = train_partial(TINY2, images, labels, tmp_path / "run")
    assert (run / "config.yaml").is_file()
    data = torch.load(run / "last.pt", weights_only=True)
    assert data["step"] == 3 and data["method"] == "partial"
    assert data["config"]["grid"] == [16, 16] and data["config"]["beta1"] == 1e-3
    assert {"net", "optimiser", "rng", "mecca_version"} <= set(data)
    records = _log(run)
    assert records[0]["type"] == "start"
    assert [r["step"] for r in records if r["type"] == "train"] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) for r in records if r["type"] == "train")


def test_resume_gives_the_identical_next_steps(tmp_path):
    images, labels = _square_data(4, np.random.default_rng(1))
    straight = train_partial(replace(TINY2, steps=5), images, labels, tmp_path / "a")
    part = train_partial(replace(TINY2, steps=3), images, labels, tmp_path / "b")
    train_partial(replace(TINY2, steps=5), images, labels, part, resume=True)
    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(part / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 5
    for key, value in a["net"].items():
        assert torch.equal(value, b["net"][key]), key
    assert a["rng"] == b["rng"]
    assert [r["step"] for r in _log(part) if r["type"] == "start"] == [0, 3]


def test_existing_run_needs_resume_and_the_same_config(tmp_path):
    images, labels = _square_data(2, np.random.default_rng(2))
    run = train_partial(TINY2, images, labels, tmp_path / "run")
    with pytest.raises(OverwriteError, match="resume"):
        train_partial(TINY2, images, labels, run)
    with pytest.raises(ConfigError, match="lr"):
        train_partial(replace(TINY2, lr=0.5), images, labels, run, resume=True)


def test_interrupt_saves_last_checkpoint(tmp_path, monkeypatch):
    images, labels = _square_data(2, np.random.default_rng(3))
    original = pt.PartialTrainer.train_step

    def stop_after_two(self, *args):
        if self.step == 2:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(pt.PartialTrainer, "train_step", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        train_partial(replace(TINY2, steps=10), images, labels, tmp_path / "run")
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 2


def test_trainer_refuses_data_off_the_grid(tmp_path):
    images, labels = _square_data(2, np.random.default_rng(4), grid=(16, 15))
    with pytest.raises(InputError, match="network grid"):
        train_partial(TINY2, images, labels, tmp_path / "run")
    with pytest.raises(InputError, match="as many labels"):
        train_partial(TINY2, images, labels[:1], tmp_path / "run")


# --- bad inputs and settings ----------------------------------------------------------------


@pytest.fixture(scope="module")
def proposer():
    return PartialProposer(build_network(TINY2))


def _good(rng=None):
    return _random_input(TINY2.grid, rng or np.random.default_rng(0))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda im, m, s: (im[None], m, s), "spatial axes"),
        (lambda im, m, s: (np.where(m, np.nan, im), m, s), "NaN"),
        (lambda im, m, s: (im > 0, m, s), "intensities"),
        (lambda im, m, s: (im, m[:-1], s), "partial_mask has shape"),
        (lambda im, m, s: (im, m, s | ~m), "outside partial_mask"),
        (lambda im, m, s: (im, m * 3, s), "binary"),
    ],
)
def test_bad_inputs_raise_input_error(proposer, mutate, message):
    image, x_m, x_s = mutate(*_good())
    with pytest.raises(InputError, match=message):
        proposer.propose(image, x_m, x_s, 2, np.random.default_rng(0))


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_bad_k_raises_config_error(proposer, k):
    with pytest.raises(ConfigError, match="k"):
        proposer.propose(*_good(), k, np.random.default_rng(0))


def test_rng_must_be_a_generator(proposer):
    with pytest.raises(ConfigError, match="default_rng"):
        proposer.propose(*_good(), 2, 0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dims": 4}, "dims"),
        ({"grid": (16, 16, 16)}, "grid"),
        ({"max_added_shapes": 9}, "max_added_shapes"),
        ({"shape_sigma": (0.2, 0.1)}, "shape_sigma"),
        ({"lr": 0.0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"normalise": "minmax"}, "normalise"),
    ],
)
def test_bad_settings_raise_config_error(changes, message):
    with pytest.raises(ConfigError, match=message):
        replace(TINY2, **changes)


def test_checkpoint_of_another_method_is_refused(tmp_path):
    from mecca.checkpoint import save_checkpoint

    path = save_checkpoint(tmp_path / "other.pt", {"config": {}}, method="pnet")
    with pytest.raises(InputError, match="pnet"):
        PartialProposer.from_checkpoint(path)


# --- the simulated user --------------------------------------------------------------------


def _proposal(mask, seg):
    mask, seg = np.asarray(mask, bool), np.asarray(seg, bool)
    return Proposal(mask, seg, int(seg.sum()), int((mask & ~seg).sum()))


def test_proposal_dice_and_pick_closest():
    truth = np.array([[1, 1, 0, 0]], bool)
    right_small = _proposal([[1, 0, 0, 0]], [[1, 0, 0, 0]])
    right_large = _proposal([[1, 1, 1, 0]], [[1, 1, 0, 0]])
    wrong = _proposal([[1, 1, 1, 1]], [[1, 0, 1, 1]])
    assert proposal_dice(right_small, truth) == 1.0 == proposal_dice(right_large, truth)
    assert proposal_dice(wrong, truth) == pytest.approx(2 * 1 / (3 + 2))
    assert proposal_dice(_proposal([[0, 0, 1, 1]], [[0, 0, 0, 0]]), truth) == 1.0  # both empty
    assert pick_closest([wrong, right_small, right_large], truth) == 2  # tie -> larger
    assert pick_closest([right_small, wrong], truth) == 0
    with pytest.raises(InputError, match="no proposals"):
        pick_closest([], truth)
    with pytest.raises(InputError, match="shape"):
        proposal_dice(right_small, truth.T)
