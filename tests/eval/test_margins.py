"""Margin math against values worked out by hand."""

import math

import pytest

from eval.margins import (PairLogps, dpo_implicit_rewards, mean_logp, preference_accuracy, preference_margins,
                          summarize_by_kind, summarize_margins, summed_logp)


def test_summed_and_mean_logp():
    assert summed_logp([-0.5, -1.0, -1.5]) == pytest.approx(-3.0)
    assert mean_logp([-0.5, -1.0, -1.5]) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        mean_logp([])


def test_margins_and_accuracy_tie_is_a_miss():
    margins = preference_margins([-3.0, -5.0, -2.0, -4.0], [-4.0, -4.0, -2.0, -9.0])
    assert list(margins) == pytest.approx([1.0, -1.0, 0.0, 5.0])
    # wins: pair 0 and 3; pair 2 is a tie and counts as a miss (TRL uses a strict '>')
    assert preference_accuracy(margins) == pytest.approx(0.5)


def test_margins_must_pair_up():
    with pytest.raises(ValueError):
        preference_margins([-1.0, -2.0], [-1.0])


def test_dpo_implicit_rewards_hand_worked():
    # beta 0.1; pair 1: policy (-10, -20), ref (-12, -18): r_w = 0.1*2 = 0.2, r_l = 0.1*(-2) = -0.2, margin 0.4
    # pair 2: policy (-8, -9), ref (-7, -10): r_w = -0.1, r_l = 0.1, margin -0.2
    rewards = dpo_implicit_rewards([-10, -8], [-20, -9], [-12, -7], [-18, -10], beta=0.1)
    assert rewards.chosen == pytest.approx((0.2 - 0.1) / 2)
    assert rewards.rejected == pytest.approx((-0.2 + 0.1) / 2)
    assert rewards.margins == pytest.approx((0.4 - 0.2) / 2)
    assert rewards.accuracies == pytest.approx(0.5)
    assert rewards.per_pair_margins == pytest.approx((0.4, -0.2))


def test_implicit_reward_differs_from_raw_margin():
    # Raw margin is negative (chosen is longer, so less likely) but the policy moved towards chosen vs the reference.
    rewards = dpo_implicit_rewards([-30.0], [-10.0], [-35.0], [-9.0], beta=0.5)
    assert preference_accuracy(preference_margins([-30.0], [-10.0])) == 0.0
    assert rewards.accuracies == 1.0
    assert rewards.margins == pytest.approx(0.5 * (5.0 - (-1.0)))


def test_dpo_rejects_bad_beta():
    with pytest.raises(ValueError):
        dpo_implicit_rewards([-1], [-1], [-1], [-1], beta=0)


def _pair(pid, kind, chosen, rejected):
    return PairLogps(pid, kind, tuple(chosen), tuple(rejected))


def test_summaries_by_kind():
    policy = [
        _pair("a", "hype", [-1.0, -1.0], [-2.0, -2.0, -2.0]),  # -2 vs -6: margin 4
        _pair("b", "hype", [-3.0], [-1.0]),  # margin -2
        _pair("c", "vague", [-0.5, -0.5], [-1.0]),  # margin 0
    ]
    ref = [
        _pair("a", "hype", [-1.5, -1.5], [-1.0, -1.0, -1.0]),  # -3 vs -3
        _pair("b", "hype", [-2.0], [-2.0]),
        _pair("c", "vague", [-1.0, -1.0], [-1.0]),  # -2 vs -1
    ]
    by_kind = summarize_by_kind(policy, ref, beta=0.1)
    assert set(by_kind) == {"all", "hype", "vague"}
    everything = by_kind["all"]
    assert everything.n == 3
    assert everything.margin_mean == pytest.approx((4 - 2 + 0) / 3)
    assert everything.margin_median == pytest.approx(0.0)
    assert everything.accuracy == pytest.approx(1 / 3)
    assert everything.chosen_logp == pytest.approx((-2 - 3 - 1) / 3)
    assert everything.chosen_logp_per_token == pytest.approx((-1 - 3 - 0.5) / 3)
    assert everything.rejected_logp_per_token == pytest.approx((-2 - 1 - 1) / 3)
    hype = by_kind["hype"]
    assert hype.n == 2 and hype.accuracy == pytest.approx(0.5)
    # hype rewards: a: r_w = 0.1*(-2+3) = 0.1, r_l = 0.1*(-6+3) = -0.3 -> 0.4; b: r_w = -0.1, r_l = 0.1 -> -0.2
    assert hype.rewards.margins == pytest.approx(0.1)
    assert hype.rewards.accuracies == pytest.approx(0.5)
    vague = by_kind["vague"]
    # c: r_w = 0.1*(-1+2) = 0.1, r_l = 0 -> margin 0.1 > 0
    assert vague.rewards.accuracies == 1.0 and vague.accuracy == 0.0
    assert math.isclose(vague.rewards.margins, 0.1)


def test_summary_needs_matching_reference():
    policy = [_pair("a", "hype", [-1.0], [-2.0])]
    with pytest.raises(ValueError):
        summarize_margins(policy, [_pair("zzz", "hype", [-1.0], [-2.0])], beta=0.1)
    with pytest.raises(ValueError):
        summarize_margins(policy, policy, beta=None)
