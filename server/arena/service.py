"""The arena's serving layer: start blind battles, stream both sides, take the vote, reveal, rank, export.

It receives the engine, the model manager and the vote store, so tests can hand it fakes. Blinding contract:
until `record_vote` has stored the vote, nothing this module sends (stream events, error messages) names a
contestant: events carry only the side, text and finish flags; a failing side says "side A failed". The server
log and the database keep the details.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from core.arena_config import ArenaConfig
from core.config import ServerConfig
from core.training_progress import ACTIVE, describe, read_progress
from core.votes import (SIDES, AlreadyVoted, BattleContinued, BattleNotFinished, BattleNotFound, BattleRecord,
                        NotEditable, SideRecord, VoteStore, prompt_hash, sha256_text, utcnow)
from server.arena.generation import generate_one
from server.arena.active_matchmaking import choose_pair_active
from server.arena.matchmaking import choose_pair, contains_identity, identity_terms, side_flags
from server.arena.protocol import (BattleRequest, BattleView, ContestantReveal, EditRequest, Reveal, SideView,
                                   VoteRequest)
from server.engines.base import Engine, Sampling
from server.errors import APIError, engine_dead
from server.serving import sse

log = logging.getLogger("palate.arena")




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
        flags=record.flags, voted_at=record.vote.voted_at.isoformat(), reasons=record.vote.reasons,
        comment=record.vote.comment, edited=record.vote.edited_response is not None, turn=record.turn)


class ArenaService:
    """One per app. `store` is None when the database could not be opened: arena calls then answer 503 with
    `store_error` while the rest of the server keeps serving."""

    def __init__(self, *, models: Any, engine: Engine, server_config: ServerConfig, arena_config: ArenaConfig,
                 base_model_id: str, store: VoteStore | None, store_error: str | None = None,
                 render: Callable[[Any, list[dict]], str] | None = None, rng: random.Random | None = None,
                 metrics: Any = None):
        self.models = models
        self.engine = engine
        self.server_config = server_config
        self.config = arena_config
        self.base_model_id = base_model_id
        self.store = store
        self.store_error = store_error
        self._render = render
        self.rng = rng or random.SystemRandom()
        self.metrics = metrics
        self._leaderboard_cache: dict[str, tuple[int, dict]] = {}

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
        """Validate, draw a pair (or keep the previous turn's), record the battle, and return (battle id, SSE
        stream of both sides)."""
        store = self._require_store()
        if dead := self.engine.dead():  # a battle the engine cannot run must not be stored
            raise engine_dead(dead)
        if len(request.prompt) + len(request.system or "") > self.config.max_prompt_chars:
            raise APIError(400, f"The prompt is longer than {self.config.max_prompt_chars} characters; shorten it.",
                           param="prompt", code="prompt_too_long")
        if request.continue_from:
            parent, served = await self._continuation(store, request)
        else:
            parent, served = None, await self._draw_pair(store)
        system = parent.system if parent else request.system
        histories = {s: parent.sides[s].conversation(parent.prompt) if parent else [] for s in SIDES}
        prompts = {s: self.render(([{"role": "system", "content": system}] if system else []) + histories[s]
                                  + [{"role": "user", "content": request.prompt}]) for s in SIDES}
        longest = max(len(self.engine.tokenizer().encode(p, add_special_tokens=False)) for p in prompts.values())
        room = self.engine.max_model_len - longest
        if room < 1:
            raise APIError(400, f"The conversation takes {longest} tokens, the whole context "
                                f"({self.engine.max_model_len}); shorten it or start a new battle.", param="prompt",
                           code="prompt_too_long")
        sampling = self._sampling(request, parent, room)
        record = BattleRecord(
            id=str(uuid.uuid4()), created_at=utcnow(), prompt=request.prompt, system=system,
            prompt_sha256=prompt_hash(request.prompt, system), base_model=self.base_model_id,
            sampling={"max_tokens": sampling.max_tokens, "temperature": sampling.temperature, "top_p": sampling.top_p},
            seed=sampling.seed,
            sides={s: SideRecord(side=s, contestant=served[s].id, content_hash=served[s].content_hash,
                                 history=histories[s]) for s in SIDES},
            ui_version=request.ui_version, judge_sha256=sha256_text(judge) if judge else None,
            parent_id=parent.id if parent else None, turn=parent.turn + 1 if parent else 1)
        await asyncio.to_thread(store.create_battle, record)
        terms = sorted({t for s in SIDES for t in self._terms(served[s])})
        log.info("arena battle %s (turn %d): A=%s B=%s seed=%d", record.id, record.turn, served["A"].id,
                 served["B"].id, sampling.seed)
        return record.id, self._stream(record, served, prompts, sampling, terms)

    async def _draw_pair(self, store: VoteStore) -> dict[str, Any]:
        contestants = self.contestants()
        if len(contestants) < 2:
            records = await asyncio.to_thread(read_progress, self.models.registry.root)
            training = [describe(r) for r in records if r.get("state") in ACTIVE]
            todo = (f"training now: {'; '.join(training)} - adapters join when they are registered" if training
                    else "train or load adapters, e.g. `make train`")
            raise APIError(503, "The arena needs at least two served contestants (configured: "
                                f"{', '.join(self.config.contestants)}); {todo}. "
                                "Compare and Chat work with the base model meanwhile.",
                           code="not_enough_contestants")
        load = await asyncio.to_thread(store.pair_load, self.config.pending_window_s)
        by_id = {c.id: c for c in contestants}
        if self.config.matchmaking == "active":
            outcomes = await asyncio.to_thread(store.outcomes)
            left, right = choose_pair_active(list(by_id), load, outcomes, self.rng, floor=self.config.active_floor,
                                             pseudo_ties=self.config.pseudo_ties)
        else:
            left, right = choose_pair(list(by_id), load, self.rng)
        return {"A": by_id[left], "B": by_id[right]}

    async def _continuation(self, store: VoteStore, request: BattleRequest) -> tuple[BattleRecord, dict[str, Any]]:
        """The previous turn and its contestants, if it may be continued. Messages never name a contestant."""
        if request.system is not None or any(v is not None for v in (request.max_tokens, request.temperature,
                                                                      request.top_p, request.seed)):
            raise APIError(400, "A follow-up turn keeps the first turn's system message and sampling settings; "
                                "omit system, max_tokens, temperature, top_p and seed.", param="continue_from",
                           code="invalid_follow_up")
        parent_id = request.continue_from
        parent = await asyncio.to_thread(store.get_battle, parent_id) if _is_uuid(parent_id) else None
        if parent is None:
            raise APIError(404, f"No arena battle with id '{parent_id[:64]}'.", param="continue_from",
                           code="battle_not_found")
        if parent.vote is not None:
            raise APIError(409, "This battle was voted on and its contestants revealed; start a new battle.",
                           param="continue_from", code="already_voted")
        if not parent.finished:
            raise APIError(409, "Both answers must finish before a follow-up; wait for the stream to end.",
                           param="continue_from", code="battle_not_finished")
        if any(parent.sides[s].finish_reason == "error" for s in SIDES):
            raise APIError(409, "A side of this turn failed; vote on it or start a new battle.",
                           param="continue_from", code="battle_failed")
        if await asyncio.to_thread(store.continuation_of, parent.id):
            raise APIError(409, "This turn was already continued; follow up on the latest turn.",
                           param="continue_from", code="battle_continued")
        served = {}
        for s in SIDES:
            try:
                served[s] = self.models.resolve(parent.sides[s].contestant)
            except APIError:
                raise APIError(409, f"Side {s}'s model is no longer served; start a new battle.",
                               param="continue_from", code="contestant_gone") from None
        return parent, served

    def _sampling(self, request: BattleRequest, parent: BattleRecord | None, room: int) -> Sampling:
        """Both sides' settings: the first turn's for a follow-up, else the request's or the config's defaults."""
        if parent is not None:
            return Sampling(max_tokens=min(int(parent.sampling["max_tokens"]), room),
                            temperature=float(parent.sampling["temperature"]), top_p=float(parent.sampling["top_p"]),
                            seed=self.rng.randrange(2**31))
        return Sampling(
            max_tokens=min(request.max_tokens or self.config.default_max_tokens, self.server_config.max_tokens_cap,
                           room),
            temperature=self.config.temperature if request.temperature is None else request.temperature,
            top_p=self.config.top_p if request.top_p is None else request.top_p,
            seed=request.seed if request.seed is not None else self.rng.randrange(2**31))

    async def _stream(self, record: BattleRecord, served: dict[str, Any], prompts: dict[str, str],
                      sampling: Sampling, terms: list[str]) -> AsyncIterator[str]:
        """Run both sides at once (one engine batch) and merge their events; cancelling the stream (Stop, or the
        client gone) cancels both generations, which the engine aborts, leaving the battle unfinished and so
        unvotable."""
        queue: asyncio.Queue[dict] = asyncio.Queue()
        tasks = [asyncio.create_task(self._run_side(record, s, served[s], prompts[s], sampling, terms, queue))
                 for s in SIDES]
        try:
            yield sse({"type": "battle", "battle_id": record.id, "sides": list(SIDES)})
            remaining = len(SIDES)
            while remaining:
                event = await queue.get()
                remaining -= event["type"] == "side_done"
                yield sse(event)
            yield sse({"type": "done", "battle_id": record.id, "vote_url": f"/v1/arena/battles/{record.id}/vote"})
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _run_side(self, record: BattleRecord, side: str, served: Any, prompt_text: str, sampling: Sampling,
                        terms: list[str], queue: asyncio.Queue) -> None:
        async def on_text(text: str) -> None:
            await queue.put({"type": "delta", "side": side, "text": text})

        result = await generate_one(self.engine, self.models, served.id, prompt_text, sampling,
                                    f"arena-{record.id}-{side}", on_text, self.metrics)
        if result.error:
            log.warning("arena battle %s side %s (%s) failed: %s", record.id, side, served.id, result.error)
        flags = side_flags(result.text, result.finish_reason, terms)
        earlier = " ".join(m["content"] for m in record.sides[side].history if m["role"] == "assistant")
        if "identity_leak" not in flags and earlier and contains_identity(earlier, terms):
            flags.append("identity_leak")  # an earlier turn named a contestant: this turn was not judged blind
        done = SideRecord(side=side, contestant=served.id, content_hash=served.content_hash, response=result.text,
                          finish_reason=result.finish_reason, prompt_tokens=result.prompt_tokens,
                          completion_tokens=result.completion_tokens, ttft_ms=result.ttft_ms,
                          duration_ms=result.duration_ms, error=result.error, flags=flags)
        event = {"type": "side_done", "side": side, "finish_reason": result.finish_reason,
                 "completion_tokens": result.completion_tokens}
        try:
            await asyncio.to_thread(self.store.finish_side, record.id, done)
        except Exception:  # noqa: BLE001
            log.exception("arena battle %s: could not record side %s", record.id, side)
            event.update(finish_reason="error", message=f"side {side} could not be recorded; start a new round.")
        if result.finish_reason == "error" and "message" not in event:
            event["message"] = f"side {side} failed; you can still vote, or start a new round."
        await queue.put(event)

    # ---- votes and views ---------------------------------------------------------------------------------------
    def _judged_battle(self, battle_id: str, judge: str | None) -> tuple[Any, str | None]:
        """The vote store and the judge's hash for a vote or an edit; 404 for an id that cannot be a battle's."""
        store = self._require_store()
        if not _is_uuid(battle_id):
            raise APIError(404, f"No arena battle with id '{battle_id[:64]}'.", code="battle_not_found")
        return store, sha256_text(judge) if judge else None

    async def vote(self, battle_id: str, request: VoteRequest, judge_header: str | None) -> Reveal:
        """Store the vote (once), then reveal. 404 unknown battle, 409 unfinished or already voted."""
        store, judge_sha256 = self._judged_battle(battle_id, request.judge or judge_header)
        try:
            record = await asyncio.to_thread(store.record_vote, battle_id, request.choice, judge_sha256=judge_sha256,
                                             ui_version=request.ui_version, reasons=sorted(set(request.reasons)),
                                             comment=(request.comment or "").strip() or None)
        except BattleNotFound as exc:
            raise APIError(404, str(exc), code="battle_not_found") from None
        except BattleNotFinished as exc:
            raise APIError(409, str(exc), code="battle_not_finished") from None
        except AlreadyVoted as exc:
            raise APIError(409, str(exc), code="already_voted") from None
        except BattleContinued as exc:
            raise APIError(409, str(exc), code="battle_continued") from None
        self._leaderboard_cache.clear()
        log.info("arena battle %s: vote %s", battle_id, request.choice)
        return reveal(record)

    async def edit_winner(self, battle_id: str, request: EditRequest, judge_header: str | None) -> Reveal:
        """Store the judge's edit of the winning answer (after the reveal). 404 unknown, 409 not editable."""
        store, judge_sha256 = self._judged_battle(battle_id, request.judge or judge_header)
        try:
            record = await asyncio.to_thread(store.edit_winner, battle_id, request.text, judge_sha256=judge_sha256)
        except BattleNotFound as exc:
            raise APIError(404, str(exc), code="battle_not_found") from None
        except NotEditable as exc:
            raise APIError(409, str(exc), code="not_editable") from None
        return reveal(record)

    async def get_battle(self, battle_id: str) -> BattleView:
        store = self._require_store()
        record = await asyncio.to_thread(store.get_battle, battle_id) if _is_uuid(battle_id) else None
        if record is None:
            raise APIError(404, f"No arena battle with id '{battle_id[:64]}'.", code="battle_not_found")
        continued_by = None if record.vote else await asyncio.to_thread(store.continuation_of, record.id)
        status = ("voted" if record.vote else "continued" if continued_by else
                  "awaiting_vote" if record.finished else "generating")
        sides = {s: SideView(finished=side.finished, finish_reason=side.finish_reason,
                             text=side.response if side.finished else None) for s, side in record.sides.items()}
        return BattleView(battle_id=record.id, status=status, sides=sides, turn=record.turn,
                          continued_by=continued_by, reveal=reveal(record) if record.vote else None)
