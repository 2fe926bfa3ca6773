"""Time the voxel-agent networks on one 55 x 55 x 30 crop (CPU, float32, 2 threads).

Usage: ``.venv/bin/python benchmarks/net_speed.py [--repeats 7] [--train-repeats 3]
[--compile] [--out net_speed.json]``

Cases (wall-clock ms, median and inter-quartile range; every case warmed up once, then all
cases of a group run interleaved round by round, A, B, C, A, B, C..., so load from other
processes hits them alike):

- ``infer_w{W}``: ``ActorCritic.policy_logits`` of width W, eval mode, inference_mode,
  default contiguous memory format; ``infer_cl_w{W}``: the same in ``channels_last_3d``;
- ``conf_w{W}``: ``ConfidenceNet`` inference (channels_last_3d);
- ``infer_cl_w16_head1conv``: width 16 with one conv per head block;
- ``step_w{W}`` / ``step_w{W}_shared`` (W = 8, 16): one interactive model step (policy,
  then the confidence of the greedy action) with the separate confidence network, and with
  the shared-trunk confidence head;
- ``train_cl_w{W}`` and ``train_w16``: one training step, batch 2, both heads, backward and
  Adam, channels_last_3d (and contiguous for width 16);
- ``--compile``: ``torch.compile`` of the width-16 policy path (compile time reported too).

Also records the largest difference between the two memory formats' logits (the layout
changes no result beyond float rounding). The default run takes about 2-3 minutes.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

from mecca.nets.confidence import ConfidenceConfig, ConfidenceNet
from mecca.nets.pnet import DEFAULT_ACTIONS, ActorCritic, PNetConfig

GRID = (55, 55, 30)
WIDTHS = (8, 12, 16, 24, 32)
IN_CHANNELS = 3


def summary(times: list[float]) -> dict[str, float]:
    q1, med, q3 = np.percentile(times, [25, 50, 75])
    return {"median_ms": float(med), "q1_ms": float(q1), "q3_ms": float(q3), "n": len(times)}


def interleaved(cases: dict[str, Callable[[], object]], repeats: int) -> dict[str, dict]:
    """Warm every case up once, then time them round-robin ``repeats`` times."""
    for fn in cases.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: summary(t) for name, t in times.items()}


def state(batch: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, IN_CHANNELS, *GRID, generator=g)


def pnet(width: int, channels_last: bool = True, head_convs: int = 2) -> ActorCritic:
    cfg = PNetConfig(
        in_channels=IN_CHANNELS, width=width, channels_last=channels_last, head_convs=head_convs
    )
    return ActorCritic(cfg)


def confidence(width: int, cfg: ConfidenceConfig | None = None) -> ConfidenceNet:
    return ConfidenceNet(cfg or ConfidenceConfig(in_channels=IN_CHANNELS + 1, width=width))


def inference_cases() -> dict[str, Callable[[], object]]:
    x = state()
    cases: dict[str, Callable[[], object]] = {}
    for w in WIDTHS:
        plain, cl, conf = pnet(w, False).eval(), pnet(w).eval(), confidence(w).eval()
        a = torch.full((1, 1, *GRID), 0.1)
        cases[f"infer_w{w}"] = partial(plain.policy_logits, x)
        cases[f"infer_cl_w{w}"] = partial(cl.policy_logits, x)
        cases[f"conf_w{w}"] = partial(conf, x, a)
    one_conv = pnet(16, head_convs=1).eval()
    cases["infer_cl_w16_head1conv"] = partial(one_conv.policy_logits, x)

    for w in (8, 16):
        cases |= step_cases(w, x)
    return cases


def step_cases(width: int, x: torch.Tensor) -> dict[str, Callable[[], object]]:
    """One interactive model step: policy, then the confidence of the greedy action, with
    the separate confidence network and with the shared-trunk confidence head."""
    actions = torch.tensor(DEFAULT_ACTIONS)
    ac, conf = pnet(width).eval(), confidence(width).eval()
    head = ConfidenceNet(ConfidenceConfig.shared_trunk(ac.config)).eval()

    def step() -> torch.Tensor:
        a = actions[ac.policy_logits(x).argmax(1, keepdim=True)]
        return conf(x, a)

    def step_shared() -> torch.Tensor:
        f = ac.features(x)
        a = actions[ac.policy_head(f).argmax(1, keepdim=True)]
        return head(f, a)

    return {f"step_w{width}": step, f"step_w{width}_shared": step_shared}


def train_cases() -> dict[str, Callable[[], object]]:
    x = state(batch=2, seed=1)
    cases: dict[str, Callable[[], object]] = {}
    nets = {f"train_cl_w{w}": pnet(w) for w in WIDTHS} | {"train_w16": pnet(16, False)}
    for name, net in nets.items():
        net.train()
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)

        def train_step(net: ActorCritic = net, opt: torch.optim.Optimizer = opt) -> None:
            logits, value = net(x)
            loss = logits.logsumexp(1).mean() + value.square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        cases[name] = train_step
    return cases


def layout_difference() -> float:
    """Max |logits(contiguous) - logits(channels_last)| for the same width-16 weights."""
    x = state()
    a, b = pnet(16, False).eval(), pnet(16).eval()
    b.load_state_dict(a.state_dict())
    return float((a.policy_logits(x) - b.policy_logits(x)).abs().max())


def compile_case(repeats: int) -> dict[str, object]:
    x = state()
    net = pnet(16).eval()
    t0 = time.perf_counter()
    compiled = torch.compile(net.policy_logits)
    compiled(x)
    compile_s = time.perf_counter() - t0
    res = interleaved(
        {"infer_cl_w16": lambda: net.policy_logits(x), "compiled": lambda: compiled(x)}, repeats
    )
    return {"compile_s": compile_s, **res}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7, help="rounds of the inference cases")
    ap.add_argument("--train-repeats", type=int, default=3, help="rounds of the training cases")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)

    with torch.inference_mode():
        results = interleaved(inference_cases(), args.repeats)
        diff = layout_difference()
    results |= interleaved(train_cases(), args.train_repeats)
    extra: dict[str, object] = {"layout_max_abs_logit_diff": diff}
    if args.compile:
        with torch.inference_mode():
            extra["compile"] = compile_case(args.repeats)

    for name, r in results.items():
        print(f"{name:26s} {r['median_ms']:8.1f} ms  (IQR {r['q1_ms']:.0f}-{r['q3_ms']:.0f})")
    print(json.dumps(extra, indent=1))
    if args.out:
        meta = {
            "grid": GRID,
            "in_channels": IN_CHANNELS,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "machine": platform.machine(),
            "processor": platform.processor(),
            "repeats": args.repeats,
            "train_repeats": args.train_repeats,
        }
        args.out.write_text(json.dumps({**meta, "results": results, **extra}, indent=1))


if __name__ == "__main__":
    main()
