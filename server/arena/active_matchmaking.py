"""Active matchmaking: pick the pair whose next vote tells the most about the top of the ranking. Pure rules, no I/O.

Model: Bradley–Terry on the natural-log scale, contestant i has skill t_i and beats j with probability
p_ij = 1 / (1 + exp(t_j - t_i)). Skills are fitted on the vote tallies plus `pseudo_ties` virtual tie games per
pair (a prior that keeps unbeaten skills finite). Their covariance S is the pseudo-inverse of the Fisher
information (with one skill held fixed, as the likelihood only sees differences); the fit is Newton's method on the
likelihood:

    I_ii = sum_j n_ij p_ij (1 - p_ij),   I_ij = -n_ij p_ij (1 - p_ij),   var(t_a - t_b) = e_ab^T S e_ab

(e_ab = e_a - e_b). One more battle between i and j adds w_ij e_ij e_ij^T to the information (w_ij = p_ij (1 - p_ij)),
which shrinks every difference's variance (Sherman–Morrison):

    var'(t_a - t_b) = var(t_a - t_b) - w_ij (e_ab^T S e_ij)^2 / (1 + w_ij e_ij^T S e_ij)

The pair to play is the one whose battle removes the most *unsettled* variance, counted over every ordered question
"is a above b?" and weighted towards the top of the current ranking:

    gain_ij = sum_{a<b} rank_weight^min(r_a, r_b) * exp(-z_ab^2 / 2) * (1 - var'(t_a - t_b) / var(t_a - t_b))

with z_ab = |t_a - t_b| / sd(t_a - t_b) (a settled question, large z, counts ~0) and r the 0-based rank of the
fitted skills (the leader's questions count 1, the runner-up's `rank_weight` = 1/4, and so on). So votes go where
"who is first?" is still open - the direct match of the top two first, indirect comparisons through a third model
when they say more - and move down the ranking as the top settles. A battle between two far-apart models informs
little (small w_ij) and about questions already settled.

Never starving a pair: with N battles so far and P pairs, a pair whose battle count is below
`floor * (N + 1) / P` (a `floor` fraction of an equal share) is played first, least-played of them first; the
pair choice never reaches the client, and sides are assigned at random as in least-played-first.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

_SCORE_A = {"A": 1.0, "B": 0.0, "tie": 0.5, "both_bad": 0.5}
# How much a question one rank further down counts (gain_ij in the module docstring). 1/4, not 1/2: in simulation
# (benchmarks/matchmaking.py, 50 seeds) 1/2 spent enough votes on the runner-up's questions to need 0.61-0.65 of
# least-played's votes to separate the top two of 3 models, 1/4 needed 0.48-0.50 (RESULTS.md has both).
RANK_WEIGHT = 0.25


def tally(contestants: Sequence[str], outcomes: Iterable[tuple[str, str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """(wins, games) for `contestants` in their order: wins[i, j] is i's (half-)wins over j, games symmetric.
    Votes naming others, self-pairs and unknown winners are ignored."""
    index = {name: i for i, name in enumerate(contestants)}
    k = len(index)
    wins, games = np.zeros((k, k)), np.zeros((k, k))
    for a, b, winner in outcomes:
        if a not in index or b not in index or a == b or winner not in _SCORE_A:
            continue
        i, j, s = index[a], index[b], _SCORE_A[winner]
        wins[i, j] += s
        wins[j, i] += 1.0 - s
        games[i, j] += 1.0
        games[j, i] += 1.0
    return wins, games


def skills_from_tallies(wins: np.ndarray, games: np.ndarray, pseudo_ties: float = 0.5, max_iter: int = 100,
                        tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """(skills with mean 0, covariance) from tallies plus `pseudo_ties` virtual ties per pair. Newton's method on the
    log-likelihood (gradient W_i - sum_j n_ij p_ij, Hessian minus the information), steps capped at 5 nats. Needs a
    positive `pseudo_ties` or a connected comparison graph."""
    k = wins.shape[0]
    prior = pseudo_ties * (1.0 - np.eye(k))
    wins, games = wins + prior / 2.0, games + prior
    total = wins.sum(axis=1)
    skills = np.zeros(k)

    def information(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        prob = 1.0 / (1.0 + np.exp(theta[None, :] - theta[:, None]))
        weight = games * prob * (1.0 - prob)
        return prob, np.diag(weight.sum(axis=1)) - weight

    # The last skill is held at 0 while solving (the reduced information is invertible when the comparison graph
    # is connected, which the prior guarantees); differences, and so their variances, do not depend on the choice.
    for _ in range(max_iter):
        prob, info = information(skills)
        step = np.zeros(k)
        step[:-1] = np.linalg.solve(info[:-1, :-1], (total - (games * prob).sum(axis=1))[:-1])
        step = np.clip(step, -5.0, 5.0)
        skills = skills + step
        if np.max(np.abs(step)) < tol:
            break
    cov = np.zeros((k, k))
    cov[:-1, :-1] = np.linalg.inv(information(skills)[1][:-1, :-1])
    centre = np.eye(k) - 1.0 / k  # report mean-0 skills and their covariance
    return skills - skills.mean(), centre @ cov @ centre


def fit_skills(contestants: Sequence[str], outcomes: Iterable[tuple[str, str, str]],
               pseudo_ties: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(skills, covariance) on the natural-log scale for `contestants` in their order, from (a, b, winner) votes
    (winner "A", "B", "tie" or "both_bad"; a tie is half a win each)."""
    return skills_from_tallies(*tally(contestants, outcomes), pseudo_ties=pseudo_ties)


def gains_from_fit(skills: np.ndarray, cov: np.ndarray, rank_weight: float = RANK_WEIGHT) -> np.ndarray:
    """gain_ij (module docstring) as a symmetric matrix, zero on the diagonal."""
    k = len(skills)
    pairs = list(itertools.combinations(range(k), 2))
    contrasts = np.zeros((len(pairs), k))  # one row e_ab per question (a, b)
    for row, (a, b) in enumerate(pairs):
        contrasts[row, a], contrasts[row, b] = 1.0, -1.0
    var = np.maximum(np.einsum("qi,ij,qj->q", contrasts, cov, contrasts), 1e-12)
    diff = contrasts @ skills
    rank = np.empty(k, dtype=int)
    rank[np.argsort(-skills, kind="stable")] = np.arange(k)
    weight = np.array([rank_weight ** min(rank[a], rank[b]) for a, b in pairs]) * np.exp(-0.5 * diff ** 2 / var)
    cross = contrasts @ cov @ contrasts.T  # cross[q, m] = e_q^T S e_m
    prob = 1.0 / (1.0 + np.exp(-diff))
    info = prob * (1.0 - prob)  # w for a battle on pair m
    # shrink[q, m]: the fraction of question q's variance that one battle on pair m removes
    shrink = info[None, :] * cross ** 2 / (1.0 + info * np.diag(cross))[None, :] / var[:, None]
    gain_by_pair = weight @ shrink
    gains = np.zeros((k, k))
    for m, (i, j) in enumerate(pairs):
        gains[i, j] = gains[j, i] = gain_by_pair[m]
    return gains


def pair_scores(contestants: Sequence[str], outcomes: Iterable[tuple[str, str, str]],
                pseudo_ties: float = 0.5) -> dict[tuple[str, str], float]:
    """gain_ij (module docstring) of every unordered pair of the sorted distinct `contestants`."""
    names = sorted(set(contestants))
    scores = gains_from_fit(*fit_skills(names, outcomes, pseudo_ties))
    return {(names[i], names[j]): float(scores[i, j]) for i, j in itertools.combinations(range(len(names)), 2)}


def choose_pair_active(contestants: Sequence[str], load: Mapping[frozenset[str], int],
                       outcomes: Iterable[tuple[str, str, str]], rng: random.Random, *, floor: float = 0.25,
                       pseudo_ties: float = 0.5) -> tuple[str, str]:
    """(side A, side B) for the next battle: a starving pair if any (below `floor` of an equal share of the battles
    in `load`), else the pair with the highest gain (`pair_scores`); ties broken at random, sides random."""
    names = sorted(set(contestants))
    if len(names) < 2:
        raise ValueError("a battle needs at least two distinct contestants")
    return choose_from_tallies(names, load, *tally(names, outcomes), rng, floor=floor, pseudo_ties=pseudo_ties)


def choose_from_tallies(names: Sequence[str], load: Mapping[frozenset[str], int], wins: np.ndarray,
                        games: np.ndarray, rng: random.Random, *, floor: float = 0.25, pseudo_ties: float = 0.5,
                        rank_weight: float = RANK_WEIGHT) -> tuple[str, str]:
    """`choose_pair_active` on tallies of the sorted distinct `names` (what a simulation keeps up to date)."""
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor={floor}: a fraction of an equal share, between 0 and 1")
    pairs = list(itertools.combinations(range(len(names)), 2))
    counts = {p: load.get(frozenset((names[p[0]], names[p[1]])), 0) for p in pairs}
    threshold = floor * (sum(counts.values()) + 1) / len(pairs)
    starving = [p for p in pairs if counts[p] < threshold]
    if starving:
        fewest = min(counts[p] for p in starving)
        candidates = [p for p in starving if counts[p] == fewest]
    else:
        scores = gains_from_fit(*skills_from_tallies(wins, games, pseudo_ties), rank_weight=rank_weight)
        best = max(scores[p] for p in pairs)
        candidates = [p for p in pairs if scores[p] >= best * (1 - 1e-9)]
    i, j = rng.choice(candidates)
    return (names[i], names[j]) if rng.random() < 0.5 else (names[j], names[i])
