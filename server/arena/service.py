"""The arena's serving layer: start blind battles, stream both sides, take the vote, reveal, rank, export.

It receives the engine, the model manager and the vote store, so tests can hand it fakes. Blinding contract:
until `record_vote` has stored the vote, nothing this module sends (stream events, error messages) names a
contestant: events carry only the side, text and finish flags; a failing side says "side A failed". The server
log and the database keep the details.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from core.arena_config import ArenaConfig
from core.config import ServerConfig
from core.vote_export import export_pairs
from core.votes import (SIDES, AlreadyVoted, BattleNotFinished, BattleNotFound, BattleRecord, SideRecord, VoteStore,
                        prompt_hash, sha256_text, utcnow)
from eval.leaderboard import Outcome, build_leaderboard
from server.arena.matchmaking import choose_pair, identity_terms, side_flags
from server.arena.protocol import (ArenaInfo, BattleRequest, BattleView, ContestantReveal, Reveal, SideView,
                                   VoteRequest)
from server.engines.base import Engine, Sampling
from server.errors import APIError

log = logging.getLogger("palate.arena")


def sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def reveal(record: BattleRecord) -> Reveal:
    """The post-vote view of a battle: contestants by side, winner, flags."""
    assert record.vote is not None
    return Reveal(
        battle_id=record.id, winner=record.vote.winner, winner_model=record.winner_contestant(),
        contestants={s: ContestantReveal(side=s, model=side.contestant, content_hash=side.content_hash,
                                         finish_reason=side.finish_reason, completion_tokens=side.completion_tokens,
                                         ttft_ms=side.ttft_ms, duration_ms=side.duration_ms)
                     for s, side in record.sides.items()},
        flags=record.flags, voted_at=record.vote.voted_at.isoformat())


class ArenaService:
    """One per app. `store` is None when the database could not be opened: arena calls then answer 503 with
    `store_error` while the rest of the server keeps serving."""

    def __init__(self, *, models: Any, engine: Engine, server_config: ServerConfig, arena_config: ArenaConfig,
                 base_model_id: str, store: VoteStore | None, store_error: str | None = None,
                 render: Callable[[Any, list[dict]], str] | None = None, rng: random.Random | None = None):
        self.models = models
        self.engine = engine
        self.server_config = server_config
        self.config = arena_config
        self.base_model_id = base_model_id
        self.store = store
        self.store_error = store_error
        self._render = render
        self.rng = rng or random.SystemRandom()
        self._leaderboard_cache: tuple[int, dict] | None = None

    # ---- helpers -----------------------------------------------------------------------------------------------
    def _require_store(self) -> VoteStore:
        if self.store is None:
            raise APIError(503, f"The arena's vote store is unavailable ({self.store_error}); the OpenAI API keeps "
                                "serving. Fix server.database_url and restart.", code="vote_store_unavailable")
        return self.store

    def render(self, messages: list[dict]) -> str:
        if self._render is None:
            from server.serving import render_chat

            self._render = render_chat
        return self._render(self.engine.tokenizer(), messages)

    def contestants(self) -> list[Any]:
        """The configured contestants that resolve to a served model now, one per distinct version."""
        found: dict[str, Any] = {}
        for name in self.config.contestants:
            try:
                served = self.models.resolve(name)
            except APIError:
                continue
            found.setdefault(served.id, served)
        return list(found.values())

    def _terms(self, served: Any) -> list[str]:
        adapter = getattr(served, "adapter", None)
        extra = list(self.config.identity_terms.get(adapter.name if adapter else "base", []))
        if adapter is None:
            extra.append(self.base_model_id)
        return identity_terms(served.id, adapter.name if adapter else None, served.content_hash, extra)

    # ---- battles -----------------------------------------------------------------------------------------------
    async def start_battle(self, request: BattleRequest, judge: str | None) -> tuple[str, AsyncIterator[str]]:
        """Validate, draw a pair, record the battle, and return (battle id, SSE stream of both sides)."""
        store = self._require_store()
        if len(request.prompt) + len(request.system or "") > self.config.max_prompt_chars:
            raise APIError(400, f"The prompt is longer than {self.config.max_prompt_chars} characters; shorten it.",
                           param="prompt", code="prompt_too_long")
        contestants = self.contestants()
        if len(contestants) < 2:
            raise APIError(503, "The arena needs at least two served contestants (configured: "
                                f"{', '.join(self.config.contestants)}); train or load adapters, e.g. `make train`.",
                           code="not_enough_contestants")
        load = await asyncio.to_thread(store.pair_load, self.config.pending_window_s)
        by_id = {c.id: c for c in contestants}
        left, right = choose_pair(list(by_id), load, self.rng)
        served = {"A": by_id[left], "B": by_id[right]}

        messages = ([{"role": "system", "content": request.system}] if request.system else []) + \
            [{"role": "user", "content": request.prompt}]
        prompt_text = self.render(messages)
        prompt_tokens = len(self.engine.tokenizer().encode(prompt_text, add_special_tokens=False))
        room = self.engine.max_model_len - prompt_tokens
        if room < 1:
            raise APIError(400, f"The prompt takes {prompt_tokens} tokens, the whole context "
                                f"({self.engine.max_model_len}); shorten it.", param="prompt", code="prompt_too_long")
        sampling = Sampling(
            max_tokens=min(request.max_tokens or self.config.default_max_tokens, self.server_config.max_tokens_cap,
                           room),
            temperature=self.config.temperature if request.temperature is None else request.temperature,
            top_p=self.config.top_p if request.top_p is None else request.top_p,
            seed=request.seed if request.seed is not None else self.rng.randrange(2**31))
        record = BattleRecord(
            id=str(uuid.uuid4()), created_at=utcnow(), prompt=request.prompt, system=request.system,
            prompt_sha256=prompt_hash(request.prompt, request.system), base_model=self.base_model_id,
            sampling={"max_tokens": sampling.max_tokens, "temperature": sampling.temperature, "top_p": sampling.top_p},
            seed=sampling.seed,
            sides={s: SideRecord(side=s, contestant=served[s].id, content_hash=served[s].content_hash) for s in SIDES},
            ui_version=request.ui_version, judge_sha256=sha256_text(judge) if judge else None)
        await asyncio.to_thread(store.create_battle, record)
        terms = sorted({t for s in SIDES for t in self._terms(served[s])})
        log.info("arena battle %s: A=%s B=%s seed=%d", record.id, served["A"].id, served["B"].id, sampling.seed)
        return record.id, self._stream(record.id, served, prompt_text, sampling, terms)

    async def _stream(self, battle_id: str, served: dict[str, Any], prompt_text: str, sampling: Sampling,
                      terms: list[str]) -> AsyncIterator[str]:
        """Run both sides at once (one engine batch) and merge their events; cancelling the stream (client gone)
        cancels both generations, leaving the battle unfinished and so unvotable."""
        queue: asyncio.Queue[dict] = asyncio.Queue()
        tasks = [asyncio.create_task(self._run_side(battle_id, s, served[s], prompt_text, sampling, terms, queue))
                 for s in SIDES]
        try:
            yield sse({"type": "battle", "battle_id": battle_id, "sides": list(SIDES)})
            remaining = len(SIDES)
            while remaining:
                event = await queue.get()
                remaining -= event["type"] == "side_done"
                yield sse(event)
            yield sse({"type": "done", "battle_id": battle_id, "vote_url": f"/v1/arena/battles/{battle_id}/vote"})
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _run_side(self, battle_id: str, side: str, served: Any, prompt_text: str, sampling: Sampling,
                        terms: list[str], queue: asyncio.Queue) -> None:
        started = time.perf_counter()
        ttft_ms = None
        parts: list[str] = []
        tokens = 0
        prompt_tokens = None
        finish = None
        error = None
        try:
            async with self.models.use(served.id) as held:
                async for delta in self.engine.generate(prompt_text, sampling, held.handle,
                                                        f"arena-{battle_id}-{side}"):
                    if delta.text:
                        if ttft_ms is None:
                            ttft_ms = (time.perf_counter() - started) * 1000.0
                        parts.append(delta.text)
                        await queue.put({"type": "delta", "side": side, "text": delta.text})
                    tokens += len(delta.token_ids)
                    prompt_tokens = delta.prompt_tokens
                    finish = delta.finish_reason or finish
            if finish in (None, "abort"):
                finish, error = "error", f"generation ended without finishing ({finish or 'no finish reason'})"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failing side must not take the battle or the server down
            finish, error = "error", f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
            log.warning("arena battle %s side %s (%s) failed: %s", battle_id, side, served.id, error)
        text = "".join(parts)
        result = SideRecord(side=side, contestant=served.id, content_hash=served.content_hash, response=text,
                            finish_reason=finish, prompt_tokens=prompt_tokens, completion_tokens=tokens,
                            ttft_ms=ttft_ms, duration_ms=(time.perf_counter() - started) * 1000.0, error=error,
                            flags=side_flags(text, finish, terms))
        event = {"type": "side_done", "side": side, "finish_reason": finish, "completion_tokens": tokens}
        try:
            await asyncio.to_thread(self.store.finish_side, battle_id, result)
        except Exception:  # noqa: BLE001
            log.exception("arena battle %s: could not record side %s", battle_id, side)
            event.update(finish_reason="error", message=f"side {side} could not be recorded; start a new round.")
        if finish == "error" and "message" not in event:
            event["message"] = f"side {side} failed; you can still vote, or start a new round."
        await queue.put(event)

    # ---- votes and views ---------------------------------------------------------------------------------------
    async def vote(self, battle_id: str, request: VoteRequest, judge_header: str | None) -> Reveal:
        """Store the vote (once), then reveal. 404 unknown battle, 409 unfinished or already voted."""
        store = self._require_store()
        if not _is_uuid(battle_id):
            raise APIError(404, f"No arena battle with id '{battle_id[:64]}'.", code="battle_not_found")
        judge = request.judge or judge_header
        try:
            record = await asyncio.to_thread(store.record_vote, battle_id, request.choice,
                                             judge_sha256=sha256_text(judge) if judge else None,
                                             ui_version=request.ui_version)
        except BattleNotFound as exc:
            raise APIError(404, str(exc), code="battle_not_found") from None
        except BattleNotFinished as exc:
            raise APIError(409, str(exc), code="battle_not_finished") from None
        except AlreadyVoted as exc:
            raise APIError(409, str(exc), code="already_voted") from None
        self._leaderboard_cache = None
        log.info("arena battle %s: vote %s", battle_id, request.choice)
        return reveal(record)

    async def get_battle(self, battle_id: str) -> BattleView:
        store = self._require_store()
        record = await asyncio.to_thread(store.get_battle, battle_id) if _is_uuid(battle_id) else None
        if record is None:
            raise APIError(404, f"No arena battle with id '{battle_id[:64]}'.", code="battle_not_found")
        status = "voted" if record.vote else "awaiting_vote" if record.finished else "generating"
        sides = {s: SideView(finished=side.finished, finish_reason=side.finish_reason,
                             text=side.response if side.finished else None) for s, side in record.sides.items()}
        return BattleView(battle_id=record.id, status=status, sides=sides,
                          reveal=reveal(record) if record.vote else None)

    async def leaderboard(self) -> dict:
        """Bradley–Terry standings over every vote (cached until the next vote on this replica)."""
        store = self._require_store()
        outcomes = await asyncio.to_thread(store.outcomes)
        if self._leaderboard_cache and self._leaderboard_cache[0] == len(outcomes):
            return self._leaderboard_cache[1]
        board = await asyncio.to_thread(
            build_leaderboard, [Outcome(a, b, w) for a, b, w in outcomes], min_votes=self.config.min_votes,
            rounds=self.config.bootstrap_rounds, pseudo_ties=self.config.pseudo_ties, anchor=self.config.anchor,
            contestants=[c.id for c in self.contestants()])
        result = {"object": "arena.leaderboard", **board.to_dict()}
        self._leaderboard_cache = (len(outcomes), result)
        return result

    async def export(self) -> dict:
        if not self.config.export_via_api:
            raise APIError(403, "Vote export over the API is off (export_via_api: false in configs/arena.yaml); "
                                "run `palate votes export` on the server instead.", code="export_disabled")
        store = self._require_store()
        result = await asyncio.to_thread(lambda: export_pairs(store.voted_battles()))
        return {"object": "arena.export", "rows": result.rows, "summary": result.summary}

    async def info(self) -> ArenaInfo:
        votes = await asyncio.to_thread(self.store.count_votes) if self.store else 0
        return ArenaInfo(example_prompts=self.config.example_prompts,
                         default_max_tokens=self.config.default_max_tokens,
                         max_tokens_cap=self.server_config.max_tokens_cap, contestant_count=len(self.contestants()),
                         votes=votes, export_via_api=self.config.export_via_api)
