"""UA-MT (mecca.methods.supervised.uamt, trained by mecca.methods.supervised.train): the
ramps, the uncertainty mask, the mean-teacher update, one training step's loss, and a run
on tiny phantoms that trains, logs, loads, exports and keeps the labeled split of the other
methods."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

import mecca.methods.supervised.train as sup
from mecca import methods
from mecca.data.phantoms import write_phantom_dataset
from mecca.errors import InputError
from mecca.methods.supervised import uamt
from mecca.methods.supervised.bundle import export_supervised, load_supervised
from mecca.methods.supervised.config import SupervisedConfig
from mecca.methods.supervised.method import SegmenterMethod
from mecca.methods.supervised.train import train_supervised
from mecca.nets.segnet import SegNetConfig, build_segnet
from mecca.rl.semisup import labeled_subset, run_split

TINY = SupervisedConfig(
    method="uamt",
    labeled_fraction=0.34,  # of 3 training phantoms: 1 labeled, 2 unlabeled
    grid=(16, 16, 8),
    width=4,
    steps=4,
    batch_size=2,
    checkpoint_every=2,
    val_every=2,
    val_cases=1,
    uncertainty_passes=3,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_ramps_rise_from_almost_nothing_to_their_full_value():
    assert uamt.sigmoid_rampup(0.0) == pytest.approx(math.exp(-5))
    assert uamt.sigmoid_rampup(0.5) == pytest.approx(math.exp(-1.25))
    assert uamt.sigmoid_rampup(1.0) == 1.0 == uamt.sigmoid_rampup(7.0)
    assert uamt.sigmoid_rampup(-1.0) == uamt.sigmoid_rampup(0.0)
    assert uamt.uncertainty_threshold(1.0) == pytest.approx(math.log(2))
    low = uamt.uncertainty_threshold(0.0)
    assert 0.75 * math.log(2) < low < 0.76 * math.log(2)


def test_uncertain_voxels_leave_the_consistency_loss():
    student = torch.tensor([0.9, 0.1, 0.5, 0.5])
    teacher = torch.tensor([0.7, 0.4, 0.0, 1.0])
    entropy = torch.tensor([0.1, 0.2, 0.69, 0.69])  # the last two: teacher unsure
    loss, kept = uamt.uncertain_mse(student, teacher, entropy, threshold=0.6)
    assert loss.item() == pytest.approx((0.2**2 + 0.3**2) / 2)
    assert kept == 0.5
    none, kept = uamt.uncertain_mse(student, teacher, entropy, threshold=0.05)
    assert none.item() == 0.0 and kept == 0.0


def test_teacher_targets_are_seeded_and_their_entropy_is_the_binary_entropy():
    torch.manual_seed(0)
    net = build_segnet(SegNetConfig("pnet", 1, 4)).eval()
    images = np.random.default_rng(0).normal(size=(2, 16, 16, 8)).astype(np.float32)
    dev = torch.device("cpu")
    target, entropy = uamt.teacher_targets(
        net, images, passes=3, noise=0.0, rng=np.random.default_rng(1), device=dev
    )
    assert target.shape == entropy.shape == (2, 1, 16, 16, 8)
    with torch.no_grad():
        p = torch.sigmoid(net(torch.from_numpy(images)[:, None]))
    torch.testing.assert_close(target, p)  # no noise: every pass is the plain prediction
    expected = -(p * torch.log(p) + (1 - p) * torch.log(1 - p))
    torch.testing.assert_close(entropy, expected, atol=1e-5, rtol=1e-4)
    a, b = (
        uamt.teacher_targets(net, images, passes=2, noise=0.1, rng=np.random.default_rng(5),
                             device=dev)
        for _ in range(2)
    )
    torch.testing.assert_close(a, b)
    assert not torch.equal(a[0], target)


def test_perturb_clips_the_noise_at_two_standard_deviations():
    images = np.zeros((1, 20, 20, 20), np.float32)
    noisy = uamt.perturb(images, 0.1, np.random.default_rng(0))
    assert noisy.dtype == np.float32 and noisy.shape == images.shape
    assert np.abs(noisy).max() == pytest.approx(0.2) and 0.08 < noisy.std() < 0.1


def test_ema_update_copies_at_step_zero_then_averages():
    torch.manual_seed(0)
    student = build_segnet(SegNetConfig("pnet", 1, 4))
    teacher = build_segnet(SegNetConfig("pnet", 1, 4))
    student.train()(torch.randn(2, 1, 8, 8, 8))  # batch-norm running statistics move
    uamt.ema_update(teacher, student, decay=0.99, step=0)
    for t, s in zip(teacher.state_dict().values(), student.state_dict().values(), strict=True):
        torch.testing.assert_close(t, s)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    uamt.ema_update(teacher, student, decay=0.5, step=10)  # a = min(1 - 1/11, 0.5) = 0.5
    after = student.state_dict()
    for key, t in teacher.state_dict().items():
        if t.dtype.is_floating_point:
            torch.testing.assert_close(t, 0.5 * before[key] + 0.5 * after[key])
        else:
            assert torch.equal(t, after[key])


def test_one_step_adds_the_ramped_consistency_to_the_supervised_loss():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 16, 16, 8)).astype(np.float32)
    labels = (rng.random((2, 16, 16, 8)) > 0.5).astype(np.uint8)
    unlabeled = rng.normal(size=(2, 16, 16, 8)).astype(np.float32)
    cfg = replace(TINY, steps=10, consistency=1.0)
    dev = torch.device("cpu")
    models = sup.build_models(cfg, dev)
    loss, dice, stats = sup.uamt_step(models, images, labels, unlabeled, cfg, rng, dev, step=10)
    assert stats["consistency_weight"] == 1.0  # the end of the ramp
    assert loss == pytest.approx(stats["supervised"] + stats["consistency"], rel=1e-5)
    assert stats["consistency"] > 0 and 0.0 < stats["certain_share"] <= 1.0
    assert len(dice) == 1 and 0.0 <= dice[0] <= 1.0
    # the teacher moved 1 % of the way toward the student, and is not trained by Adam
    student, teacher = models.nets["student"], models.nets["teacher"]
    assert not torch.equal(teacher.out.weight, student.out.weight)
    assert not models.nets["teacher"].training
    assert all(not p.requires_grad for p in models.nets["teacher"].parameters())
    off = replace(cfg, consistency=0.0)
    models = sup.build_models(off, dev)
    loss, _, stats = sup.uamt_step(models, images, labels, unlabeled, off, rng, dev, step=3)
    assert stats["consistency_weight"] == 0.0 and loss == pytest.approx(stats["supervised"])


def test_uamt_trains_logs_its_terms_and_loads_as_a_segmenter(phantoms, tmp_path):
    run = train_supervised(TINY, phantoms, tmp_path / "run", progress=False, device="cpu")
    records = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    start = records[0]
    assert start["method"] == "uamt"
    assert (start["labeled_cases"], start["unlabeled_cases"]) == (1, 2)
    train = [r for r in records if r["type"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    for r in train:
        assert np.isfinite(r["loss"]) and r["consistency"] >= 0
        assert r["loss"] == pytest.approx(
            r["supervised"] + r["consistency_weight"] * r["consistency"], rel=1e-5
        )
    weights = [r["consistency_weight"] for r in train]
    assert weights == sorted(weights) and weights[0] < weights[-1] <= TINY.consistency
    assert [r["step"] for r in records if r["type"] == "val"] == [2, 4]

    method = load_supervised(run, method="uamt")
    assert isinstance(method, SegmenterMethod) and method.name == "uamt"
    bundle = export_supervised(run, tmp_path / "bundle")
    card = (bundle / "docs" / "README.md").read_text()
    assert "uamt" in card and "labeled fraction 0.34" in card
    again = methods.get("uamt", model=str(bundle))
    assert isinstance(again, SegmenterMethod)
    for a, b in zip(again.net.state_dict().values(), method.net.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_every_method_gets_the_labeled_cases_a_mecca_run_would(phantoms, tmp_path):
    cases = list(range(140))
    labeled, unlabeled = run_split(cases, 0.25, seed=3)
    assert (labeled, unlabeled) == labeled_subset(cases, 0.25, np.random.default_rng([3, 7]))
    assert len(labeled) == 35 and run_split(cases, 0.25, seed=3) == (labeled, unlabeled)
    cfg = replace(TINY, method="pnet", labeled_fraction=0.34, steps=1, val_every=0)
    run = train_supervised(cfg, phantoms, tmp_path / "pnet", progress=False, device="cpu")
    start = json.loads((run / "log.jsonl").read_text().splitlines()[0])
    assert (start["labeled_cases"], start["unlabeled_cases"]) == (1, 0)


def test_uamt_without_unlabeled_cases_says_so(tmp_path):
    data = write_phantom_dataset(tmp_path / "two", count=3, seed=0, shape=(24, 24, 12))
    cfg = replace(TINY, labeled_fraction=0.9, val_every=0)  # 1 training case: all labeled
    with pytest.raises(InputError, match="no unlabeled cases left"):
        train_supervised(cfg, data, tmp_path / "run", progress=False, device="cpu")


def test_uamt_trains_from_the_cli_and_runs_in_the_benchmark(phantoms, tmp_path):
    from click.testing import CliRunner

    from mecca.bench.runner import BenchSettings, run_benchmark
    from mecca.cli import main

    run = tmp_path / "uamt"
    args = ["train", "--method", "uamt", "--labeled-fraction", "0.34", "--data", str(phantoms)]
    args += ["--out", str(run), "--no-progress"]
    for s in ("grid=[16,16,8]", "width=4", "steps=2", "val_every=0", "uncertainty_passes=2"):
        args += ["--set", s]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    config = (run / "config.yaml").read_text()
    assert "method: uamt" in config and "labeled_fraction: 0.34" in config
    bench = BenchSettings(
        data=phantoms, methods=("uamt",), split="test", steps=2, protocol="mecca",
        weights=(("uamt", str(run)),),
    )
    report = run_benchmark(bench, tmp_path / "b", progress=False)
    dice = report["methods"]["uamt"]["per_step"]["dice_mean"]
    assert len(dice) == 2 and dice[0] == dice[1]  # non-interactive: clicks change nothing
