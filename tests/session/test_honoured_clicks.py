"""Every front end's clicks are honoured by the session, whatever the method gave."""

import numpy as np

from mecca.data.roi import Box
from mecca.interaction.clicks import Click, InteractionKind
from mecca.interaction.honour import honour_clicks, honoured_clicks
from mecca.io import Volume
from mecca.methods.base import MethodState, StepResult
from mecca.session import Session

FG, BG, EDGE = InteractionKind.FOREGROUND, InteractionKind.BACKGROUND, InteractionKind.EDGE
SHAPE = (30, 30, 16)


def _volume() -> Volume:
    """Two flat slabs: 0 for i < 15, 10 from 15 on, so intensity agreement is clear-cut."""
    image = np.zeros(SHAPE, np.float32)
    image[15:] = 10.0
    return Volume(image, np.eye(4))


class Constant:
    """A method that ignores the clicks: probability ``value`` everywhere."""

    accepts = frozenset({FG, BG, EDGE})

    def __init__(self, value: float) -> None:
        self.value, self.name = value, f"constant_{value}"

    def start(self, crop, *, init_prob=None):
        return MethodState(crop=crop, prob=np.full(crop.grid, self.value, np.float32))

    def step(self, state, new, *, rng):
        prob = np.full(state.crop.grid, self.value, np.float32)
        return MethodState(state.crop, state.clicks + tuple(new), prob), StepResult(prob=prob)


def test_session_honours_clicks_its_method_ignored():
    roi = Box((5, 5, 2), (25, 25, 14))
    session = Session(_volume(), method=Constant(0.0), roi=roi, grid=(20, 20, 12), advice=False)
    session.add_clicks([(FG, (15, 10, 8)), (FG, (20, 20, 8))])
    result = session.step()
    assert result.honoured_before == 0.0 and result.labelled_clicks == 2
    assert result.unhonoured == ()
    mask = result.mask
    assert mask[15, 10, 8] == 1 and mask[20, 20, 8] == 1
    # the neighbourhood of radius 1 where the intensity agrees (i >= 15), not across the edge
    assert mask[16, 11, 9] == 1 and mask[15, 9, 7] == 1 and mask[14, 10, 8] == 0
    assert mask.sum() == 2 * 3 * 3 + 27
    # a later background click wins over the earlier foreground one
    session.add_click(BG, (20, 20, 8))
    result = session.step()
    assert result.mask[20, 20, 8] == 0 and result.mask[15, 10, 8] == 1
    assert result.honoured_before == 1 / 3  # the constant 0 honours the background click
    # undo gives back the previous step's honoured result
    assert session.undo().mask[20, 20, 8] == 1


def test_a_method_that_honours_clicks_scores_one():
    session = Session(
        _volume(),
        method=Constant(1.0),
        roi=Box((5, 5, 2), (25, 25, 14)),
        grid=(20, 20, 12),
        advice=False,
    )
    session.add_clicks([(FG, (18, 10, 8)), (EDGE, (15, 15, 8))])
    result = session.step()
    assert result.honoured_before == 1.0 and result.labelled_clicks == 1
    session.add_click(BG, (6, 6, 3))
    result = session.step()
    assert result.honoured_before == 0.5 and result.mask[6, 6, 3] == 0


def test_clicks_outside_the_box_are_reported_not_honoured():
    image = np.zeros((10, 10, 10), np.float32)
    prob = np.zeros((10, 10, 10), np.float32)
    clicks = [Click(FG, (12, 13, 5)), Click(FG, (13, 13, 5)), Click(BG, (0, 0, 0))]
    out, outside = honour_clicks(prob, image, clicks, offset=(5, 5, 0))
    assert outside == (Click(BG, (0, 0, 0)),)
    assert out[7, 8, 5] == 1.0 and out[8, 8, 5] == 1.0 and prob.max() == 0.0  # a copy
    assert honoured_clicks(out > 0.5, clicks, (5, 5, 0)) == (2, 2)
    assert honoured_clicks(prob > 0.5, clicks, (5, 5, 0)) == (0, 2)


class Threshold:
    """Foreground where the crop's image is bright: the whole object, wherever the ROI is."""

    accepts = frozenset({FG, BG})
    name = "threshold"

    def start(self, crop, *, init_prob=None):
        return MethodState(crop=crop, prob=np.zeros(crop.grid, np.float32))

    def step(self, state, new, *, rng):
        image = state.crop.image
        prob = (image >= (image.max() + image.min()) / 2).astype(np.float32)
        return MethodState(state.crop, state.clicks + tuple(new), prob), StepResult(prob=prob)


def _cube_volume() -> tuple[Volume, np.ndarray]:
    gt = np.zeros((40, 40, 20), bool)
    gt[8:30, 10:32, 4:16] = True
    return Volume(np.where(gt, 10.0, 0.0).astype(np.float32), np.eye(4)), gt


def test_the_roi_grows_while_the_mask_reaches_its_sides():
    volume, gt = _cube_volume()
    roi = Box((14, 16, 7), (24, 26, 13))  # inside the object: the mask fills it
    session = Session(
        volume, method=Threshold(), roi=roi, grid=(16, 16, 8), advice=False, grow_roi=3
    )
    session.add_click(FG, (18, 20, 10))
    result = session.step()
    assert session.roi == result.box and result.box != roi
    start, stop = np.array(result.box.start), np.array(result.box.stop)
    assert (start <= (8, 10, 4)).all() and (stop >= (30, 32, 16)).all()  # holds the object
    assert ((stop - start) <= volume.shape).all()
    dice = 2 * (result.mask.astype(bool) & gt).sum() / (result.mask.sum() + gt.sum())
    assert dice > 0.8  # the 16 x 16 x 8 grid blurs the edges; without growth: about 0.2
    # undo and redo work on the grown ROI; without growth the ROI stays
    assert session.undo() is None and session.redo().box == result.box
    fixed = Session(volume, method=Threshold(), roi=roi, grid=(16, 16, 8), advice=False)
    fixed.add_click(FG, (18, 20, 10))
    assert fixed.step().box == roi


def test_the_roi_grows_a_bounded_number_of_times():
    volume, _ = _cube_volume()
    roi = Box((17, 19, 9), (21, 23, 11))
    session = Session(volume, method=Threshold(), roi=roi, grid=(8, 8, 4), advice=False, grow_roi=1)
    session.add_click(FG, (18, 20, 10))
    box = session.step().box
    assert box == Box((15, 17, 8), (23, 25, 12))  # half of (4, 4, 2) per side, once


def test_an_roi_from_clicks_grows_when_the_mask_reaches_it_but_a_given_one_does_not():
    volume, gt = _cube_volume()
    session = Session(volume, method=Threshold(), grid=(16, 16, 8), advice=False, roi_margin_mm=3)
    session.add_click(FG, (18, 20, 10))
    result = session.step()  # the clicks' ROI (7 x 7 x 7) lies inside the object: it grows
    start, stop = np.array(result.box.start), np.array(result.box.stop)
    assert ((stop - start) > 7).all()
    roi = Box((15, 17, 7), (22, 24, 14))
    given = Session(volume, method=Threshold(), roi=roi, grid=(16, 16, 8), advice=False)
    given.add_click(FG, (18, 20, 10))
    assert given.step().box == roi
    fixed = Session(
        volume, method=Threshold(), grid=(16, 16, 8), advice=False, roi_margin_mm=3, grow_roi=0
    )
    fixed.add_click(FG, (18, 20, 10))
    assert fixed.step().box == Box((15, 17, 7), (22, 24, 14))


def test_a_click_outside_an_roi_from_clicks_grows_it_and_replays_the_history():
    volume, _ = _cube_volume()
    session = Session(
        volume, method=Threshold(), grid=(16, 16, 8), advice=False, roi_margin_mm=2, grow_roi=0
    )
    session.add_click(FG, (18, 20, 10))
    first = session.step()
    assert first.box == Box((16, 18, 8), (21, 23, 13))
    session.add_click(BG, (36, 36, 18))  # outside that ROI: taken, not refused
    second = session.step()
    assert second.box == Box((16, 18, 8), (39, 39, 20))  # both clicks plus 2, clipped
    assert second.mask[18, 20, 10] == 1 and second.mask[36, 36, 18] == 0
    assert session.history == ((Click(FG, (18, 20, 10)),), (Click(BG, (36, 36, 18)),))
    undone = session.undo()  # step 1 again, on the grown ROI
    assert undone is not None and undone.step == 1 and undone.mask[18, 20, 10] == 1
