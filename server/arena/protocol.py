"""Request and response models of the arena API (`/v1/arena/...`), a Palate extension to the OpenAI protocol.

Blinding rule for every model here: nothing sent before the vote is stored names a contestant. Contestant names
appear only in `Reveal` (the vote response and GET of a voted battle) and in the leaderboard.

Streamed battle events (`POST /v1/arena/battles`, Server-Sent Events, one JSON object per `data:` line):

    {"type": "battle", "battle_id": "<uuid4>", "sides": ["A", "B"]}
    {"type": "delta", "side": "A", "text": "..."}
    {"type": "side_done", "side": "A", "finish_reason": "stop"|"length"|"error", "completion_tokens": 17,
     "message": "side A failed; ..."}           # message only when finish_reason is "error"
    {"type": "done", "battle_id": "<uuid4>", "vote_url": "/v1/arena/battles/<uuid4>/vote"}

A follow-up turn is a new battle started with `continue_from` (the previous turn's id): the same contestants keep
their sides and each continues its own conversation; its stream has the same events. Compare mode
(`POST /v1/arena/compare`) is named, not blind, and stores nothing: its events carry the model index and name.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Side = Literal["A", "B"]
Choice = Literal["A", "B", "tie", "both_bad"]
ReasonTag = Literal["grounded", "invented_facts", "hype", "repetitive", "too_long", "too_short"]  # REASON_TAGS


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BattleRequest(_Request):
    """Start a battle. Sampling settings apply to both sides identically; omitted ones use configs/arena.yaml."""

    prompt: str = Field(..., min_length=1, description="The user's message both contestants answer.")
    system: str | None = Field(None, description="Optional system message, shared by both sides.")
    max_tokens: int | None = Field(None, ge=1, description="Per side; capped by server.max_tokens_cap.")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, lt=2**31, description="Shared seed; random when omitted.")
    judge: str | None = Field(None, max_length=256, description="Session id of the person judging; only its "
                              "sha256 is stored. The X-Palate-Judge header works too.")
    ui_version: str | None = Field(None, max_length=64, description="Which front end started the battle.")
    continue_from: str | None = Field(
        None, max_length=64, description="Palate extension: id of the previous turn's battle (finished, not voted). "
        "Both contestants keep their sides and continue their own conversations; `system` and sampling settings "
        "come from the first turn and may not be given again.")


class VoteRequest(_Request):
    choice: Choice = Field(..., description="'A', 'B', 'tie' or 'both_bad'.")
    judge: str | None = Field(None, max_length=256, description="Session id; only its sha256 is stored.")
    ui_version: str | None = Field(None, max_length=64)
    reasons: list[ReasonTag] = Field(default_factory=list, max_length=6,
                                     description="Optional reason tags, stored with the vote.")
    comment: str | None = Field(None, max_length=2000, description="Optional free-text comment, stored with the vote.")


class EditRequest(_Request):
    """After the reveal, the judge's improved version of the winning answer; the export uses it as `chosen`."""

    text: str = Field(..., min_length=1, max_length=20000)
    judge: str | None = Field(None, max_length=256, description="The session id that voted (checked by sha256).")


class CompareRequest(_Request):
    """Named comparison: every model answers the same messages with the same sampling and seed, in one batch."""

    models: list[str] = Field(..., min_length=2, description="2 to compare_max_models served names, distinct.")
    messages: list[dict[str, str]] | None = Field(
        None, description="The conversation so far ({role, content}; roles system, user, assistant), ending with "
        "a user message. Give either messages or prompt.")
    prompt: str | None = Field(None, min_length=1, description="A single user message (instead of messages).")
    system: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, lt=2**31)


class ContestantReveal(BaseModel):
    side: Side
    model: str = Field(..., description="name@version, or 'base'.")
    content_hash: str | None = None
    finish_reason: str | None = None
    completion_tokens: int | None = None
    ttft_ms: float | None = None
    duration_ms: float | None = None


class SideView(BaseModel):
    finished: bool
    finish_reason: str | None = None
    text: str | None = None


class Reveal(BaseModel):
    """The vote response: who sat where, who won, and the battle's flags."""

    object: Literal["arena.battle.reveal"] = "arena.battle.reveal"
    battle_id: str
    winner: Choice
    winner_model: str | None = Field(None, description="name@version of the winner; None for tie / both_bad.")
    contestants: dict[str, ContestantReveal]
    flags: list[str]
    voted_at: str
    reasons: list[str] = Field(default_factory=list)
    comment: str | None = None
    edited: bool = Field(False, description="The judge edited the winning answer after the reveal.")
    turn: int = 1


class BattleView(BaseModel):
    """GET /v1/arena/battles/{id}: state and texts; `reveal` is set only once a vote is stored."""

    object: Literal["arena.battle"] = "arena.battle"
    battle_id: str
    status: Literal["generating", "awaiting_vote", "continued", "voted"]
    sides: dict[str, SideView]
    turn: int = 1
    continued_by: str | None = Field(None, description="The next turn's battle id, once the battle was continued.")
    reveal: Reveal | None = None


class ArenaInfo(BaseModel):
    """GET /v1/arena/info: what a front end needs (no battle-specific data)."""

    object: Literal["arena.info"] = "arena.info"
    example_prompts: list[str]
    default_max_tokens: int
    max_tokens_cap: int
    contestant_count: int
    votes: int
    export_access: Literal["admin", "open", "off"]
    reason_tags: list[str]
    served_models: list[str] = Field(..., description="Names Compare and Chat may use (base, aliases, versions).")
    compare_max_models: int


class TrainingJob(BaseModel):
    """One training job's latest progress record (core.training_progress)."""

    name: str
    version: int | None = None
    kind: str | None = None
    state: Literal["starting", "training", "evaluating", "registered", "failed", "stopped"]
    step: int | None = None
    max_steps: int | None = None
    loss: float | None = None
    elapsed_s: float | None = None
    eta_s: float | None = Field(None, description="Seconds left at the pace so far (training steps only).")
    ref: str | None = Field(None, description="name@version, once registered.")
    error: str | None = None
    updated: float = Field(..., description="Unix time of the record.")
    summary: str = Field(..., description="One line for a person.")


class TrainingView(BaseModel):
    """GET /v1/arena/training: jobs training into the served registry (newest first), for a progress line."""

    object: Literal["arena.training"] = "arena.training"
    jobs: list[TrainingJob]


class QueueView(BaseModel):
    """GET /v1/arena/queue: how busy the engine is, for a front end's waiting message (names no model)."""

    object: Literal["arena.queue"] = "arena.queue"
    engine_requests: int = Field(..., description="Generations in flight in the engine, all clients.")
    engine_capacity: int = Field(..., description="How many sequences the engine runs at once (max_num_seqs).")
