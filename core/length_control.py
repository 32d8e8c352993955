"""Length-controlled Bradley–Terry: the rating a contestant would have if answer length did not sway votes.

As Chatbot Arena's style control, the vote is modelled with the length difference as a covariate:

    P(a beats b) = sigmoid( (beta_a - beta_b) + gamma * d ),   d = (len_a - len_b) / (len_a + len_b)

fitted by maximum likelihood (Newton's method on the logistic log-likelihood; ties are half a win, so the target
is 0.5). `gamma` > 0 means longer answers win more often than their contestant's strength explains. Ratings are on
the Elo scale like `core.ratings` (400 * beta / ln 10, mean 1000 or `anchor` at 1000). `pseudo_ties` adds
that many virtual ties per pair at d = 0, the same prior as the raw rating. Votes without both lengths are left
out; with none, there is no fit (None).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.ratings import ANCHOR_RATING, SCALE, Outcome


@dataclass
class LengthControlled:
    ratings: dict[str, float]
    length_coefficient: float  # gamma, log-odds per unit of d
    votes_used: int


def length_difference(len_a: int, len_b: int) -> float:
    """d = (len_a - len_b) / (len_a + len_b), in [-1, 1]; 0 when both are empty."""
    total = len_a + len_b
    return 0.0 if total <= 0 else (len_a - len_b) / total


def _design(outcomes: Sequence[Outcome], index: dict[str, int], pseudo_ties: float):
    """Rows of (x, target, weight): x holds +1 for a, -1 for b and d in the last column."""
    k = len(index)
    rows, targets, weights = [], [], []
    for o in outcomes:
        x = np.zeros(k + 1)
        x[index[o.a]] += 1.0
        x[index[o.b]] -= 1.0
        x[k] = length_difference(o.len_a, o.len_b)
        rows.append(x)
        targets.append(o.score_a())
        weights.append(1.0)
    if pseudo_ties > 0:
        for i in range(k):
            for j in range(i + 1, k):
                x = np.zeros(k + 1)
                x[i], x[j] = 1.0, -1.0
                rows.append(x)
                targets.append(0.5)
                weights.append(pseudo_ties)
    return np.array(rows), np.array(targets), np.array(weights)


def length_controlled_ratings(outcomes: Sequence[Outcome], *, contestants: Sequence[str], pseudo_ties: float = 0.0,
                              anchor: str | None = None, max_iter: int = 100,
                              tol: float = 1e-10) -> LengthControlled | None:
    """Fit the model above; None when no vote has both lengths."""
    used = [o for o in outcomes if o.len_a is not None and o.len_b is not None and o.a != o.b]
    if not used or len(contestants) < 2:
        return None
    index = {name: i for i, name in enumerate(contestants)}
    x, y, w = _design(used, index, pseudo_ties)
    k = len(contestants)
    x = np.delete(x, k - 1, axis=1)  # the last contestant's strength is fixed at 0 (identifiability)
    theta = np.zeros(x.shape[1])
    ridge = 1e-9 * np.eye(x.shape[1])  # keeps Newton defined while a direction has no information yet
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(x @ theta)))
        gradient = x.T @ (w * (y - p))
        hessian = (x * (w * p * (1.0 - p))[:, None]).T @ x + ridge
        step = np.linalg.solve(hessian, gradient)
        theta += step
        if np.max(np.abs(step)) < tol:
            break
    beta = np.append(theta[:k - 1], 0.0)
    ratings = SCALE / math.log(10) * beta
    ratings = ratings - ratings.mean() + ANCHOR_RATING
    if anchor is not None and anchor in index:
        ratings = ratings - ratings[index[anchor]] + ANCHOR_RATING
    return LengthControlled({name: float(ratings[index[name]]) for name in contestants}, float(theta[-1]), len(used))
