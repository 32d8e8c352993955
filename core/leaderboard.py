"""The arena leaderboard: ratings with bootstrap intervals, Rank(UB), the length-controlled rating, each contestant's
record and change against its parent, and the pairwise win-rate matrix. Pure functions over `core.ratings` (the
Bradley–Terry math) and `core.length_control`.

Rank(UB), as Chatbot Arena ranks: 1 + the number of contestants whose interval lies entirely above this one's
(their lower bound above its upper bound), so contestants whose intervals overlap share a rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from core.length_control import length_controlled_ratings
from core.ratings import Outcome, bootstrap_intervals, bradley_terry, contestant_names, tallies, wilson_interval


@dataclass
class Standing:
    """One leaderboard row."""

    contestant: str
    rating: float
    ci_low: float
    ci_high: float
    votes: int
    wins: int
    losses: int
    ties: int
    provisional: bool
    rank: int = 0
    rank_ub: int = 0
    rating_lc: float | None = None  # length-controlled rating (None: no lengths known)
    parent: str | None = None
    vs_parent: float | None = None  # rating minus the parent's, when the parent is on the board


@dataclass
class PairStat:
    """Row contestant against column contestant: win rate (ties half) with its Wilson 95% interval."""

    games: int
    win_rate: float | None
    ci_low: float | None
    ci_high: float | None


@dataclass
class Leaderboard:
    standings: list[Standing]
    contestants: list[str]
    matrix: list[list[PairStat]] = field(default_factory=list)  # matrix[i][j]: contestants[i] vs contestants[j]
    total_votes: int = 0
    bootstrap_rounds: int = 0
    min_votes: int = 0
    length_coefficient: float | None = None  # log-odds per unit of (len_a - len_b) / (len_a + len_b)

    def to_dict(self) -> dict:
        return asdict(self)


def win_rate_matrix(outcomes: Sequence[Outcome], contestants: Sequence[str]) -> list[list[PairStat]]:
    """Pairwise win rates (ties half a win) with Wilson intervals; the diagonal and unplayed pairs have no rate."""
    index = {n: i for i, n in enumerate(contestants)}
    wins, games = tallies([o for o in outcomes if o.a in index and o.b in index], index)
    rows = []
    for i in range(len(contestants)):
        row = []
        for j in range(len(contestants)):
            n = int(games[i, j])
            if i == j or n == 0:
                row.append(PairStat(n, None, None, None))
                continue
            lo, hi = wilson_interval(wins[i, j], n)
            row.append(PairStat(n, float(wins[i, j] / n), lo, hi))
        rows.append(row)
    return rows


def rank_upper_bound(intervals: dict[str, tuple[float, float]]) -> dict[str, int]:
    """Rank(UB): 1 + how many others have a lower bound above this contestant's upper bound."""
    return {name: 1 + sum(lo > hi for other, (lo, _) in intervals.items() if other != name)
            for name, (_, hi) in intervals.items()}


def build_leaderboard(outcomes: Sequence[Outcome], *, min_votes: int = 10, rounds: int = 200, seed: int = 0,
                      pseudo_ties: float = 0.5, anchor: str | None = None,
                      contestants: Sequence[str] = (), parents: dict[str, str] | None = None) -> Leaderboard:
    """Ratings (with `pseudo_ties` prior), bootstrap 95% intervals, Rank(UB), the length-controlled rating, record,
    win-rate matrix and the change against each contestant's parent (`parents`: contestant -> parent), sorted by
    rating. A contestant with fewer than `min_votes` votes is marked provisional. Same-contestant battles are
    ignored."""
    outcomes = [o for o in outcomes if o.a != o.b]
    names = contestant_names(outcomes, contestants)
    ratings = bradley_terry(outcomes, contestants=names, pseudo_ties=pseudo_ties, anchor=anchor)
    intervals = bootstrap_intervals(outcomes, rounds=rounds, seed=seed, pseudo_ties=pseudo_ties, anchor=anchor,
                                    contestants=names) if outcomes else {}
    record = {n: [0, 0, 0] for n in names}  # wins, losses, ties
    for o in outcomes:
        s = o.score_a()
        for name, score in ((o.a, s), (o.b, 1.0 - s)):
            record[name][0 if score == 1.0 else 1 if score == 0.0 else 2] += 1
    standings = []
    for name in names:
        w, l, t = record[name]
        lo, hi = intervals.get(name, (ratings[name], ratings[name]))
        standings.append(Standing(name, ratings[name], lo, hi, w + l + t, w, l, t, (w + l + t) < min_votes))
    standings.sort(key=lambda s: (-s.rating, s.contestant))
    ranks_ub = rank_upper_bound({s.contestant: (s.ci_low, s.ci_high) for s in standings})
    lc = length_controlled_ratings(outcomes, contestants=names, pseudo_ties=pseudo_ties, anchor=anchor)
    for rank, standing in enumerate(standings, start=1):
        standing.rank = rank
        standing.rank_ub = ranks_ub[standing.contestant]
        standing.rating_lc = lc.ratings.get(standing.contestant) if lc else None
        parent = (parents or {}).get(standing.contestant)
        if parent in ratings:
            standing.parent, standing.vs_parent = parent, ratings[standing.contestant] - ratings[parent]
    ordered = [s.contestant for s in standings]
    return Leaderboard(standings, ordered, win_rate_matrix(outcomes, ordered), len(outcomes),
                       rounds if outcomes else 0, min_votes, lc.length_coefficient if lc else None)
