import json
from dataclasses import dataclass, replace

import numpy as np
import pytest

from conftest import sphere
from mecca import methods
from mecca.data.roi import Box
from mecca.errors import ConfigError, InputError, OverwriteError
from mecca.interaction.clicks import Click, InteractionKind
from mecca.interaction.guide import segments_for_step
from mecca.interaction.users import EdgeUser
from mecca.io import Volume, load
from mecca.methods.base import MethodState, StepResult
from mecca.methods.classical import RandomWalkerMethod
from mecca.session import InteractionStore, Predictor, Session
from mecca.session.labels import LabelSession

FG, BG, EDGE = InteractionKind.FOREGROUND, InteractionKind.BACKGROUND, InteractionKind.EDGE
SHAPE = (48, 44, 24)
CENTRE = (24, 22, 12)
SMALL_GRID = (32, 32, 20)  # keeps the random walker quick in tests that need no accuracy

# LPS-like: i runs to the left, j to the posterior, anisotropic voxels, shifted origin
LPS_AFFINE = np.array(
    [[-0.8, 0.0, 0.0, 30.0], [0.0, -1.2, 0.0, -12.0], [0.0, 0.0, 2.5, 7.0], [0, 0, 0, 1]]
)


def _ball_volume(affine: np.ndarray | None = None) -> tuple[Volume, np.ndarray]:
    rng = np.random.default_rng(0)
    gt = sphere(SHAPE, CENTRE, 7)
    image = (gt * 2.0 + rng.normal(0, 0.2, SHAPE)).astype(np.float32)
    return Volume(image, np.eye(4) if affine is None else affine), gt


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def _session(**kw) -> tuple[Session, np.ndarray]:
    volume, gt = _ball_volume()
    kw.setdefault("grid", SMALL_GRID)
    kw.setdefault("method", "random_walker")
    return Session(volume, **kw), gt


@dataclass
class ConfidentWalker(RandomWalkerMethod):
    """Random walker that also reports a confidence, to exercise the advice path."""

    name: str = "confident_walker"

    def step(self, state, new, *, rng):
        state, result = super().step(state, new, rng=rng)
        conf = np.abs(2 * result.prob - 1).astype(np.float32)
        return state, replace(result, confidence=conf)


class NoisyMethod:
    """A method whose output is random: redo must restore it exactly, not recompute it."""

    name = "noisy"
    accepts = frozenset({FG, BG})

    def start(self, crop, *, init_prob=None):
        return MethodState(crop=crop, prob=np.zeros(crop.grid, np.float32))

    def step(self, state, new, *, rng):
        prob = rng.random(state.crop.grid).astype(np.float32)
        return MethodState(state.crop, state.clicks + tuple(new), prob), StepResult(prob=prob)


# --------------------------------------------------------------------------- session


def test_one_click_segments_ball_on_original_grid():
    volume, gt = _ball_volume()
    session = Session(volume, method="random_walker")  # grid (55, 55, 30)
    session.add_click(FG, CENTRE)
    result = session.step()
    assert result.mask.shape == volume.shape and result.mask.dtype == np.uint8
    assert result.prob.shape == volume.shape and result.prob.dtype == np.float32
    assert _dice(result.mask, gt) > 0.9
    assert result.step == 1 and result.confidence is None and result.advice is None
    np.testing.assert_array_equal(result.mask[result.box.slices], result.mask_box)
    assert result.prob_box.shape == result.box.shape
    assert result.seconds > 0 and result.total_seconds >= result.seconds
    assert session.history == ((Click(FG, CENTRE),),) and session.pending == ()


def test_roi_from_first_clicks_and_zero_outside():
    session, _ = _session(roi_margin_mm=8.0)
    session.add_clicks([(FG, (22, 20, 12)), Click(FG, (26, 24, 12))])
    assert session.roi is None
    result = session.step()
    expected = Box((14, 12, 4), (35, 33, 21))  # clicks' box grown by 8 voxels (1 mm spacing)
    assert session.roi == expected and result.box == expected
    outside = np.ones(SHAPE, bool)
    outside[expected.slices] = False
    assert not result.prob[outside].any() and not result.mask[outside].any()


def test_roi_margin_in_mm_uses_spacing():
    volume, _ = _ball_volume(LPS_AFFINE)  # spacing 0.8, 1.2, 2.5 mm
    session = Session(volume, method="random_walker", grid=SMALL_GRID, roi_margin_mm=5.0)
    session.add_click(FG, CENTRE)
    session.step()
    margin = (7, 5, 2)  # ceil(5 / spacing)
    assert session.roi == Box(
        tuple(c - m for c, m in zip(CENTRE, margin, strict=True)),
        tuple(c + m + 1 for c, m in zip(CENTRE, margin, strict=True)),
    )


def test_first_step_needs_roi_or_clicks():
    session, _ = _session()
    with pytest.raises(InputError, match="no ROI and no clicks"):
        session.step()
    assert session.roi is None and session.result is None


def test_step_without_new_clicks_is_allowed():
    session, _ = _session(roi=Box((10, 10, 4), (38, 34, 20)))
    session.add_click(FG, CENTRE)
    first = session.step()
    again = session.step()
    assert again.step == 2 and session.history[-1] == ()
    np.testing.assert_array_equal(again.mask, first.mask)


def test_undo_restores_previous_mask_and_redo_gives_it_back():
    session, _ = _session(roi=Box((10, 10, 4), (38, 34, 20)))
    session.add_click(FG, CENTRE)
    first = session.step()
    session.add_click(BG, CENTRE)  # a correction that changes the mask
    second = session.step()
    assert not np.array_equal(first.mask, second.mask)

    back = session.undo()
    assert back is not None and back.step == 1
    np.testing.assert_array_equal(back.mask, first.mask)
    np.testing.assert_array_equal(back.prob, first.prob)
    assert session.history == ((Click(FG, CENTRE),),) and session.can_redo

    again = session.redo()
    assert again.step == 2
    np.testing.assert_array_equal(again.mask, second.mask)
    assert session.history == ((Click(FG, CENTRE),), (Click(BG, CENTRE),))

    assert session.undo() is not None and session.undo() is None
    assert session.result is None and not session.can_undo
    with pytest.raises(InputError, match="nothing to undo"):
        session.undo()


def test_new_step_clears_redo_and_pending_survives_undo():
    session, _ = _session(roi=Box((10, 10, 4), (38, 34, 20)))
    session.add_click(FG, CENTRE)
    session.step()
    session.add_click(BG, (12, 12, 6))
    session.undo()
    assert session.pending == (Click(BG, (12, 12, 6)),)  # queued clicks are not lost
    session.clear_pending()
    session.add_click(FG, (23, 22, 12))
    session.step()
    assert not session.can_redo
    with pytest.raises(InputError, match="nothing to redo"):
        session.redo()


def test_redo_is_exact_for_a_random_method():
    session, _ = _session(method=NoisyMethod(), roi=Box((0, 0, 0), SHAPE), rng=3)
    first = session.step()
    second = session.step()
    session.undo()
    np.testing.assert_array_equal(session.redo().prob, second.prob)
    session.undo()
    session.undo()
    np.testing.assert_array_equal(session.redo().prob, first.prob)


def test_reset_given_roi_is_kept_derived_roi_is_forgotten():
    box = Box((10, 10, 4), (38, 34, 20))
    session, _ = _session(roi=box)
    session.add_click(FG, CENTRE)
    session.step()
    session.add_click(BG, (11, 11, 5))
    session.reset()
    assert session.result is None and session.history == () and session.pending == ()
    assert session.roi == box and session.predictor is not None
    assert session.predictor.n_steps == 0

    derived, _ = _session()
    derived.add_click(FG, CENTRE)
    derived.step()
    derived.reset()
    assert derived.roi is None and derived.predictor is None
    derived.add_click(FG, (2, 2, 2))  # far from the old ROI: allowed again
    assert derived.step().box.start == (0, 0, 0)


def test_set_roi_resets_and_checks_the_box():
    session, _ = _session()
    session.add_click(FG, CENTRE)
    session.step()
    session.set_roi(Box((5, 5, 2), (40, 40, 22)))
    assert session.history == () and session.result is None
    with pytest.raises(InputError, match="exceeds the volume"):
        session.set_roi(Box((0, 0, 0), (60, 10, 10)))


class BoxRecorder:
    """Takes boxes and records the clicks each step gives it (on the network grid)."""

    name = "box_recorder"
    accepts = frozenset({FG, BG, InteractionKind.BOX})

    def __init__(self):
        self.steps: list[list[Click]] = []

    def start(self, crop, *, init_prob=None):
        return MethodState(crop=crop, prob=np.zeros(crop.grid, np.float32))

    def step(self, state, new, *, rng):
        self.steps.append(list(new))
        prob = np.full(state.crop.grid, 0.6, np.float32)
        return MethodState(state.crop, state.clicks + tuple(new), prob), StepResult(prob=prob)


def test_the_users_box_is_a_box_prompt_for_a_method_that_takes_boxes():
    volume, _ = _ball_volume()
    box = Box((16, 14, 6), (32, 30, 18))
    recorder = BoxRecorder()
    session = Session(volume, box, method=recorder, grid=SMALL_GRID, roi_as_box=True)
    assert session.box == box and session.box_prompted
    assert session.roi == Box((12, 10, 3), (36, 34, 21))  # a quarter of the box per side
    session.step()  # the box alone
    kinds = [c.kind for c in recorder.steps[0]]
    assert kinds == [InteractionKind.BOX, InteractionKind.BOX]
    assert session.history == ((),)  # the corners are not clicks of the history
    session.add_click(FG, (13, 11, 4))  # in the margin around the box: allowed
    session.step()
    assert [c.kind for c in recorder.steps[1]] == [FG]
    session.undo()
    session.undo()
    session.add_click(BG, (20, 20, 10))
    session.step()  # the first step again: the corners come first
    assert [c.kind for c in recorder.steps[2]] == [InteractionKind.BOX, InteractionKind.BOX, BG]
    session.set_roi(box)  # an ROI, not a box: no prompt, the ROI as given
    assert session.box is None and session.roi == box


def test_a_method_without_boxes_segments_in_the_same_crop_round_the_users_box():
    volume, _ = _ball_volume()
    box = Box((16, 14, 6), (32, 30, 18))
    session = Session(volume, box, method="random_walker", grid=SMALL_GRID, roi_as_box=True)
    assert session.box == box and not session.box_prompted
    assert session.roi == Box((12, 10, 3), (36, 34, 21))


def test_world_click_lands_on_the_same_voxel():
    volume, _ = _ball_volume(LPS_AFFINE)
    session = Session(volume, method="random_walker", grid=SMALL_GRID)
    target = (13, 7, 3)
    xyz = volume.voxel_to_world(np.array(target, float))
    # anywhere within (just under) half a voxel of its centre
    nudge = np.array([0.8, 1.2, 2.5]) * np.array([0.45, -0.45, 0.3])
    click = session.add_click_world(FG, xyz + nudge @ volume.direction.T)
    assert click.position == target and session.pending == (Click(FG, target),)
    assert np.allclose(xyz, [30 - 0.8 * 13, -12 - 1.2 * 7, 7 + 2.5 * 3])
    with pytest.raises(InputError, match="world position .* outside the volume"):
        session.add_click_world(FG, (500.0, 0.0, 0.0))
    assert session.pending == (Click(FG, target),)


def test_refused_clicks_leave_state_unchanged():
    session, _ = _session(roi=Box((10, 10, 4), (38, 34, 20)))
    session.add_click(FG, CENTRE)
    before = session.step()
    session.add_click(BG, (12, 12, 6))
    with pytest.raises(InputError, match="outside the volume of shape"):
        session.add_click(FG, (48, 0, 0))
    with pytest.raises(InputError, match="outside the ROI"):
        session.add_click(FG, (2, 2, 2))
    with pytest.raises(InputError, match="cannot take edge clicks.*background, foreground"):
        session.add_click(EDGE, CENTRE)
    with pytest.raises(InputError, match="unknown interaction kind"):
        session.add_click("lasso", CENTRE)
    with pytest.raises(InputError):  # one bad click in a batch: none is queued
        session.add_clicks([(FG, (20, 20, 10)), (FG, (-1, 5, 5))])
    assert session.pending == (Click(BG, (12, 12, 6)),)
    assert session.result is before and session.history == ((Click(FG, CENTRE),),)


def test_export_mask_writes_on_the_volume_grid(tmp_path):
    volume, gt = _ball_volume(LPS_AFFINE)
    session = Session(volume, method="random_walker", grid=SMALL_GRID)
    with pytest.raises(InputError, match="nothing to export"):
        session.export_mask(tmp_path / "early.nii.gz")
    session.add_click(FG, CENTRE)
    result = session.step()
    path = session.export_mask(tmp_path / "mask.nii.gz")
    back = load(path, dtype=None)
    assert back.shape == volume.shape
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-5)
    np.testing.assert_array_equal(back.array, result.mask)
    with pytest.raises(OverwriteError):
        session.export_mask(path)
    assert session.export_mask(path, force=True) == path


def test_confidence_gives_advice_on_the_original_grid():
    box = Box((10, 10, 4), (38, 34, 20))
    session, _ = _session(method=ConfidentWalker(), roi=box)
    session.add_click(FG, CENTRE)
    result = session.step()
    assert result.confidence is not None and result.confidence.shape == SHAPE
    assert result.advice is not None and result.advice.dtype == np.int32
    assert result.advice.shape == SHAPE
    assert set(np.unique(result.advice)) == {0, 1, 2, 3, 4, 5}
    outside = np.ones(SHAPE, bool)
    outside[box.slices] = False
    assert not result.advice[outside].any()
    # undo/redo keep the advice computed at the step
    session.step()
    session.undo()
    np.testing.assert_array_equal(session.redo().advice, session.result.advice)


def test_default_method_is_the_generalist_as_everywhere_a_user_arrives():
    volume, gt = _ball_volume()
    session = Session(volume)
    assert session.method.name == methods.registry.DEFAULT_METHOD == "generalist"
    session.add_click("foreground", CENTRE)
    result = session.step()
    assert _dice(result.mask, gt) > 0.5
    assert LabelSession(volume).method == "generalist"


def test_the_shipped_mecca_model_gives_advice():
    volume, gt = _ball_volume()
    box = Box((10, 10, 4), (38, 34, 20))
    session = Session(volume, roi=box, method="mecca")
    assert session.method.name == "mecca" and session.grid == session.method.grid
    predictor = session.predictor
    assert predictor is not None and predictor.supervoxels is not None
    user = EdgeUser()
    rng = np.random.default_rng(0)
    session.add_clicks(user(np.zeros(SHAPE, bool), gt, step=1, rng=rng))
    result = session.step()
    assert result.confidence is not None and result.advice is not None
    assert 1 <= result.advice_box.max() <= 5 and result.advice_box.shape == box.shape
    outside = np.ones(SHAPE, bool)
    outside[box.slices] = False
    assert not result.advice[outside].any() and not result.prob[outside].any()
    np.testing.assert_array_equal(result.advice[box.slices], result.advice_box)
    # step 1's supervoxels were started with the crop, step 2's right after step 1
    assert segments_for_step(1) in predictor.supervoxels.computed()
    predictor.supervoxels.get(segments_for_step(2))
    assert predictor.supervoxels.computed() == sorted({segments_for_step(1), segments_for_step(2)})


def test_bad_method_and_volume():
    volume, _ = _ball_volume()
    with pytest.raises(ConfigError, match="random_walker"):
        Session(volume, method="no_such_method")
    with pytest.raises(ConfigError, match="not an interactive method"):
        Session(volume, method=object())
    with pytest.raises(InputError, match="3D"):
        Session(Volume(np.zeros((4, 4, 4, 2)), np.eye(4)))


# --------------------------------------------------------------------------- parts


def test_interaction_store_json_round_trip():
    store = InteractionStore()
    store.queue([Click(FG, (1, 2, 3)), Click(EDGE, (4, 5, 6))])
    store.commit()
    store.queue([Click(BG, (7, 8, 9))])
    store.commit()
    store.undo()
    store.queue([Click(FG, (0, 0, 0))])
    text = json.dumps(store.to_dict())
    back = InteractionStore.from_dict(json.loads(text))
    assert back.steps == store.steps and back.pending == store.pending
    assert back.redo_steps == ((Click(BG, (7, 8, 9)),),)
    assert back.to_dict() == store.to_dict()


def test_interaction_store_refuses_malformed_records():
    with pytest.raises(InputError, match="not a MECCA interaction record"):
        InteractionStore.from_dict({"steps": []})
    record = InteractionStore().to_dict()
    with pytest.raises(InputError, match="version"):
        InteractionStore.from_dict({**record, "version": 99})
    with pytest.raises(InputError, match="not a click record"):
        InteractionStore.from_dict({**record, "steps": [[{"kind": "foreground"}]]})


def test_predictor_undo_redo_on_the_grid():
    volume, _ = _ball_volume()
    session = Session(volume, roi=Box((0, 0, 0), SHAPE), method="random_walker", grid=SMALL_GRID)
    assert session.predictor is not None
    predictor = Predictor(NoisyMethod(), session.predictor.crop)
    rng = np.random.default_rng(0)
    assert predictor.result is None and predictor.n_steps == 0
    first = predictor.step([], rng=rng)
    predictor.step([Click(FG, (5, 5, 5))], rng=rng)
    assert predictor.state.clicks == (Click(FG, (5, 5, 5)),)
    assert predictor.undo() is first and predictor.state.clicks == ()
    assert predictor.redo().prob.shape == SMALL_GRID
    predictor.reset()
    assert predictor.n_steps == 0 and not predictor.can_redo
