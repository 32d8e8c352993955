"""Pairwise comparisons between models' answers to the same prompts, with win rates and 95% intervals.

Judges:
- the listing judge (`eval.judge.prefer` on the two verdicts) - deterministic, so one order suffices;
- optionally an LLM judge behind any OpenAI-compatible endpoint. Position bias is real for LLM judges, so each pair
  is judged twice, once in each order; the vote counts only when both orders pick the same answer, otherwise it is a
  tie (as in MT-Bench, Zheng et al. 2023, "conservative" swap).

Win rate of a over b = (wins + ½·ties) / games, with the Wilson score interval (`core.ratings.wilson_interval`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from eval.judge import JudgeConfig, Verdict, prefer
from core.ratings import Outcome, wilson_interval

JUDGE_PROMPT = """You are judging two descriptions of the same property listing for a real-estate website.
The better description states the listing's facts accurately and specifically, invents nothing that is not in the facts,
and avoids hype, exclamation marks and needless hedging.

Listing facts (JSON):
{facts}

Description A:
{a}

Description B:
{b}

Which description is better? Answer with exactly one word: A, B, or tie."""


def parse_judge_reply(text: str) -> str | None:
    """'A', 'B' or 'tie' from a judge's reply (first standalone answer word), None when it gives none."""
    match = re.search(r"\b(A|B|tie)\b", text.strip(), flags=re.I)
    if not match:
        return None
    word = match.group(1)
    return "tie" if word.lower() == "tie" else word.upper()


_UNSWAP = {"A": "B", "B": "A", "tie": "tie"}  # a verdict on (b, a) seen from a's side


def combine_orders(first: str | None, swapped: str | None) -> str:
    """Combine a verdict on (a as A, b as B) with one on (b as A, a as B) into a's result: 'A' (a wins), 'B' (b
    wins) or 'tie'. Only agreement counts; disagreement or an unparseable reply is a tie."""
    unswapped = _UNSWAP.get(swapped)
    if first is not None and first == unswapped and first in ("A", "B"):
        return first
    return "tie"


def listing_judge_outcomes(items: Sequence[dict], labels: Sequence[str], config: JudgeConfig = JudgeConfig()) \
        -> list[Outcome]:
    """One outcome per prompt and model pair from the stored listing-judge verdicts (`generate_all` items)."""
    outcomes = []
    for item in items:
        if not item.get("verdicts"):
            continue
        for a, b in itertools.combinations(labels, 2):
            va, vb = (_score_only(item["verdicts"][x]) for x in (a, b))
            outcomes.append(Outcome(a, b, prefer(va, vb, config)))
    return outcomes


def _score_only(verdict: dict) -> Verdict:
    return Verdict((), (), (), (), 0, (), 0, True, verdict["score"])


def win_rates(outcomes: Sequence[Outcome], labels: Sequence[str]) -> list[dict]:
    """For each model pair (a, b) in `labels` order: games, a's wins/losses/ties, a's win rate and Wilson 95% CI."""
    rows = []
    for a, b in itertools.combinations(labels, 2):
        wins = losses = ties = 0
        for o in outcomes:
            if {o.a, o.b} != {a, b}:
                continue
            score = o.score_a() if o.a == a else 1.0 - o.score_a()
            wins += score == 1.0
            losses += score == 0.0
            ties += score == 0.5
        games = wins + losses + ties
        if games == 0:
            continue
        lo, hi = wilson_interval(wins + 0.5 * ties, games)
        rows.append({"a": a, "b": b, "games": games, "wins": wins, "losses": losses, "ties": ties,
                     "win_rate": (wins + 0.5 * ties) / games, "ci_low": lo, "ci_high": hi})
    return rows


JudgeFn = Callable[[str], Awaitable[str]]


def openai_judge(base_url: str, model: str, api_key: str = "none", max_tokens: int = 8) -> JudgeFn:
    """A judge function over any OpenAI-compatible chat endpoint (temperature 0)."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=300)

    async def ask(prompt: str) -> str:
        response = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], temperature=0.0, max_tokens=max_tokens)
        return response.choices[0].message.content or ""

    return ask


async def llm_judge_outcomes(items: Sequence[dict], labels: Sequence[str], judge: JudgeFn,
                             concurrency: int = 4) -> tuple[list[Outcome], dict[str, Any]]:
    """Judge every prompt's answers for every model pair in both orders. Returns the outcomes and counts of
    order disagreements and unparseable replies (how much to trust this judge)."""
    gate = asyncio.Semaphore(concurrency)

    async def ask(facts: dict, first: str, second: str) -> str | None:
        prompt = JUDGE_PROMPT.format(facts=json.dumps(facts, sort_keys=True), a=first, b=second)
        async with gate:
            return parse_judge_reply(await judge(prompt))

    jobs = []
    for item in items:
        for a, b in itertools.combinations(labels, 2):
            ta, tb = item["answers"][a], item["answers"][b]
            jobs.append((a, b, ask(item.get("listing") or {}, ta, tb), ask(item.get("listing") or {}, tb, ta)))
    replies = await asyncio.gather(*(coro for job in jobs for coro in job[2:]))
    outcomes, disagreements, unparsed = [], 0, 0
    for k, (a, b, *_coros) in enumerate(jobs):
        first, swapped = replies[2 * k], replies[2 * k + 1]
        unparsed += (first is None) + (swapped is None)
        disagreements += first != _UNSWAP.get(swapped)
        outcomes.append(Outcome(a, b, combine_orders(first, swapped)))
    return outcomes, {"judged_pairs": len(jobs), "order_disagreements": disagreements,
                      "unparsed_replies": unparsed}
