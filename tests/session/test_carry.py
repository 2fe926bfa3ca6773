"""A grown ROI carries the mask so far for a method that carries its mask (once the click
history holds ``CARRY_FROM_STEPS`` steps), and undo/redo across that growth are exact."""

import numpy as np
import pytest

from mecca.data.roi import Box
from mecca.interaction.clicks import InteractionKind, box_prompt
from mecca.io import Volume
from mecca.methods.base import MethodState, StepResult
from mecca.server.sessions import replayed
from mecca.session import InteractionStore, Session
from mecca.session.session import CARRY_FROM_STEPS

FG, BG, BOX = InteractionKind.FOREGROUND, InteractionKind.BACKGROUND, InteractionKind.BOX
SHAPE = (40, 40, 20)


class Cubes:
    """Paints a cube of side 3 round each click (1 foreground, 0 background) over the
    probability it started from; records what it was started with and given. Its grid is
    the ROI's own, so nothing is resampled."""

    accepts = frozenset({FG, BG, BOX})
    name = "cubes"

    def __init__(self, carries: bool = True) -> None:
        self.carries_mask = carries
        self.calls: list[tuple[str, object]] = []

    def grid_for(self, shape, *, boxed=False):
        return tuple(int(n) for n in shape)

    def start(self, crop, *, init_prob=None):
        self.calls.append(("start", init_prob is not None))
        prob = np.zeros(crop.grid, np.float32) if init_prob is None else init_prob.copy()
        return MethodState(crop=crop, prob=prob)

    def step(self, state, new, *, rng):
        self.calls.append(("step", len(new)))
        prob = state.prob.copy()
        for click in new:
            if click.kind is BOX:
                continue
            i, j, k = click.position
            prob[max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2, max(k - 1, 0) : k + 2] = (
                1.0 if click.kind is FG else 0.0
            )
        return MethodState(state.crop, state.clicks + tuple(new), prob), StepResult(prob=prob)


def _session(method: Cubes, spacing: float = 1.0, **kw) -> Session:
    """A session whose ROI from clicks is the clicks plus 3 voxels (40 mm: the server's)."""
    image = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    volume = Volume(image, np.diag([spacing, spacing, spacing, 1.0]))
    kw.setdefault("grow_roi", 0)
    kw.setdefault("rng", 0)
    return Session(volume, method=method, advice=False, roi_margin_mm=3 * spacing, **kw)


def _three_steps(session: Session) -> list:
    """Two steps inside the first clicks' ROI, then a click that leaves it."""
    results = []
    for clicks in ([(FG, (10, 10, 10))], [(FG, (12, 11, 10))], [(FG, (30, 30, 10))]):
        session.add_clicks(clicks)
        results.append(session.step())
    return results


def test_a_grown_roi_starts_from_the_mask_so_far_with_every_click_in_one_step():
    assert CARRY_FROM_STEPS == 2
    method = Cubes()
    session = _session(method)
    first, second, third = _three_steps(session)
    assert second.box == first.box and third.box != first.box and session.roi_follows_clicks
    # steps 1-2 on the first ROI; then a predictor on the grown ROI that starts from the
    # mask so far and gets both earlier clicks in one step, then the new click
    assert method.calls == [
        ("start", False),
        ("step", 1),
        ("step", 1),
        ("start", True),
        ("step", 2),
        ("step", 1),
    ]
    for ijk in ((10, 10, 10), (12, 11, 10), (30, 30, 10)):
        assert third.mask[ijk] == 1
    assert session.n_steps == 3 and session.predictor.n_steps == 2


def test_undo_across_a_carried_growth_brings_back_the_smaller_roi_exactly_and_redo_the_grown():
    session = _session(Cubes())
    first, second, third = _three_steps(session)
    undone = session.undo()
    assert undone.box == second.box == session.roi
    np.testing.assert_array_equal(undone.prob_box, second.prob_box)
    assert session.undo().box == first.box
    redone = session.redo()
    np.testing.assert_array_equal(redone.prob_box, second.prob_box)
    again = session.redo()
    assert again.box == third.box == session.roi
    np.testing.assert_array_equal(again.prob_box, third.prob_box)
    with pytest.raises(Exception, match="nothing to redo"):
        session.redo()
    # a new step after undoing the growth runs on the smaller ROI and drops the redo
    session.undo()
    session.add_click(BG, (11, 12, 10))
    fourth = session.step()
    assert fourth.box == first.box and not session.can_redo
    assert session.undo().box == first.box


def test_the_first_steps_growth_and_a_method_that_does_not_carry_replay():
    method = Cubes()
    session = _session(method)
    session.add_click(FG, (10, 10, 10))
    session.step()
    session.add_click(FG, (30, 30, 10))  # leaves the ROI with one step of history
    session.step()
    assert method.calls[2:] == [("start", False), ("step", 1), ("step", 1)]
    plain = Cubes(carries=False)
    _three_steps(_session(plain))
    assert plain.calls[3:] == [("start", False), ("step", 1), ("step", 1), ("step", 1)]


def test_a_mask_reaching_the_border_carries_too_and_undo_shrinks_back():
    method = Cubes()
    session = _session(method, grow_roi=1)
    session.add_click(FG, (10, 10, 10))
    first = session.step()  # the cube lies inside the ROI (clicks plus 3 voxels)
    assert first.box.start == (7, 7, 7)
    session.add_click(FG, (8, 10, 10))  # its cube reaches the ROI's side at i = 7
    grown = session.step()
    assert grown.box != first.box and grown.box.start[0] < 7
    assert method.calls[-2:] == [("start", True), ("step", 2)]
    assert grown.mask[7, 10, 10] == 1 and grown.mask[10, 10, 10] == 1
    assert session.undo().box == first.box


def test_a_reloaded_session_replays_to_the_same_mask():
    session = _session(Cubes(), spacing=40 / 3, grow_roi=None)
    *_, third = _three_steps(session)
    store = InteractionStore.from_dict(session.store.to_dict())
    again = replayed(session.volume, Cubes(), None, store, {})
    assert again.result.box == third.box
    np.testing.assert_array_equal(again.result.prob_box, third.prob_box)


def test_a_click_outside_the_users_box_grows_its_roi_from_the_box_step_on():
    method = Cubes()
    box = Box((8, 8, 8), (14, 14, 12))
    session = _session(method, roi=box, roi_as_box=True)
    first_roi = session.roi
    assert first_roi == box_prompt(box, SHAPE)[0] and session.roi_follows_clicks
    session.add_click(FG, (10, 10, 10))
    inside = session.step()
    session.add_click(FG, (30, 12, 10))  # the object goes on beyond the box
    grown = session.step()
    joint = Box((8, 8, 8), (31, 14, 12))  # the box and both clicks, plus a quarter per side
    assert grown.box == session.roi == box_prompt(joint, SHAPE)[0]
    # the box step counts: carried from the mask so far, the box corners and both clicks
    assert method.calls[-3:] == [("start", True), ("step", 3), ("step", 1)]
    assert grown.mask[10, 10, 10] == 1 and grown.mask[30, 12, 10] == 1
    undone = session.undo()
    assert undone.box == first_roi
    np.testing.assert_array_equal(undone.prob_box, inside.prob_box)
    session.redo()
    session.reset()
    assert session.roi == first_roi and session.n_steps == 0
    given = _session(Cubes(), roi=box)  # an ROI given as such stays a limit
    assert not given.roi_follows_clicks
    with pytest.raises(Exception, match="outside the ROI"):
        given.add_click(FG, (30, 12, 10))
