"""Click-to-overlay latency of the web page in headless Chromium, as a user feels it.

Usage: ``.venv/bin/python benchmarks/browser_latency.py [--clicks 20] [--method generalist]
[--tool roi|box] [--threads N] [--out latency.json]``

Starts ``mecca serve`` in-process on a free port with the brats2015 folder of
``../shared/data`` as its image root (240 x 240 x 155 volumes; else an MR phantom of that
size), opens the first case in the page (axial view), draws an ROI of 30 % of the view
around the centre (``--tool box``: the same two corners with the Box tool, a box prompt
the generalist segments at once), then clicks ``--clicks`` times inside it (edge points for MECCA,
foreground otherwise), ``--think-ms`` after the previous overlay appeared. Each
click's time runs from the pointer release to the moment the
new overlays are on screen (``window.mecca.lastLatencyMs``, measured by the page). Prints
the median and quartiles in ms and the server's own step times.
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brats2015"


def image_root() -> tuple[Path, str]:
    """(root folder, relative path of the volume to open)."""
    if (SHARED / "imagesTr").is_dir():
        first = sorted((SHARED / "imagesTr").glob("*.nii.gz"))[0]
        return SHARED / "imagesTr", first.name
    from mecca.data.phantoms import make_phantom
    from mecca.io import Volume, save_volume

    root = Path(tempfile.mkdtemp())
    ph = make_phantom((240, 240, 155), rng=np.random.default_rng(0))
    save_volume(Volume(ph.image.astype(np.float32), np.eye(4)), root / "phantom.nii.gz")
    return root, "phantom.nii.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument("--method", default="generalist", help="default: the page's default")
    parser.add_argument(
        "--overlay", choices=("prob", "mask"), default="prob", help="what the page overlays"
    )
    parser.add_argument(
        "--think-ms",
        type=float,
        default=0.0,
        help="pause before each click, as a person looks before clicking (0: back to back)",
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: mecca serve's)")
    parser.add_argument(
        "--tool", choices=("roi", "box"), default="roi", help="the two corners' tool"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import uvicorn
    from playwright.sync_api import sync_playwright

    from mecca.server.app import create_app
    from mecca.server.settings import ServerSettings, use_server_threads

    threads = use_server_threads(args.threads)  # as `mecca serve` does without --threads

    root, name = image_root()
    settings = ServerSettings(
        roots=(root,), state_dir=Path(tempfile.mkdtemp()), methods=(args.method,)
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    kind = "edge" if args.method == "mecca" else "foreground"
    latencies, server_ms, phases = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        page.goto(f"http://127.0.0.1:{port}")
        page.wait_for_function("() => window.mecca && window.mecca.ready", timeout=30000)
        page.select_option("#view", "axial")
        if args.overlay == "mask":
            page.uncheck("#showProb")
        page.click(f"#files li[data-path='{name}']")
        page.wait_for_function("() => window.mecca.loaded === true", timeout=60000)
        page.wait_for_timeout(500)
        box = page.locator("#gl").bounding_box()
        assert box is not None
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        side = min(box["width"], box["height"])
        page.check(f"input[value={args.tool}]")
        page.mouse.click(cx - 0.15 * side, cy - 0.15 * side)
        page.mouse.click(cx + 0.15 * side, cy + 0.15 * side)
        page.wait_for_function(
            "() => window.mecca.session.roi !== null && !window.mecca.busy", timeout=30000
        )
        before = int(page.evaluate("window.mecca.session.steps"))  # 1 after a box prompt
        page.check(f"input[value={kind}]")
        rng = np.random.default_rng(0)
        for n in range(args.clicks + 1):  # the first click warms up
            dx, dy = rng.uniform(-0.1, 0.1, 2) * side
            page.wait_for_timeout(args.think_ms)
            page.mouse.click(cx + dx, cy + dy)
            page.wait_for_function(
                # a function, not an expression: Playwright polls expressions with eval,
                # which the page's Content-Security-Policy refuses
                f"() => window.mecca.session.steps === {before + n + 1} && !window.mecca.busy",
                timeout=60000,
                polling=250,  # the page times itself; polling every frame would load the CPU
            )
            if n:
                latencies.append(page.evaluate("window.mecca.lastLatencyMs"))
                server_ms.append(page.evaluate("window.mecca.session.last.total_ms"))
                phases.append(page.evaluate("window.mecca.lastPhasesMs"))
        browser.close()
    server.should_exit = True
    q1, med, q3 = np.percentile(latencies, [25, 50, 75])
    phase_medians = {k: float(np.median([p[k] for p in phases])) for k in phases[0]}
    print(
        f"{name} ({args.method}, {args.tool} tool), {args.clicks} clicks: "
        f"click-to-overlay median {med:.0f} ms "
        f"[{q1:.0f}, {q3:.0f}]; server step median {np.median(server_ms):.0f} ms"
    )
    print("  phase medians (ms): " + ", ".join(f"{k} {v:.0f}" for k, v in phase_medians.items()))
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "volume": name,
                    "method": args.method,
                    "tool": args.tool,
                    "clicks": args.clicks,
                    "think_ms": args.think_ms,
                    "torch_threads": threads,
                    "click_to_overlay_ms": latencies,
                    "server_step_ms": server_ms,
                    "phase_medians_ms": phase_medians,
                    "overlay": args.overlay,
                    "median_ms": float(med),
                    "q1_ms": float(q1),
                    "q3_ms": float(q3),
                },
                indent=1,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
