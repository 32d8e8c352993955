"""Preference margins: pure functions over per-token log-probabilities (no model, no I/O).

For a prompt x and a pair (y_w chosen, y_l rejected), with per-token log-probabilities log π(y_t | x, y_<t):

    summed log-prob       log π(y|x)      = Σ_t log π(y_t | x, y_<t)
    per-token log-prob    log π(y|x) / |y|
    margin                m = log π(y_w|x) − log π(y_l|x)          (summed; the pair "wins" when m > 0)
    preference accuracy   mean over pairs of [m > 0]

For a policy π with a reference π_ref (the adapter it was trained from, or the base model), DPO's implicit reward
(Rafailov et al. 2023, eq. 5; TRL `DPOTrainer._compute_loss`, trl 1.16) is

    r(x, y)               = β · (log π(y|x) − log π_ref(y|x))
    rewards/chosen        = mean r(x, y_w)            rewards/rejected = mean r(x, y_l)
    rewards/margins       = mean [r(x, y_w) − r(x, y_l)]
    rewards/accuracies    = mean [r(x, y_w) > r(x, y_l)]          (strict: a tie counts as a miss, as in TRL)

The summed log-probability is what DPO optimises, so margins and rewards use sums; the per-token means are
reported alongside because a longer answer has a lower summed log-prob regardless of quality.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class PairLogps:
    """Per-token log-probabilities of one scored preference pair under one model."""

    pair_id: str
    kind: str
    chosen: tuple[float, ...]
    rejected: tuple[float, ...]

    @property
    def chosen_logp(self) -> float:
        return summed_logp(self.chosen)

    @property
    def rejected_logp(self) -> float:
        return summed_logp(self.rejected)


def summed_logp(token_logps: Sequence[float]) -> float:
    """log π(y|x) = Σ_t log π(y_t | x, y_<t)."""
    return float(np.sum(np.asarray(token_logps, dtype=np.float64)))


def mean_logp(token_logps: Sequence[float]) -> float:
    """Per-token log-prob: log π(y|x) / |y|. An empty completion has no tokens to average: an error."""
    if len(token_logps) == 0:
        raise ValueError("mean_logp of an empty completion is undefined")
    return summed_logp(token_logps) / len(token_logps)


def preference_margins(chosen_logps: Sequence[float], rejected_logps: Sequence[float]) -> np.ndarray:
    """m_i = log π(y_w,i) − log π(y_l,i), one per pair."""
    chosen = np.asarray(chosen_logps, dtype=np.float64)
    rejected = np.asarray(rejected_logps, dtype=np.float64)
    if chosen.shape != rejected.shape:
        raise ValueError(f"{chosen.shape[0]} chosen vs {rejected.shape[0]} rejected log-probs: they must pair up")
    return chosen - rejected


def preference_accuracy(margins: Sequence[float]) -> float:
    """Share of pairs with m > 0 (a tie is not a win)."""
    margins = np.asarray(margins, dtype=np.float64)
    if margins.size == 0:
        raise ValueError("preference_accuracy of zero pairs is undefined")
    return float(np.mean(margins > 0))


@dataclass(frozen=True)
class ImplicitRewards:
    """TRL's DPO reward metrics over a set of pairs (same names as TRL logs them, without the prefix)."""

    chosen: float  # rewards/chosen
    rejected: float  # rewards/rejected
    margins: float  # rewards/margins
    accuracies: float  # rewards/accuracies
    per_pair_margins: tuple[float, ...] = field(repr=False, default=())


def dpo_implicit_rewards(policy_chosen: Sequence[float], policy_rejected: Sequence[float],
                         ref_chosen: Sequence[float], ref_rejected: Sequence[float], beta: float) -> ImplicitRewards:
    """β·(log π − log π_ref) for chosen and rejected summed log-probs, aggregated as TRL 1.16 logs them."""
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    chosen_rewards = beta * (np.asarray(policy_chosen, np.float64) - np.asarray(ref_chosen, np.float64))
    rejected_rewards = beta * (np.asarray(policy_rejected, np.float64) - np.asarray(ref_rejected, np.float64))
    if chosen_rewards.shape != rejected_rewards.shape or chosen_rewards.size == 0:
        raise ValueError("implicit rewards need the same, non-zero number of chosen and rejected log-probs")
    margins = chosen_rewards - rejected_rewards
    return ImplicitRewards(
        chosen=float(chosen_rewards.mean()),
        rejected=float(rejected_rewards.mean()),
        margins=float(margins.mean()),
        accuracies=float(np.mean(chosen_rewards > rejected_rewards)),
        per_pair_margins=tuple(float(m) for m in margins),
    )


@dataclass(frozen=True)
class MarginSummary:
    """Margin statistics of one model over one group of pairs."""

    n: int
    chosen_logp: float  # mean summed log-prob of chosen answers
    rejected_logp: float
    chosen_logp_per_token: float  # mean per-token log-prob
    rejected_logp_per_token: float
    margin_mean: float
    margin_median: float
    accuracy: float
    rewards: ImplicitRewards | None = None  # only for a model with a reference


def summarize_margins(pairs: Sequence[PairLogps], ref_pairs: Sequence[PairLogps] | None = None,
                      beta: float | None = None) -> MarginSummary:
    """Margin statistics for `pairs`; with `ref_pairs` (same pair ids, same order) and `beta`, also DPO rewards."""
    if not pairs:
        raise ValueError("no pairs to summarise")
    chosen = [p.chosen_logp for p in pairs]
    rejected = [p.rejected_logp for p in pairs]
    margins = preference_margins(chosen, rejected)
    rewards = None
    if ref_pairs is not None:
        if beta is None:
            raise ValueError("implicit rewards need beta (the DPO run's beta, from the adapter's palate.json)")
        if [p.pair_id for p in ref_pairs] != [p.pair_id for p in pairs]:
            raise ValueError("reference log-probs must cover the same pairs in the same order")
        rewards = dpo_implicit_rewards(chosen, rejected, [p.chosen_logp for p in ref_pairs],
                                       [p.rejected_logp for p in ref_pairs], beta)
    return MarginSummary(
        n=len(pairs),
        chosen_logp=float(np.mean(chosen)),
        rejected_logp=float(np.mean(rejected)),
        chosen_logp_per_token=float(np.mean([mean_logp(p.chosen) for p in pairs])),
        rejected_logp_per_token=float(np.mean([mean_logp(p.rejected) for p in pairs])),
        margin_mean=float(margins.mean()),
        margin_median=float(np.median(margins)),
        accuracy=preference_accuracy(margins),
        rewards=rewards,
    )


def summarize_by_kind(pairs: Sequence[PairLogps], ref_pairs: Sequence[PairLogps] | None = None,
                      beta: float | None = None) -> dict[str, MarginSummary]:
    """`summarize_margins` per near-miss kind, plus the key "all" for every pair together."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index, pair in enumerate(pairs):
        groups[pair.kind].append(index)
    out = {"all": summarize_margins(pairs, ref_pairs, beta)}
    for kind in sorted(groups):
        idx = groups[kind]
        out[kind] = summarize_margins([pairs[i] for i in idx],
                                      [ref_pairs[i] for i in idx] if ref_pairs is not None else None, beta)
    return out
