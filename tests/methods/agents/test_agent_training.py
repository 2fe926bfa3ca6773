"""Training runs end to end on tiny phantoms: folder layout, log, checkpoints, resume."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mecca.checkpoint import load_checkpoint
from mecca.data.cases import load_cases, sample_crops
from mecca.data.phantoms import write_phantom_dataset
from mecca.data.roi import NormaliseConfig
from mecca.errors import ConfigError, InputError, OverwriteError
from mecca.interaction.users import make_user
from mecca.methods.agents.config import TrainConfig
from mecca.methods.agents.train import AgentTrainer, sample_actions, train
from mecca.rl.a2c import a2c_loss

TINY = TrainConfig(
    grid=(16, 16, 8),
    width=4,
    episodes=4,
    batch_size=1,
    steps=2,
    checkpoint_every=2,
    val_every=2,
    val_cases=1,
    confidence_samples=1,
)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "ph"
    return write_phantom_dataset(root, count=5, seed=3, shape=(28, 28, 16))


def read_log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["mecca", "itermrl"])
def test_a_tiny_run_writes_config_log_and_checkpoints(phantoms, tmp_path, method):
    cfg = replace(TINY, method=method)
    run = train(cfg, phantoms, tmp_path / "run", device="cpu", progress=False)
    assert (run / "config.yaml").exists() and (run / "last.pt").exists()
    assert (run / "best.pt").exists()
    records = read_log(run)
    train_lines = [r for r in records if r["type"] == "train"]
    val_lines = [r for r in records if r["type"] == "val"]
    assert [r["episode"] for r in train_lines] == [1, 2, 3, 4]
    assert [r["episode"] for r in val_lines] == [2, 4]
    assert all(len(r["dice_per_step"]) == 2 for r in train_lines + val_lines)
    start = records[0]
    assert start["type"] == "start" and start["episode"] == 0 and start["threads"] >= 1
    assert all(np.isfinite(r["total"]) for r in train_lines)
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["episode"] == 4
    assert (ckpt["confidence"] is not None) == (method == "mecca")
    assert ckpt["net_config"]["in_channels"] == (3 if method == "mecca" else 4)


def test_training_changes_the_weights(phantoms, tmp_path):
    trainer = AgentTrainer(TINY, phantoms, tmp_path / "run", device="cpu", progress=False)
    before = [p.detach().clone() for p in trainer.models.net.parameters()]
    trainer.run()
    after = list(trainer.models.net.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))


def test_resume_continues_exactly_where_an_uninterrupted_run_would_be(phantoms, tmp_path):
    full = train(TINY, phantoms, tmp_path / "full", device="cpu", progress=False)
    half = train(replace(TINY, episodes=2), phantoms, tmp_path / "half", device="cpu",
                 progress=False)
    train(TINY, phantoms, half, device="cpu", resume=True, progress=False)
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(half / "last.pt")
    assert a["episode"] == b["episode"] == 4
    for key, value in a["net"].items():
        torch.testing.assert_close(value, b["net"][key], msg=key)
    losses_full = [r["total"] for r in read_log(full) if r["type"] == "train"]
    losses_half = [r["total"] for r in read_log(half) if r["type"] == "train"]
    assert losses_half == pytest.approx(losses_full)


def test_an_existing_run_is_never_overwritten_without_resume(phantoms, tmp_path):
    run = train(replace(TINY, episodes=1, val_every=0), phantoms, tmp_path / "r", device="cpu",
                progress=False)
    before = (run / "log.jsonl").read_text()
    with pytest.raises(OverwriteError, match="--resume"):
        train(replace(TINY, episodes=1, val_every=0), phantoms, run, device="cpu", progress=False)
    assert (run / "log.jsonl").read_text() == before


def test_resume_with_a_different_config_is_refused(phantoms, tmp_path):
    run = train(replace(TINY, episodes=1, val_every=0), phantoms, tmp_path / "r", device="cpu",
                progress=False)
    with pytest.raises(ConfigError, match="lr"):
        train(replace(TINY, episodes=2, val_every=0, lr=1e-3), phantoms, run, device="cpu",
              resume=True, progress=False)


def test_validation_may_run_more_steps_than_training(phantoms, tmp_path):
    cfg = replace(TINY, method="itermrl", steps=1, val_steps=3, episodes=2)
    run = train(cfg, phantoms, tmp_path / "run", device="cpu", progress=False)
    records = read_log(run)
    assert all(len(r["dice_per_step"]) == 1 for r in records if r["type"] == "train")
    assert [len(r["dice_per_step"]) for r in records if r["type"] == "val"] == [3]
    with pytest.raises(ConfigError, match="val_steps"):
        replace(TINY, val_steps=0).resolved()


def test_mecca_reward_needs_the_confidence_network():
    with pytest.raises(ConfigError, match="confidence"):
        TrainConfig(reward="mecca", confidence=False).resolved()


def test_method_defaults_follow_the_papers():
    m = TrainConfig(method="mecca").resolved()
    i = TrainConfig(method="itermrl").resolved()
    assert (m.user, m.hints, m.reward, m.confidence) == ("edge", "gaussian", "mecca", True)
    assert (i.user, i.hints, i.reward, i.confidence) == ("error_centre", "geodesic", "relative",
                                                         False)
    with pytest.raises(ConfigError, match="unknown method"):
        TrainConfig(method="nope").resolved()  # type: ignore[arg-type]


def test_sampled_actions_follow_the_policy():
    logits = torch.log(torch.tensor([0.7, 0.1, 0.1, 0.05, 0.03, 0.02]))
    logits = logits.view(1, 6, 1, 1, 1).expand(1, 6, 40, 40, 10)
    idx = sample_actions(logits, torch.Generator().manual_seed(0))
    freq = torch.bincount(idx.flatten(), minlength=6).float() / idx.numel()
    torch.testing.assert_close(freq, torch.exp(logits[0, :, 0, 0, 0]), atol=0.01, rtol=0)
    again = sample_actions(logits, torch.Generator().manual_seed(0))
    assert torch.equal(idx, again)


def test_semi_supervised_runs_alternate_labeled_and_masked_unlabeled_batches(phantoms, tmp_path):
    cfg = replace(TINY, labeled_fraction=0.5, val_every=0, delta_start=0.6)
    run = train(cfg, phantoms, tmp_path / "semi", device="cpu", progress=False)
    lines = [r for r in read_log(run) if r["type"] == "train"]
    assert [r["labeled"] for r in lines] == [True, False, True, False]
    assert all(r["confidence_loss"] is None for r in lines if not r["labeled"])
    assert all(r["confidence_loss"] is not None for r in lines if r["labeled"])
    assert all(r["mask_fraction"] < 1.0 for r in lines if not r["labeled"])
    assert all(r["mask_fraction"] == 1.0 for r in lines if r["labeled"])
    assert all(np.isfinite(r["total"]) for r in lines)


def test_unlabeled_batches_may_join_after_a_labeled_warm_up(phantoms, tmp_path):
    cfg = replace(TINY, labeled_fraction=0.5, val_every=0, delta_start=0.6, unlabeled_from=2)
    run = train(cfg, phantoms, tmp_path / "semi", device="cpu", progress=False)
    lines = [r for r in read_log(run) if r["type"] == "train"]
    assert [r["labeled"] for r in lines] == [True, True, True, False]
    with pytest.raises(ConfigError, match="unlabeled_from"):
        replace(TINY, unlabeled_from=-1).resolved()


def test_a_labeled_warm_up_can_be_branched_with_unlabeled_batches_joining_later(
    phantoms, tmp_path
):
    warm = replace(TINY, labeled_fraction=0.5, val_every=0, delta_start=0.6, unlabeled_from=2,
                   episodes=2)
    run = train(warm, phantoms, tmp_path / "semi", device="cpu", progress=False)
    train(replace(warm, episodes=4, unlabeled_from=100), phantoms, run, device="cpu",
          resume=True, progress=False)
    lines = [r for r in read_log(run) if r["type"] == "train"]
    assert [r["labeled"] for r in lines] == [True, True, True, True]


def test_unlabeled_rewards_count_only_inside_the_confidence_mask(phantoms, monkeypatch):
    """Eq. 11: a voxel whose simulated label is not trusted adds nothing to any return."""
    import mecca.methods.agents.train as training

    seen = {}

    def spy(logits, values, actions, rewards, **kwargs):
        seen["args"], seen["kwargs"] = (logits, values, actions, rewards), kwargs
        seen["rewards"], seen["mask"] = rewards, kwargs["mask"]
        return a2c_loss(logits, values, actions, rewards, **kwargs)

    monkeypatch.setattr(training, "compute_reward", lambda *a: torch.ones(a[1].shape))
    monkeypatch.setattr(training, "a2c_loss", spy)
    cfg = replace(TINY, labeled_fraction=0.5, delta_start=0.6, advantage="voxel").resolved()
    models = training.build_models(cfg, torch.device("cpu"), seed=0)
    user = make_user(str(cfg.user))
    env = training.VoxelEnv(training.hint_encoder(cfg), user, steps=cfg.steps)
    cases = load_cases(phantoms, "train", None, 1)
    rng = np.random.default_rng(0)
    batch = sample_crops(cases, 1, rng, grid=cfg.grid, normalise=NormaliseConfig(), augment=False)
    gen = torch.Generator().manual_seed(0)
    training.train_episode(
        models, env, batch.images, batch.labels, cfg, rng, gen, labeled=False, delta=0.6
    )
    mask = seen["mask"].float()
    assert 0 < mask.sum() < mask.numel()
    # the rewards are the simulated-label rewards; the loss sees only those inside the mask
    assert torch.equal(seen["rewards"], torch.ones_like(mask))
    logits, values, actions, rewards = (t.detach() for t in seen["args"])
    given = a2c_loss(logits, values, actions, rewards, **seen["kwargs"])
    trusted = a2c_loss(logits, values, actions, rewards * mask, **seen["kwargs"])
    assert torch.equal(given.total, trusted.total)
    assert given.mean_return == trusted.mean_return


def test_held_simulated_labels_train_end_to_end(phantoms, tmp_path):
    cfg = replace(TINY, labeled_fraction=0.5, val_every=0, delta_start=0.6,
                  simulated_labels="episode")
    run = train(cfg, phantoms, tmp_path / "held", device="cpu", progress=False)
    lines = [r for r in read_log(run) if r["type"] == "train" and not r["labeled"]]
    assert lines and all(np.isfinite(r["total"]) and r["mask_fraction"] < 1.0 for r in lines)


def test_unlabeled_volumes_need_the_confidence_network():
    with pytest.raises(ConfigError, match="confidence network"):
        TrainConfig(method="itermrl", labeled_fraction=0.5).resolved()
    with pytest.raises(ConfigError, match="labeled_fraction"):
        TrainConfig(labeled_fraction=0.0).resolved()


def test_torchrun_trains_data_parallel_with_gloo_and_only_rank_0_writes(phantoms, tmp_path):
    run = tmp_path / "ddp"
    settings = ["episodes=2", "grid=[16,16,8]", "width=4", "batch_size=1", "steps=2",
                "val_every=2", "val_cases=1"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "-m", "mecca.cli", "train", "--data", str(phantoms), "--out", str(run),
           "--no-progress"]
    for item in settings:
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr  # all of it: a rank's own message
    records = read_log(run)
    assert records[0]["world_size"] == 2
    assert [r["episode"] for r in records if r["type"] == "train"] == [1, 2]
    assert load_checkpoint(run / "last.pt")["episode"] == 2


def test_sigterm_stops_training_through_keyboard_interrupt():
    import signal

    from mecca.runtime import stop_on_signals

    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), stop_on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) == previous


def test_resume_accepts_settings_added_after_the_run_began(phantoms, tmp_path):
    import yaml

    run = train(replace(TINY, episodes=1, val_every=0), phantoms, tmp_path / "r", device="cpu",
                progress=False)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    del saved["labeled_fraction"]  # as written by a version without the setting
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    train(replace(TINY, episodes=2, val_every=0), phantoms, run, device="cpu", resume=True,
          progress=False)
    assert load_checkpoint(run / "last.pt")["episode"] == 2


def test_a_resumed_run_may_decay_its_learning_rates(phantoms, tmp_path):
    run = train(replace(TINY, episodes=1, val_every=0, lr=1e-3, confidence_lr=2e-3), phantoms,
                tmp_path / "r", device="cpu", progress=False)
    decayed = replace(TINY, episodes=3, val_every=0, lr=1e-3, confidence_lr=2e-3,
                      lr_decay_episode=2, lr_decay_factor=0.1)
    trainer = AgentTrainer(decayed, phantoms, run, device="cpu", resume=True, progress=False)
    rates = []
    original = trainer._set_learning_rates

    def record() -> None:
        original()
        rates.append((trainer.models.optimiser.param_groups[0]["lr"],
                      trainer.models.confidence_optimiser.param_groups[0]["lr"]))

    trainer._set_learning_rates = record
    trainer.run()
    assert rates == [pytest.approx((1e-3, 2e-3)), pytest.approx((1e-4, 2e-4))]
    assert load_checkpoint(run / "last.pt")["config"]["lr_decay_episode"] == 2


def test_update_mode_starts_every_episode_from_the_initial_segmenter(
    phantoms, tmp_path, monkeypatch
):
    import mecca.methods.agents.train as training
    from mecca.methods.supervised.config import SupervisedConfig
    from mecca.methods.supervised.train import train_supervised

    pnet = SupervisedConfig(
        method="pnet", grid=TINY.grid, width=4, steps=2, val_every=0, checkpoint_every=0
    )
    pnet_run = train_supervised(pnet, phantoms, tmp_path / "pnet", progress=False, device="cpu")
    cfg = replace(TINY, method="itermrl", initial=str(pnet_run)).resolved()
    segmenter = training.load_initial(cfg)
    images = np.random.default_rng(0).normal(size=(2, *TINY.grid)).astype(np.float32)
    maps = training.initial_maps(segmenter, images)
    assert maps.shape == images.shape and maps.dtype == np.float32
    assert 0.0 <= maps.min() and maps.max() <= 1.0 and maps.std() > 0  # not the flat 0.5
    starts = []
    reset = training.VoxelEnv.reset

    def spy(self, images, labels, rng, init_prob=None):
        starts.append(init_prob)
        return reset(self, images, labels, rng, init_prob=init_prob)

    monkeypatch.setattr(training.VoxelEnv, "reset", spy)
    run = train(cfg, phantoms, tmp_path / "run", device="cpu", progress=False)
    assert len(starts) == TINY.episodes and all(s is not None for s in starts)
    assert [r["episode"] for r in read_log(run) if r["type"] == "val"] == [2, 4]
    with pytest.raises(ConfigError, match="grid"):
        training.load_initial(replace(cfg, grid=(20, 20, 8)))


def test_init_from_starts_a_new_run_from_another_runs_weights(phantoms, tmp_path):
    first = train(replace(TINY, episodes=2, val_every=0), phantoms, tmp_path / "a", device="cpu",
                  progress=False)
    source = load_checkpoint(first / "last.pt")
    cfg = replace(TINY, episodes=0, val_every=0, init_from=str(first / "last.pt")).resolved()
    trainer = AgentTrainer(cfg, phantoms, tmp_path / "b", device="cpu", progress=False)
    for key, module in (("net", trainer.models.net), ("confidence", trainer.models.confidence)):
        for name, value in module.state_dict().items():
            assert torch.equal(value, source[key][name]), (key, name)
    assert trainer.episode == 0
    from mecca.methods.agents.bundle import export_bundle

    second = train(replace(cfg, episodes=1), phantoms, tmp_path / "b2", device="cpu",
                   progress=False)
    bundle = export_bundle(second, tmp_path / "bundle", checkpoint="last.pt")
    card = (bundle / "docs" / "README.md").read_text()
    assert f"Started from the weights of `{first / 'last.pt'}`" in card
    fresh = AgentTrainer(replace(cfg, init_from=None), phantoms, tmp_path / "c", device="cpu",
                    progress=False)
    assert not torch.equal(next(iter(fresh.models.net.state_dict().values())),
                           next(iter(trainer.models.net.state_dict().values())))


def test_init_from_refuses_a_network_of_another_shape(phantoms, tmp_path):
    first = train(replace(TINY, episodes=1, val_every=0), phantoms, tmp_path / "a", device="cpu",
                  progress=False)
    cfg = replace(TINY, width=6, episodes=1, val_every=0, init_from=str(first))
    with pytest.raises(ConfigError, match="another shape"):
        train(cfg, phantoms, tmp_path / "b", device="cpu", progress=False)
    with pytest.raises(InputError, match="init_from"):
        train(replace(cfg, init_from=str(tmp_path / "none")), phantoms, tmp_path / "c",
              device="cpu", progress=False)


def test_init_from_takes_a_shipped_bundle_by_name(phantoms, tmp_path):
    from mecca.config import load_config
    from mecca.methods.agents.bundle import load_bundle

    root = Path(__file__).resolve().parents[3]
    cfg = load_config(TrainConfig, root / "configs" / "mecca_phantom.yaml",
                      {"episodes": 0, "val_every": 0, "init_from": "mecca_phantom"})
    trainer = AgentTrainer(cfg, phantoms, tmp_path / "ft", device="cpu", progress=False)
    shipped = load_bundle("mecca_phantom")
    for mine, theirs in ((trainer.models.net, shipped.net),
                         (trainer.models.confidence, shipped.confidence)):
        for (name, value), other in zip(mine.state_dict().items(),
                                        theirs.state_dict().values(), strict=True):
            assert torch.equal(value, other), name
