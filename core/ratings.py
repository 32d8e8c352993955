"""Arena leaderboard math: Bradley–Terry ratings, bootstrap intervals, pairwise win rates. Pure functions.

Model (Bradley & Terry 1952): contestant i has strength p_i > 0 and beats j with probability p_i / (p_i + p_j).
Ratings are on the Elo scale, r_i = 400 * log10(p_i) + const, so a 400-point gap means 10:1 odds. The constant puts
the mean rating at 1000 (or one named `anchor` contestant exactly at 1000).

Ties count as half a win for each side, as Chatbot Arena does; `both_bad` is a tie too (Chatbot Arena's
"tie (bothbad)"). The maximum-likelihood strengths are found with Hunter's (2004) MM iteration

    p_i <- W_i / sum_j n_ij / (p_i + p_j)

where W_i is i's (half-)win total and n_ij the number of games between i and j. The MLE exists only when every
contestant has won and lost something inside a connected comparison graph; `pseudo_ties` adds that many virtual
tie games between every pair of contestants (a prior that pulls ratings together), which makes it always exist.
Leaderboards use a small prior so that an unbeaten newcomer has a finite rating; tests use 0 to check the MLE.

Votes arrive as `Outcome(a, b, result)`: result is "A" (a won), "B" (b won), "tie" or "both_bad"; optional
`len_a`/`len_b` (answer lengths in tokens) feed the length-controlled rating (`core.length_control`).

The leaderboard that puts these together (with Rank(UB) and the length-controlled rating) is `core.leaderboard`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

SCALE = 400.0
ANCHOR_RATING = 1000.0
MIN_BOOTSTRAP_ROUNDS = 100
WILSON_Z_95 = 1.959963984540054
_SCORE = {"A": 1.0, "B": 0.0, "tie": 0.5, "both_bad": 0.5}


@dataclass(frozen=True)
class Outcome:
    """One judged battle: contestant `a` against `b`; `result` is "A", "B", "tie" or "both_bad"."""

    a: str
    b: str
    result: str
    len_a: int | None = None
    len_b: int | None = None

    def score_a(self) -> float:
        """a's score: 1 win, 0.5 tie (both_bad included), 0 loss."""
        try:
            return _SCORE[self.result]
        except KeyError:
            raise ValueError(f"unknown result {self.result!r}: use one of {sorted(_SCORE)}") from None


def contestant_names(outcomes: Sequence[Outcome], extra: Iterable[str] = ()) -> list[str]:
    names = set(extra)
    for o in outcomes:
        names.update((o.a, o.b))
    return sorted(names)


def tallies(outcomes: Sequence[Outcome], index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """wins[i, j]: i's (half-)wins over j; games[i, j]: games between i and j (symmetric). Self-pairs are ignored."""
    k = len(index)
    wins = np.zeros((k, k))
    games = np.zeros((k, k))
    for o in outcomes:
        i, j = index[o.a], index[o.b]
        if i == j:
            continue
        s = o.score_a()
        wins[i, j] += s
        wins[j, i] += 1.0 - s
        games[i, j] += 1.0
        games[j, i] += 1.0
    return wins, games


def _mm_strengths(wins: np.ndarray, games: np.ndarray, pseudo_ties: float, max_iter: int, tol: float) -> np.ndarray:
    """Hunter's MM iteration on tallies; returns log10 strengths with mean 0."""
    k = wins.shape[0]
    if pseudo_ties > 0:
        prior = pseudo_ties * (1.0 - np.eye(k))
        wins = wins + prior / 2.0
        games = games + prior
    total_wins = wins.sum(axis=1)
    p = np.ones(k)
    for _ in range(max_iter):
        denom = (games / (p[:, None] + p[None, :])).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            new = np.where(denom > 0, total_wins / denom, 1.0)
        new = np.clip(new, 1e-300, None)
        new /= math.exp(np.log(new).mean())  # fix the scale: geometric mean 1
        if np.max(np.abs(np.log(new) - np.log(p))) < tol:
            p = new
            break
        p = new
    logp = np.log10(p)
    return logp - logp.mean()


def bradley_terry(outcomes: Sequence[Outcome], *, contestants: Sequence[str] | None = None, pseudo_ties: float = 0.0,
                  anchor: str | None = None, max_iter: int = 10_000, tol: float = 1e-10) -> dict[str, float]:
    """Maximum-likelihood Bradley–Terry ratings on the Elo scale (400 * log10 strength), mean 1000, or `anchor`
    exactly 1000 when given and present. Contestants with no games sit at the centre. With `pseudo_ties=0` and no
    MLE (an unbeaten contestant), ratings of the unbeaten drift far apart: pass a positive prior for real use."""
    names = list(contestants) if contestants is not None else contestant_names(outcomes)
    if not names:
        return {}
    index = {n: i for i, n in enumerate(names)}
    wins, games = tallies(outcomes, index)
    logp = _mm_strengths(wins, games, pseudo_ties, max_iter, tol)
    ratings = SCALE * logp + ANCHOR_RATING
    if anchor is not None and anchor in index:
        ratings = ratings - ratings[index[anchor]] + ANCHOR_RATING
    return {n: float(ratings[index[n]]) for n in names}


def bootstrap_intervals(outcomes: Sequence[Outcome], *, rounds: int = 200, seed: int = 0, pseudo_ties: float = 0.5,
                        anchor: str | None = None, level: float = 0.95,
                        contestants: Sequence[str] | None = None) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap: resample the battles with replacement `rounds` times (at least 100), refit, and return
    each contestant's central `level` interval of ratings. Deterministic for a given `seed`. Pass the same
    `contestants` as to `bradley_terry` (the prior ties every pair of them)."""
    if rounds < MIN_BOOTSTRAP_ROUNDS:
        raise ValueError(f"rounds={rounds}: use at least {MIN_BOOTSTRAP_ROUNDS} bootstrap rounds for a 95% interval.")
    names = list(contestants) if contestants is not None else contestant_names(outcomes)
    if not outcomes:
        return {}
    rng = np.random.default_rng(seed)
    samples = np.empty((rounds, len(names)))
    n = len(outcomes)
    for r in range(rounds):
        picked = [outcomes[i] for i in rng.integers(0, n, size=n)]
        fit = bradley_terry(picked, contestants=names, pseudo_ties=pseudo_ties, anchor=anchor)
        samples[r] = [fit[name] for name in names]
    tail = (1.0 - level) / 2.0 * 100.0
    lo = np.percentile(samples, tail, axis=0)
    hi = np.percentile(samples, 100.0 - tail, axis=0)
    return {name: (float(lo[i]), float(hi[i])) for i, name in enumerate(names)}


def wilson_interval(successes: float, n: float, z: float = WILSON_Z_95) -> tuple[float, float]:
    """Wilson score interval for a proportion (ties count as half a success). (0, 1) when n == 0.

    centre = (p + z^2/2n) / (1 + z^2/n),  half-width = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0))
    return max(0.0, centre - half), min(1.0, centre + half)
