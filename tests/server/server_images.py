"""Helpers of the server tests: images with known geometry under an image root."""

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from conftest import sphere
from mecca.io import Volume, save_mask, save_volume

SHAPE = (40, 36, 20)
CENTRE = (20, 18, 10)
AFFINES = {
    "lps": np.array([[-0.8, 0, 0, 30.0], [0, -1.2, 0, -12.0], [0, 0, 2.5, 7.0], [0, 0, 0, 1]]),
    "las": np.array([[-1.0, 0, 0, 20.0], [0, 1.0, 0, -5.0], [0, 0, 1.5, 3.0], [0, 0, 0, 1]]),
    "oblique": np.array(
        [
            [-0.9 * np.cos(0.3), -1.1 * np.sin(0.3), 0.0, 30.0],
            [-0.9 * np.sin(0.3), 1.1 * np.cos(0.3), 0.0, -12.0],
            [0.0, 0.0, 2.0, 5.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    ),
}


def ball(seed: int = 0, centre: tuple[int, int, int] = CENTRE) -> tuple[np.ndarray, np.ndarray]:
    gt = sphere(SHAPE, centre, 6)
    image = gt * 2.0 + np.random.default_rng(seed).normal(0, 0.2, SHAPE)
    return image.astype(np.float32), gt


def proposing_partial_run(out: Path) -> Path:
    """A partial-segmentation model trained for a few steps on balls, its foreground logit
    then biased up so that every voxel a proposal adds is foreground (a few steps leave it
    proposing background only, and the tests need masks that clicks alone cannot give)."""
    import torch

    from mecca.methods.partial.model import PartialConfig
    from mecca.methods.partial.train import train_partial

    grid = (16, 16, 8)
    config = PartialConfig(
        dims=3, grid=grid, enc_widths=(4, 4), dec_width=8, latent_size=4, latent_grid=2,
        z_channels=2, batch_size=4, steps=5, log_every=5, checkpoint_every=100,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    labels = [sphere(grid, (8 + int(d), 8, 4), 4) for d in rng.integers(-2, 3, size=8)]
    images = [(g * 2.0 + rng.normal(0, 0.3, grid)).astype(np.float32) for g in labels]
    run = train_partial(config, images, labels, out)
    checkpoint = torch.load(run / "last.pt", weights_only=True)
    checkpoint["net"]["head.bias"][1] = 30.0  # channels: partialness, segmentation
    torch.save(checkpoint, run / "last.pt")
    return run


def write_images(root: Path) -> Path:
    """One ball image (and its label) per orientation, as NIfTI under ``root``."""
    for name, affine in AFFINES.items():
        image, gt = ball()
        volume = save_volume(Volume(image, affine), root / f"{name}.nii.gz")
        save_mask(gt, Volume(image, affine), root / f"{name}_label.nii.gz")
        assert volume.exists()
    return root


@contextmanager
def served(settings) -> Iterator[str]:
    """A real uvicorn server of the app in a thread on a free port; yields its URL."""
    import uvicorn

    from mecca.server.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
