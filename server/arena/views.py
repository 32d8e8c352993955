"""The arena's read side: leaderboard (honest about what it counts), export (admin-only by default), info, queue.

Functions take the `ArenaService` (its store, models and config), so the router stays thin and tests can call them.

Which votes are rated: a battle whose answers are not a fair comparison is left out of the ratings and counted by
reason (`excluded`): an `identity_leak` (the judge may have known who answered), an `error` or a `truncated` side.
Votes are split by source: `simulated` when the battle's or the vote's ui_version is one of the configured
`simulated_ui_versions` (`palate loop`'s listing judge), `people` otherwise; the board rates one source at a time
(`people` by default, or `all`).
"""

from __future__ import annotations

import asyncio
import hmac
from collections import Counter
from collections.abc import Iterable
from typing import Any

from core.arena_config import REASON_TAGS
from core.kto_export import export_kto
from core.vote_export import export_pairs
from core.votes import SIDES, BattleRecord
from core.leaderboard import build_leaderboard
from core.ratings import Outcome
from core.training_progress import describe, read_progress
from server.arena.protocol import ArenaInfo, QueueView, TrainingJob, TrainingView
from server.errors import APIError

SOURCES = ("people", "simulated", "all")
EXCLUDING_FLAGS = ("identity_leak", "error", "truncated")


def vote_source(battle: BattleRecord, simulated_ui_versions: Iterable[str]) -> str:
    simulated = set(simulated_ui_versions)
    versions = {battle.ui_version, battle.vote.ui_version if battle.vote else None}
    return "simulated" if versions & simulated else "people"


def exclusion(battle: BattleRecord) -> str | None:
    """Why this battle's vote is not rated (the first of EXCLUDING_FLAGS found on either side), else None."""
    flags = {flag for s in SIDES for flag in battle.sides[s].flags}
    flags |= {"error" for s in SIDES if battle.sides[s].finish_reason == "error"}
    flags |= {"truncated" for s in SIDES if battle.sides[s].finish_reason == "length"}
    return next((flag for flag in EXCLUDING_FLAGS if flag in flags), None)


def rated_outcomes(battles: Iterable[BattleRecord], source: str,
                   simulated_ui_versions: Iterable[str]) -> tuple[list[Outcome], dict[str, int], dict[str, int]]:
    """(outcomes to rate, excluded counts by reason, votes by source) for `source` in SOURCES."""
    outcomes, excluded, by_source = [], Counter({flag: 0 for flag in EXCLUDING_FLAGS}), Counter(people=0, simulated=0)
    for battle in battles:
        if battle.vote is None:
            continue
        origin = vote_source(battle, simulated_ui_versions)
        by_source[origin] += 1
        if source != "all" and origin != source:
            continue
        reason = exclusion(battle)
        if reason:
            excluded[reason] += 1
            continue
        a, b = battle.sides["A"], battle.sides["B"]
        outcomes.append(Outcome(a.contestant, b.contestant, battle.vote.winner, a.completion_tokens,
                                b.completion_tokens))
    return outcomes, dict(excluded), dict(by_source)


def _parents(service: Any) -> dict[str, str]:
    """Each served adapter version's parent in the registry (an SFT trained on the base model: 'base')."""
    parents = {}
    for served in service.models.list():
        adapter = getattr(served, "adapter", None)
        if adapter is not None and adapter.meta.get("kind") in ("sft", "dpo"):
            parents[served.id] = adapter.meta.get("parent") or "base"
    return parents


async def leaderboard(service: Any, source: str = "people") -> dict:
    """Bradley–Terry standings of one vote source (cached per source until the next vote on this replica)."""
    if source not in SOURCES:
        raise APIError(400, f"source must be one of {', '.join(SOURCES)}, got '{source[:32]}'.", param="source",
                       code="invalid_source")
    store = service._require_store()
    config = service.config
    battles = await asyncio.to_thread(store.voted_battles)
    cached = service._leaderboard_cache.get(source)
    if cached and cached[0] == len(battles):
        return _with_agreement(service, cached[1])
    outcomes, excluded, by_source = rated_outcomes(battles, source, config.simulated_ui_versions)
    board = await asyncio.to_thread(
        build_leaderboard, outcomes, min_votes=config.min_votes, rounds=config.bootstrap_rounds,
        pseudo_ties=config.pseudo_ties, anchor=config.anchor, contestants=[c.id for c in service.contestants()],
        parents=_parents(service))
    result = {"object": "arena.leaderboard", **board.to_dict(), "source": source, "excluded": excluded,
              "votes_by_source": by_source}
    service._leaderboard_cache[source] = (len(battles), result)
    return _with_agreement(service, result)


def _with_agreement(service: Any, board: dict) -> dict:
    """Each standing with its version's latest recorded agreement (`palate eval agreement`) with the votes of the
    board's source: people's on the people's and everyone's boards, the simulated judges' on theirs - never mixed.
    Read at every request (a record appears without a vote), not cached with the ratings."""
    source = "simulated" if board.get("source") == "simulated" else "people"
    latest = service.models.registry.latest_agreements()
    keys = ("source", "reference", "votes", "overall", "time")

    def agreement(ref: str) -> dict | None:
        record = latest.get((ref, source))
        return {key: record.get(key, source if key == "source" else None) for key in keys} if record else None

    standings = [{**s, "agreement": agreement(s["contestant"])} for s in board.get("standings", [])]
    return {**board, "standings": standings}


def require_export_access(service: Any, authorization: str | None) -> None:
    """export_access 'open': anyone; 'off': nobody over HTTP; 'admin': the admin token as a bearer token."""
    access = service.config.export_access
    if access == "open":
        return
    if access == "off":
        raise APIError(403, "Vote export over the API is off (export_access: off in the arena config); run "
                            "`palate votes export` on the server instead.", code="export_disabled")
    token = service.server_config.resolved_admin_token()
    scheme, _, given = (authorization or "").partition(" ")
    if not token:
        raise APIError(401, "The vote export needs the admin token, and this server has none: set "
                            "server.admin_token (or PALATE_ADMIN_TOKEN), or export_access: open in the arena config.",
                       code="export_requires_admin_token")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise APIError(401, "The vote export holds every stored prompt and answer: send the admin token as "
                            "'Authorization: Bearer <token>'.", code="invalid_admin_token")


async def export(service: Any, authorization: str | None, format: str = "dpo") -> dict:
    require_export_access(service, authorization)
    if format not in ("dpo", "kto"):
        raise APIError(400, f"format must be 'dpo' or 'kto', got '{format[:32]}'.", param="format",
                       code="invalid_format")
    store = service._require_store()
    build = export_kto if format == "kto" else export_pairs
    result = await asyncio.to_thread(lambda: build(store.voted_battles()))
    return {"object": "arena.export", "format": format, "rows": result.rows, "summary": result.summary}


async def info(service: Any) -> ArenaInfo:
    config = service.config
    votes = await asyncio.to_thread(service.store.count_votes) if service.store else 0
    return ArenaInfo(example_prompts=config.example_prompts, default_max_tokens=config.default_max_tokens,
                     max_tokens_cap=service.server_config.max_tokens_cap,
                     contestant_count=len(service.contestants()), votes=votes, export_access=config.export_access,
                     reason_tags=list(REASON_TAGS), served_models=service.models.available(),
                     compare_max_models=config.compare_max_models)


def queue(service: Any) -> QueueView:
    models = service.models
    inflight = sum(models.inflight(m.id) for m in models.list())
    return QueueView(engine_requests=inflight, engine_capacity=service.server_config.vllm.max_num_seqs)


async def training(service: Any) -> TrainingView:
    records = await asyncio.to_thread(read_progress, service.models.registry.root)
    fields = set(TrainingJob.model_fields) - {"summary"}
    return TrainingView(jobs=[TrainingJob(**{k: v for k, v in r.items() if k in fields}, summary=describe(r))
                              for r in records if r.get("name") and r.get("state")])
