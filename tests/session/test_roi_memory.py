"""A step's memory follows the ROI, not the volume (issue 28: a long structure on a large
CT grows the ROI; memory stays bounded by it). Measured with tracemalloc, which counts
numpy's arrays (every array the session makes), so a full-volume copy in a step shows.
``benchmarks/roi_growth_memory.py`` measures the process on a 512 x 512 x 600 CT."""

import tracemalloc

import numpy as np

from mecca.interaction.clicks import Click, InteractionKind
from mecca.io import Volume
from mecca.session import Session

FG = InteractionKind.FOREGROUND
SHAPE = (320, 320, 320)  # 125 MB as float32; a tube runs along k through most of it
SPACING = (2.0, 2.0, 1.0)  # mm: the ROI from a click (40 mm a side) is 41 voxels across


def _tube_volume() -> tuple[Volume, np.ndarray]:
    i, j = np.ogrid[: SHAPE[0], : SHAPE[1]]
    disk = (i - 160) ** 2 + (j - 150) ** 2 <= 6**2
    gt = np.zeros(SHAPE, bool)
    gt[:, :, 20:300] = disk[:, :, None]
    rng = np.random.default_rng(0)
    image = (gt * 200.0 + rng.normal(0, 20, SHAPE)).astype(np.float32)
    return Volume(image, np.diag([*SPACING, 1.0])), gt


def _step_peak(session: Session) -> int:
    tracemalloc.start()
    try:
        session.step()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_growing_roi_on_a_large_volume_steps_within_memory_of_the_roi():
    volume, _ = _tube_volume()
    session = Session(volume, None, method="generalist", rng=0, advice=False)
    session.add_clicks([Click(FG, (160, 150, 160))])
    peaks = [_step_peak(session)]
    first = session.roi
    session.add_clicks([Click(FG, (160, 150, 285))])  # far along the tube: outside the ROI
    peaks.append(_step_peak(session))
    grown = session.roi
    assert first is not None and grown is not None
    assert grown.stop[2] > first.stop[2]  # the ROI followed the tube
    roi_bytes = int(np.prod(grown.shape)) * 4
    assert roi_bytes * 10 < volume.array.nbytes  # the case this test is about
    # every array a step makes is of the ROI's or the network grid's size: a few of them
    # fit, one float32 copy of the volume (125 MB) does not
    assert max(peaks) < 12 * roi_bytes + 16 * 2**20, (peaks, roi_bytes)
