"""HTTP routes of the arena (`/v1/arena/...`). Thin: parse, call `ArenaService`, shape the response.

    POST /v1/arena/battles               start a battle; SSE stream of sides A and B (see protocol.py)
    POST /v1/arena/battles/{id}/vote     {"choice": "A"|"B"|"tie"|"both_bad"} -> the reveal
    GET  /v1/arena/battles/{id}          state; contestants only after the vote
    GET  /v1/arena/leaderboard           Bradley–Terry ratings, intervals, win-rate matrix
    GET  /v1/arena/export                the votes as DPO rows + lint summary
    GET  /v1/arena/info                  example prompts and limits for a front end

The judge's session id comes in the `judge` field or the `X-Palate-Judge` header; only its sha256 is stored.
"""

from __future__ import annotations

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse

from server.arena.protocol import ArenaInfo, BattleRequest, BattleView, Reveal, VoteRequest
from server.arena.service import ArenaService

router = APIRouter(prefix="/v1/arena", tags=["arena"])

# Nothing here may name a contestant; caching proxies must not keep or merge streams.
_STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


def _service(request: Request) -> ArenaService:
    return request.app.state.arena


@router.post("/battles")
async def start_battle(body: BattleRequest, request: Request,
                       x_palate_judge: str | None = Header(None)) -> StreamingResponse:
    _, stream = await _service(request).start_battle(body, body.judge or x_palate_judge)
    return StreamingResponse(stream, media_type="text/event-stream", headers=_STREAM_HEADERS)


@router.post("/battles/{battle_id}/vote", response_model=Reveal)
async def vote(battle_id: str, body: VoteRequest, request: Request,
               x_palate_judge: str | None = Header(None)) -> Reveal:
    return await _service(request).vote(battle_id, body, x_palate_judge)


@router.get("/battles/{battle_id}", response_model=BattleView)
async def get_battle(battle_id: str, request: Request) -> BattleView:
    return await _service(request).get_battle(battle_id)


@router.get("/leaderboard")
async def leaderboard(request: Request) -> dict:
    return await _service(request).leaderboard()


@router.get("/export")
async def export(request: Request) -> dict:
    return await _service(request).export()


@router.get("/info", response_model=ArenaInfo)
async def info(request: Request) -> ArenaInfo:
    return await _service(request).info()
