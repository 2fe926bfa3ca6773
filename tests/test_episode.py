import numpy as np

from conftest import sphere
from mecca import methods
from mecca.data.roi import Box, make_crop
from mecca.episode import adapt_clicks, clicks_to_grid, run_episode
from mecca.interaction.clicks import Click, InteractionKind
from mecca.interaction.users import make_user


def test_clicks_to_grid_maps_through_crop():
    image = np.zeros((40, 40, 40), np.float32)
    crop = make_crop(image, Box((10, 10, 10), (30, 30, 30)), grid=(40, 40, 10))
    (click,) = clicks_to_grid(crop, [Click(InteractionKind.FOREGROUND, (20, 20, 20))])
    assert click.kind is InteractionKind.FOREGROUND
    np.testing.assert_allclose(click.position, np.rint(crop.to_grid(np.array([[20, 20, 20]])))[0])


def test_edge_clicks_become_fg_bg_pairs_for_fg_bg_methods():
    gt = sphere((30, 30, 30), (15, 15, 15), 8)
    edge = Click(InteractionKind.EDGE, (7, 15, 15))
    fg_bg = frozenset({InteractionKind.FOREGROUND, InteractionKind.BACKGROUND})
    out = adapt_clicks([edge], fg_bg, gt)
    assert [c.kind for c in out] == [InteractionKind.FOREGROUND, InteractionKind.BACKGROUND]
    assert gt[out[0].position] and not gt[out[1].position]


def test_episode_improves_dice_and_is_reproducible():
    rng = np.random.default_rng(3)
    gt = sphere((48, 48, 32), (24, 22, 16), 9)
    image = gt * 2.0 + rng.normal(0, 0.3, gt.shape)
    runs = [
        run_episode(
            methods.get("random_walker"),
            image,
            gt,
            make_user("error_centre"),
            rng=np.random.default_rng(7),
            steps=3,
        )
        for _ in range(2)
    ]
    first = runs[0]
    assert first.initial_dice == 0.0
    assert len(first.steps) == 3 and first.dice_per_step[-1] > 0.85
    assert first.final_mask.shape == gt.shape
    assert first.dice_per_step == runs[1].dice_per_step
    assert first.box == runs[1].box


class _FixedProposals:
    """A proposal method whose only proposal is given: tests the simulated user's choice."""

    def __init__(self, seg):
        from mecca.methods.base import Proposal

        mask = np.ones(seg.shape, bool)
        fg = int(seg.sum())
        self.proposal = Proposal(mask, seg, added_foreground=fg, added_background=mask.size - fg)

    def propose(self, state, rng):
        return [self.proposal]

    def accept(self, state, proposal):
        from dataclasses import replace

        return replace(state, prob=proposal.seg.astype(np.float32)), None


def test_the_simulated_user_rejects_a_proposal_that_would_lower_dice():
    from mecca.episode import accept_closest
    from mecca.methods.base import MethodState

    grid = (12, 12, 8)
    gt = sphere(grid, (6, 6, 4), 3)
    crop = make_crop(gt.astype(np.float32), Box((0, 0, 0), grid), grid=grid)
    good = MethodState(crop, prob=gt.astype(np.float32) * 0.9)
    worse = _FixedProposals(sphere(grid, (6, 6, 4), 2))  # a smaller ball: lower Dice
    state, _, accepted = accept_closest(worse, good, gt, np.random.default_rng(0))
    assert not accepted and state is good
    empty = MethodState(crop, prob=np.zeros(grid, np.float32))
    state, _, accepted = accept_closest(worse, empty, gt, np.random.default_rng(0))
    assert accepted and (state.prob > 0.5).sum() == worse.proposal.seg.sum()


class _AdviceInLowerHalf:
    """Random walker that advises the lower half (i < middle) of its grid after each step."""

    def __init__(self):
        self.inner = methods.get("random_walker")

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def step(self, state, clicks, rng):
        from dataclasses import replace

        state, result = self.inner.step(state, clicks, rng=rng)
        advice = np.zeros(result.prob.shape, np.int32)
        advice[: result.prob.shape[0] // 2] = 1
        return state, replace(result, advice=advice)


def test_a_guided_user_clicks_only_inside_the_previous_steps_advice():
    rng = np.random.default_rng(3)
    gt = sphere((48, 48, 32), (24, 22, 16), 9)
    image = gt * 2.0 + rng.normal(0, 1.0, gt.shape)  # noisy: errors remain after step 1
    box = Box((10, 8, 4), (38, 36, 28))
    record = run_episode(
        _AdviceInLowerHalf(), image, gt, make_user("edge", first=3, later=5),
        rng=np.random.default_rng(7), steps=3, box=box, grid=(28, 28, 24), guided=True,
    )
    first, *later = record.steps
    assert any(c.position[0] >= 24 for c in first.clicks)  # no advice before step 1
    later_clicks = [c for s in later for c in s.clicks]
    assert later_clicks and all(c.position[0] < 24 for c in later_clicks)


def test_guidance_changes_nothing_for_a_method_without_confidence():
    rng = np.random.default_rng(3)
    gt = sphere((48, 48, 32), (24, 22, 16), 9)
    image = gt * 2.0 + rng.normal(0, 1.0, gt.shape)
    plain, guided = (
        run_episode(methods.get("random_walker"), image, gt, make_user("edge"),
                    rng=np.random.default_rng(7), steps=2, guided=g)
        for g in (False, True)
    )
    assert len(plain.steps[1].clicks) == 5
    assert plain.dice_per_step == guided.dice_per_step
