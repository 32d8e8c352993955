"""Active matchmaking: pick the pair whose next vote tells the most about the ranking. Pure rules, no I/O.

Model: Bradley–Terry on the natural-log scale, contestant i has skill t_i and beats j with probability
p_ij = 1 / (1 + exp(t_j - t_i)). Skills are fitted by Hunter's MM iteration on the vote tallies plus `pseudo_ties`
virtual tie games per pair (a prior that keeps unbeaten skills finite). Their covariance is the pseudo-inverse of the
Fisher information (the sum-to-zero constraint makes it singular):

    I_ii = sum_j n_ij p_ij (1 - p_ij),   I_ij = -n_ij p_ij (1 - p_ij),   var(t_i - t_j) = e_ij^T I^+ e_ij

Score of a pair: how unresolved its order is times how much one vote between them says,

    score_ij = p_ij (1 - p_ij) * exp(-z_ij^2 / 2),   z_ij = |t_i - t_j| / sd(t_i - t_j)

so pairs whose intervals overlap most and whose outcome is a coin flip come first; a settled pair scores ~0.

Never starving a pair: with N battles so far and P pairs, a pair whose battle count is below
`floor * (N + 1) / P` (a `floor` fraction of an equal share) is played first, least-played of them first; the
pair choice never reaches the client, and sides are assigned at random as in least-played-first.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

_SCORE_A = {"A": 1.0, "B": 0.0, "tie": 0.5, "both_bad": 0.5}


def fit_skills(contestants: Sequence[str], outcomes: Iterable[tuple[str, str, str]], pseudo_ties: float = 0.5,
               max_iter: int = 2000, tol: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """(skills, covariance) on the natural-log scale for `contestants` in their order, from (a, b, winner) votes
    (winner "A", "B", "tie" or "both_bad"; a tie is half a win each). Votes naming others are ignored."""
    index = {name: i for i, name in enumerate(contestants)}
    k = len(index)
    wins = pseudo_ties / 2.0 * (1.0 - np.eye(k))
    games = pseudo_ties * (1.0 - np.eye(k))
    for a, b, winner in outcomes:
        if a not in index or b not in index or a == b or winner not in _SCORE_A:
            continue
        i, j, s = index[a], index[b], _SCORE_A[winner]
        wins[i, j] += s
        wins[j, i] += 1.0 - s
        games[i, j] += 1.0
        games[j, i] += 1.0
    p = np.ones(k)
    total = wins.sum(axis=1)
    for _ in range(max_iter):
        denom = (games / (p[:, None] + p[None, :])).sum(axis=1)
        new = np.where(denom > 0, total / np.where(denom > 0, denom, 1.0), 1.0)
        new = np.clip(new, 1e-12, None)
        new /= math.exp(np.log(new).mean())
        done = np.max(np.abs(np.log(new) - np.log(p))) < tol
        p = new
        if done:
            break
    skills = np.log(p)
    prob = 1.0 / (1.0 + np.exp(skills[None, :] - skills[:, None]))
    weight = games * prob * (1.0 - prob)
    information = np.diag(weight.sum(axis=1)) - weight
    return skills, np.linalg.pinv(information)


def pair_scores(contestants: Sequence[str], outcomes: Iterable[tuple[str, str, str]],
                pseudo_ties: float = 0.5) -> dict[tuple[str, str], float]:
    """score_ij (module docstring) of every unordered pair of the sorted distinct `contestants`."""
    names = sorted(set(contestants))
    skills, cov = fit_skills(names, outcomes, pseudo_ties)
    scores = {}
    for i, j in itertools.combinations(range(len(names)), 2):
        diff = skills[i] - skills[j]
        sd = math.sqrt(max(cov[i, i] + cov[j, j] - 2 * cov[i, j], 1e-12))
        prob = 1.0 / (1.0 + math.exp(-diff))
        scores[(names[i], names[j])] = prob * (1.0 - prob) * math.exp(-0.5 * (diff / sd) ** 2)
    return scores


def choose_pair_active(contestants: Sequence[str], load: Mapping[frozenset[str], int],
                       outcomes: Iterable[tuple[str, str, str]], rng: random.Random, *, floor: float = 0.25,
                       pseudo_ties: float = 0.5) -> tuple[str, str]:
    """(side A, side B) for the next battle: a starving pair if any (below `floor` of an equal share of the battles
    in `load`), else the highest `pair_scores` pair; ties broken at random, sides random."""
    names = sorted(set(contestants))
    if len(names) < 2:
        raise ValueError("a battle needs at least two distinct contestants")
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor={floor}: a fraction of an equal share, between 0 and 1")
    pairs = list(itertools.combinations(names, 2))
    counts = {p: load.get(frozenset(p), 0) for p in pairs}
    threshold = floor * (sum(counts.values()) + 1) / len(pairs)
    starving = [p for p in pairs if counts[p] < threshold]
    if starving:
        fewest = min(counts[p] for p in starving)
        candidates = [p for p in starving if counts[p] == fewest]
    else:
        scores = pair_scores(names, outcomes, pseudo_ties)
        best = max(scores.values())
        candidates = [p for p in pairs if scores[p] >= best * (1 - 1e-9)]
    left, right = rng.choice(candidates)
    return (left, right) if rng.random() < 0.5 else (right, left)
