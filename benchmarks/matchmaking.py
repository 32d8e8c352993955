"""Matchmaking in simulation: how many votes each policy needs before the top two models are separated.

    python -m benchmarks.matchmaking [--seeds 20] [--floors 0.25 0.1] [--rank-weights 0.5] [--budget 6000]

Synthetic arena: each model has a known Bradley–Terry skill (natural-log scale, table below). Each vote comes from
one of 12 synthetic judges; judge j answers at random with probability noise_j (drawn once per seed from 0 to 0.3),
calls a tie with probability 0.05, and otherwise prefers model i over k with probability 1 / (1 + exp(s_k - s_i)).
Every battle is voted at once.

Policies: `least_played` (server.arena.matchmaking.choose_pair) and `active` (server.arena.active_matchmaking,
the same function the server calls, on running tallies) at each given exploration floor (`active_floor`) and each
given rank weight (how much a question one rank further down counts; the server uses RANK_WEIGHT).

Separation criterion (stated): after every 5th vote, fit Bradley–Terry (0.5 virtual tie per pair) and its Fisher
covariance; the top two are separated when the fitted difference of the truly best and second-best model is positive
and at least 1.96 of its standard deviations (a 95 % Wald interval of the difference excludes 0). Votes needed is
the first such count (the budget when never reached). Min pair share: the smallest fraction of the battles, up to
that point, that any pair got; the floor guarantees about floor / number of pairs.

Prints one row per (scenario, policy): median votes over seeds, interquartile range, seeds not separated within the
budget, smallest pair share over all seeds, the floor's guaranteed share, and the ratio of medians to
least_played's.
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
from collections import Counter

import numpy as np

from server.arena.active_matchmaking import RANK_WEIGHT, choose_from_tallies, skills_from_tallies
from server.arena.matchmaking import choose_pair

SCENARIOS = {
    "3 models": [0.3, 0.0, -0.8],
    "4 models": [0.3, 0.0, -0.5, -1.0],
    "6 models": [0.3, 0.0, -0.3, -0.6, -0.9, -1.2],
}
JUDGES, TIE_P, MAX_NOISE, CHECK_EVERY, Z_95 = 12, 0.05, 0.3, 5, 1.959963984540054


def separated(wins: np.ndarray, games: np.ndarray) -> bool:
    """Models 0 and 1 are the true top two: is the fitted 0-minus-1 difference >= 1.96 sd?"""
    skills, cov = skills_from_tallies(wins, games, 0.5)
    diff = skills[0] - skills[1]
    return diff > 0 and diff >= Z_95 * np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])


def simulate(skills: list[float], policy: str, seed: int, floor: float, budget: int,
             rank_weight: float = RANK_WEIGHT) -> tuple[int, float, bool]:
    """(votes needed, min pair share up to then, separated within budget) for one seed."""
    rng = random.Random(seed)
    names = [f"m{i}" for i in range(len(skills))]  # sorted order == index order
    noise = [rng.uniform(0.0, MAX_NOISE) for _ in range(JUDGES)]
    wins, games = np.zeros((len(names),) * 2), np.zeros((len(names),) * 2)
    load: Counter = Counter()
    for vote in range(1, budget + 1):
        if policy == "active":
            a, b = choose_from_tallies(names, load, wins, games, rng, floor=floor, rank_weight=rank_weight)
        else:
            a, b = choose_pair(names, load, rng)
        i, k = names.index(a), names.index(b)
        judge = rng.randrange(JUDGES)
        u = rng.random()
        if u < TIE_P:
            score = 0.5
        elif rng.random() < noise[judge]:
            score = float(rng.random() < 0.5)
        else:
            score = float(rng.random() < 1.0 / (1.0 + np.exp(skills[k] - skills[i])))
        wins[i, k] += score
        wins[k, i] += 1.0 - score
        games[i, k] += 1.0
        games[k, i] += 1.0
        load[frozenset((a, b))] += 1
        if vote % CHECK_EVERY == 0 and separated(wins, games):
            pairs = [frozenset(p) for p in itertools.combinations(names, 2)]
            return vote, min(load[p] for p in pairs) / vote, True
    pairs = [frozenset(p) for p in itertools.combinations(names, 2)]
    return budget, min(load[p] for p in pairs) / budget, False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--floors", type=float, nargs="+", default=[0.25, 0.1],
                        help="active_floor values to run: fraction of an equal share")
    parser.add_argument("--rank-weights", type=float, nargs="+", default=[RANK_WEIGHT],
                        help="active: how much a question one rank further down counts")
    parser.add_argument("--budget", type=int, default=6000, help="most votes per seed")
    args = parser.parse_args()
    print(f"seeds={args.seeds} floors={args.floors} rank weights={args.rank_weights} budget={args.budget} "
          f"judges={JUDGES} noise<= {MAX_NOISE} ties={TIE_P}")
    print("| scenario | skills (nats) | policy | median votes | IQR | not separated | min pair share | floor share "
          "| / least_played |")
    print("|---|---|---|---:|---|---:|---:|---:|---:|")
    for scenario, skills in SCENARIOS.items():
        n_pairs = len(skills) * (len(skills) - 1) // 2
        baseline = None
        settings = [("least_played", 0.0, 0.0)] + [("active", f, w) for w in args.rank_weights for f in args.floors]
        for policy, floor, weight in settings:
            runs = [simulate(skills, policy, seed, floor, args.budget, weight) for seed in range(args.seeds)]
            votes = sorted(r[0] for r in runs)
            median = statistics.median(votes)
            q1, _, q3 = statistics.quantiles(votes, n=4)
            baseline = baseline or median
            name = policy if policy == "least_played" else f"active (floor {floor}, rank weight {weight})"
            floor_share = f"{floor / n_pairs:.3f}" if policy == "active" else ""
            ratio = f"{median / baseline:.2f}" if policy == "active" else ""
            print(f"| {scenario} | {skills} | {name} | {median:.0f} | {q1:.0f}-{q3:.0f} "
                  f"| {sum(not r[2] for r in runs)} | {min(r[1] for r in runs):.3f} | {floor_share} | {ratio} |",
                  flush=True)


if __name__ == "__main__":
    main()
