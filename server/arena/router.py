"""HTTP routes of the arena (`/v1/arena/...`). Thin: parse, call `ArenaService`, shape the response.

    POST /v1/arena/battles               start a battle (or its next turn: continue_from); SSE stream of A and B
    POST /v1/arena/battles/{id}/vote     {"choice": "A"|"B"|"tie"|"both_bad", "reasons"?, "comment"?} -> the reveal
    POST /v1/arena/battles/{id}/edit     {"text"}: after the reveal, the judge's edit of the winning answer
    GET  /v1/arena/battles/{id}          state; contestants only after the vote
    POST /v1/arena/compare               named models side by side, same seed, a slot per pane; SSE (compare.py)
    GET  /v1/arena/leaderboard           ?source=people|simulated|all: ratings, Rank(UB), length-controlled
    GET  /v1/arena/export                ?format=dpo|kto: the votes as training rows (admin token by default)
    GET  /v1/arena/info                  example prompts, limits, served models for a front end
    GET  /v1/arena/queue                 how busy the engine is (for a waiting message)
    GET  /v1/arena/training              adapters training into the served registry: step, loss, ETA

The judge's session id comes in the `judge` field or the `X-Palate-Judge` header; only its sha256 is stored.
"""

from __future__ import annotations

import functools

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response, StreamingResponse

from server.arena import views
from server.arena.compare import start_compare
from server.arena.protocol import (ArenaInfo, BattleRequest, BattleView, CompareRequest, EditRequest, QueueView,
                                   Reveal, TrainingView, VoteRequest)
from server.admission import BATTLE_SLOTS, admitted, slot
from server.arena.service import ArenaService

router = APIRouter(prefix="/v1/arena", tags=["arena"])

# Nothing here may name a contestant; caching proxies must not keep or merge streams.
_STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


def _service(request: Request) -> ArenaService:
    return request.app.state.arena


@router.post("/battles")
async def start_battle(body: BattleRequest, request: Request,
                       x_palate_judge: str | None = Header(None)) -> Response:
    judge = body.judge or x_palate_judge

    async def start() -> StreamingResponse:
        _, stream = await _service(request).start_battle(body, judge)
        return StreamingResponse(stream, media_type="text/event-stream", headers=_STREAM_HEADERS)

    # Both sides hold an engine slot until the stream ends; 429 + Retry-After beyond the client's share.
    return await admitted(request, start, endpoint="battle", cost=BATTLE_SLOTS, battle=True, judge=judge,
                          model="arena")


@router.post("/battles/{battle_id}/vote", response_model=Reveal)
async def vote(battle_id: str, body: VoteRequest, request: Request,
               x_palate_judge: str | None = Header(None)) -> Reveal:
    return await _service(request).vote(battle_id, body, x_palate_judge)


@router.post("/battles/{battle_id}/edit", response_model=Reveal)
async def edit_winner(battle_id: str, body: EditRequest, request: Request,
                      x_palate_judge: str | None = Header(None)) -> Reveal:
    return await _service(request).edit_winner(battle_id, body, x_palate_judge)


@router.post("/compare")
async def compare(body: CompareRequest, request: Request, x_palate_judge: str | None = Header(None)) -> Response:
    async def start() -> StreamingResponse:
        pane_slot = functools.partial(slot, request, endpoint="compare", judge=x_palate_judge)
        stream = await start_compare(_service(request), body, pane_slot)
        return StreamingResponse(stream, media_type="text/event-stream", headers=_STREAM_HEADERS)

    # One slot per pane: the first here (429 + Retry-After when the client has no room; held until the stream ends),
    # the others as the stream runs - a 3-model compare under a 2-slot share runs two panes, then the third.
    return await admitted(request, start, endpoint="compare", cost=1, judge=x_palate_judge, model="arena")


@router.get("/battles/{battle_id}", response_model=BattleView)
async def get_battle(battle_id: str, request: Request) -> BattleView:
    return await _service(request).get_battle(battle_id)


@router.get("/leaderboard")
async def leaderboard(request: Request, source: str = "people") -> dict:
    return await views.leaderboard(_service(request), source)


@router.get("/export")
async def export(request: Request, format: str = "dpo", authorization: str | None = Header(None)) -> dict:
    return await views.export(_service(request), authorization, format)


@router.get("/info", response_model=ArenaInfo)
async def info(request: Request) -> ArenaInfo:
    return await views.info(_service(request))


@router.get("/queue", response_model=QueueView)
async def queue(request: Request) -> QueueView:
    return views.queue(_service(request))


@router.get("/training", response_model=TrainingView, response_model_exclude_none=True)
async def training(request: Request) -> TrainingView:
    return await views.training(_service(request))
