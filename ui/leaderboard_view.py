"""Leaderboard JSON (GET /v1/arena/leaderboard) -> what the UI shows: a table, a win-rate matrix and a plot."""

from __future__ import annotations

from typing import Any

STANDING_COLUMNS = ["Rank (UB)", "model", "rating", "95% CI", "length-controlled", "vs parent", "votes",
                    "W / L / T", "status", "reward agrees with votes"]
SOURCE_CHOICES = [("People", "people"), ("Simulated judges (palate loop)", "simulated"), ("Everyone", "all")]
EXCLUSION_WORDS = {"identity_leak": "an answer named a model", "error": "an answer failed",
                   "truncated": "an answer was cut off"}


def standings_rows(board: dict) -> list[list[Any]]:
    rows = []
    for s in board.get("standings", []):
        lc = s.get("rating_lc")
        delta = s.get("vs_parent")
        rows.append([s.get("rank_ub", s["rank"]), s["contestant"], round(s["rating"]),
                     f"{round(s['ci_low'])} – {round(s['ci_high'])}", "–" if lc is None else round(lc),
                     "–" if delta is None else f"{delta:+.0f} vs {s['parent']}", s["votes"],
                     f"{s['wins']} / {s['losses']} / {s['ties']}",
                     f"provisional (< {board.get('min_votes', 0)} votes)" if s["provisional"] else "rated",
                     agreement_cell(s.get("agreement"))])
    return rows


def agreement_cell(record: dict | None) -> str:
    """A DPO version's latest agreement with the board's vote source: '67% (21–94%, n=3, people's votes)'."""
    overall = (record or {}).get("overall") or {}
    if not overall.get("n"):
        return "–"
    low, high = overall["wilson95"]
    whose = "people's" if record.get("source") == "people" else "simulated judges'"
    return f"{overall['rate']:.0%} ({low * 100:.0f}–{high:.0%}, n={overall['n']}, {whose} votes)"


def matrix_rows(board: dict) -> tuple[list[str], list[list[Any]]]:
    """Header and rows: cell (i, j) is row model's win rate against column model, with its Wilson 95% interval."""
    names = board.get("contestants", [])
    rows = []
    for name, cells in zip(names, board.get("matrix", [])):
        row = [name]
        for cell in cells:
            row.append("–" if cell["win_rate"] is None else
                       f"{cell['win_rate']:.0%} ({cell['ci_low']:.0%}–{cell['ci_high']:.0%}, n={cell['games']})")
        rows.append(row)
    return ["win rate of ↓ vs →", *names], rows


def summary_markdown(board: dict) -> str:
    """The headline: how many votes are rated, from whom, and how many were left out and why."""
    source = {"people": "people's", "simulated": "simulated judges'", "all": "everyone's"}.get(board.get("source"), "")
    by_source = board.get("votes_by_source", {})
    lines = [f"**{board.get('total_votes', 0)} votes** rated ({source} votes) · Bradley–Terry ratings (Elo scale, "
             f"ties = half a win) with 95% bootstrap intervals ({board.get('bootstrap_rounds', 0)} rounds)"]
    if by_source:
        lines.append(f"All votes: {by_source.get('people', 0)} from people, {by_source.get('simulated', 0)} from "
                     "simulated judges.")
    excluded = {k: v for k, v in board.get("excluded", {}).items() if v}
    if excluded:
        lines.append("Not rated: " + ", ".join(f"{v} because {EXCLUSION_WORDS.get(k, k)}" for k, v in excluded.items())
                     + ".")
    lines.append("Rank (UB): 1 + the number of models whose whole interval is above this one's. Length-controlled: "
                 "the rating once the answer-length difference is accounted for. Reward agrees with votes: how often "
                 "a DPO version's implicit reward prefers the voted winner (`palate eval agreement`, Wilson 95%).")
    return "  \n".join(lines)


def ratings_figure(board: dict):
    """Horizontal error-bar plot of ratings and their intervals (matplotlib figure, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    standings = list(reversed(board.get("standings", [])))
    fig, ax = plt.subplots(figsize=(6, 0.6 * max(len(standings), 2) + 1))
    if standings:
        ratings = [s["rating"] for s in standings]
        low = [s["rating"] - s["ci_low"] for s in standings]
        high = [s["ci_high"] - s["rating"] for s in standings]
        colors = ["#999999" if s["provisional"] else "#d35400" for s in standings]
        ax.errorbar(ratings, range(len(standings)), xerr=[low, high], fmt="none", ecolor="#555555", capsize=4)
        ax.scatter(ratings, range(len(standings)), c=colors, zorder=3)
        ax.set_yticks(range(len(standings)), [s["contestant"] for s in standings])
    ax.axvline(1000, color="#cccccc", linestyle="--", linewidth=1)
    ax.set_xlabel("rating (95% interval; grey = provisional)")
    fig.tight_layout()
    plt.close(fig)
    return fig
