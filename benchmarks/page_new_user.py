"""The page as a new user meets it: `mecca serve` with defaults, one image, headless Chromium.

Serves a copy of IMAGE (never a link: the server refuses links out of its roots) with
``mecca serve --root`` as the README says, opens the page at 1100 x 700, opens the image
with the default method and, on the axial view through the organ's interior-most voxel
(the organ: voxels of LABEL equal to ``--value``), either clicks once there (foreground)
or, with ``--box``, draws the Box tool's two corners tight round the organ on that slice.
Then it saves a screenshot, exports the mask and prints what the user saw (the status
line), the mask's Dice against the organ and the page errors (none expected).
``--corrections N`` then gives N correction clicks, one a step, each at the interior-most
voxel of the largest error of the mask the page exported (the CVPR 2025 user's click:
foreground for a missed part, background for a wrongly added one), on the axial view
through it, and presses Undo once at the end: it prints the Dice, status line and ROI
after each step and after the undo.

Usage::

    python benchmarks/page_new_user.py IMAGE LABEL --value N [--box] [--corrections N]
        --out DIR [--port P]

Needs Debian's ``chromium`` (``make browser``) and the ``playwright`` package (``make
install``). Seconds are those of the machine it runs on.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
from playwright.sync_api import sync_playwright
from scipy import ndimage

from mecca.interaction.clicks import InteractionKind
from mecca.methods.generalist.prompts import distance_click

CHROMIUM = "/usr/bin/chromium"
CANVAS_XY = "mm => window.screenPointOf(mm)"  # the page's own helper (app.js)


def organ_points(label: Path, value: int, box: bool) -> list[list[float]]:
    """Points in RAS mm to click: the organ's interior-most voxel, or (``box``) the two
    corners of its bounding box on that voxel's axial slice, half a voxel outside it."""
    img = nib.load(label)
    organ = np.asarray(img.dataobj) == value
    if not organ.any():
        raise SystemExit(f"{label} has no voxel of value {value}: choose another case or --value")
    depth = ndimage.distance_transform_edt(organ)
    centre = np.array(np.unravel_index(int(np.argmax(depth)), organ.shape), float)
    voxels = [centre]
    if box:
        axial = organ[:, :, int(centre[2])]
        ii, jj = np.nonzero(axial)
        voxels = [
            np.array([ii.min() - 0.5, jj.min() - 0.5, centre[2]]),
            np.array([ii.max() + 0.5, jj.max() + 0.5, centre[2]]),
        ]
    return [(img.affine @ np.append(v, 1.0))[:3].tolist() for v in voxels]


def wait(page, condition: str, timeout: int = 60000) -> None:
    page.wait_for_function(f"() => ({condition})", timeout=timeout)


def dice(mask: np.ndarray, organ: np.ndarray) -> float:
    return round(float(2 * (mask & organ).sum() / (mask.sum() + organ.sum())), 4)


def export(page, state: Path, name: str) -> np.ndarray:
    """Export the mask as the user does (the Export button) and read it back."""
    page.fill("#exportName", name)
    page.click("#export")
    wait(page, "document.getElementById('status').textContent.startsWith('Exported')")
    sid = page.evaluate("window.mecca.sid")
    return np.asarray(nib.load(state / "exports" / sid / name).dataobj) > 0


def step_said(page, kind: str, mask: np.ndarray, organ: np.ndarray) -> dict[str, object]:
    """What the user saw after a step: the click's kind, the Dice, the ROI, the status."""
    session = page.evaluate("window.mecca.session")
    return {
        "click": kind,
        "dice": dice(mask, organ),
        "roi": " - ".join(",".join(map(str, c)) for c in session["roi"]),
        "steps": session["steps"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("label", type=Path)
    parser.add_argument("--value", type=int, required=True)
    parser.add_argument("--box", action="store_true")
    parser.add_argument("--corrections", type=int, default=0, help="correction clicks after")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    root, state = args.out / "root", args.out / "state"
    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.image, root / args.image.name)
    url = f"http://127.0.0.1:{args.port}"
    beside = Path(sys.executable).with_name("mecca")  # the venv's command, else PATH's
    cmd = [str(beside) if beside.exists() else "mecca", "serve", "--root", str(root)]
    cmd += ["--state-dir", str(state)]
    server = subprocess.Popen([*cmd, "--port", str(args.port)])
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/info", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        return drive(url, args, state)
    finally:
        server.terminate()
        server.wait(timeout=20)


def drive(url: str, args: argparse.Namespace, state: Path) -> int:
    points = organ_points(args.label, args.value, args.box)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        wait(page, "window.mecca && window.mecca.ready")
        page.select_option("#view", "axial")
        page.click(f"#files li[data-path='{args.image.name}']")
        wait(page, "window.mecca.loaded === true")
        page.wait_for_timeout(500)
        page.check("input[value=box]" if args.box else "input[value=foreground]")
        for mm in points:
            x, y = page.evaluate(CANVAS_XY, mm)
            page.mouse.click(x, y)
        wait(page, "window.mecca.session.steps === 1 && !window.mecca.busy")
        status = page.text_content("#status")
        shot = args.out / ("page_box.png" if args.box else "page_one_click.png")
        page.screenshot(path=str(shot))
        image = nib.load(args.label)
        organ = np.asarray(image.dataobj) == args.value
        mask = export(page, state, "mask.nii.gz")
        said = {"status": status, "dice": dice(mask, organ), "voxels": int(mask.sum())}
        said |= {"organ_voxels": int(organ.sum()), "screenshot": str(shot)}
        steps = []
        for n in range(2, args.corrections + 2):
            click = distance_click(mask, organ)
            if click is None:
                break
            fg = click.kind is InteractionKind.FOREGROUND
            page.check("input[value=foreground]" if fg else "input[value=background]")
            mm = (image.affine @ np.append(np.asarray(click.position, float), 1.0))[:3]
            x, y = page.evaluate(CANVAS_XY, mm.tolist())
            page.mouse.click(x, y)
            try:
                wait(page, f"window.mecca.session.steps === {n} && !window.mecca.busy")
            except Exception:
                page.screenshot(path=str(args.out / "page_stuck.png"))
                print("stuck:", click, x, y, page.text_content("#status"), flush=True)
                raise
            mask = export(page, state, f"mask_{n}.nii.gz")
            steps.append(step_said(page, click.kind.value, mask, organ))
        if steps:
            page.screenshot(path=str(args.out / "page_corrections.png"))
            page.click("#undo")
            wait(page, f"window.mecca.session.steps === {len(steps)} && !window.mecca.busy")
            undone = export(page, state, "mask_undone.nii.gz")
            said |= {"corrections": steps, "after_undo": step_said(page, "undo", undone, organ)}
        said["page_errors"] = errors
        browser.close()
    print(json.dumps(said, indent=1))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
