"""The vote store: arena battles and their votes in a SQL database (SQLAlchemy Core).

The embedded default is a SQLite file in WAL mode with synchronous=FULL (a committed vote survives a SIGKILL of
the server); a PostgreSQL URL works unchanged, so several server replicas can share one store: battles live in the
database, and any replica can take the vote. The tables and their migrations are in `core.vote_schema`.

A multi-turn battle is a chain of battles, one per turn: each follow-up names its `parent_id`, keeps the same
contestants on the same sides, and stores each side's own earlier turns as that side's `history`.

Contract: `record_vote` stores a vote only when both sides are finished, the turn was not continued, and no vote
exists yet; it raises `BattleNotFound`, `BattleNotFinished`, `BattleContinued` or `AlreadyVoted` otherwise. A vote
is durable once it returns. `edit_winner` stores the judge's edit of the winning answer, after the vote only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from core.vote_schema import (MIGRATIONS, SCHEMA_VERSION, battle_sides, battles, metadata,  # noqa: F401
                              schema_table, utcnow, votes)

log = logging.getLogger("palate.votes")

SIDES = ("A", "B")
CHOICES = ("A", "B", "tie", "both_bad")


class VoteStoreError(RuntimeError):
    """A vote-store operation failed; the message is safe to show a client (it names no contestant)."""


class BattleNotFound(VoteStoreError):
    pass


class BattleNotFinished(VoteStoreError):
    pass


class AlreadyVoted(VoteStoreError):
    pass


class BattleContinued(VoteStoreError):
    pass


class NotEditable(VoteStoreError):
    pass


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def prompt_hash(prompt: str, system: str | None) -> str:
    """sha256 of the canonical JSON of (system, prompt): equal prompts hash equal across battles."""
    return sha256_text(json.dumps({"system": system or "", "prompt": prompt}, sort_keys=True, ensure_ascii=False))


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands back naive datetimes; everything stored is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value


@dataclass
class SideRecord:
    side: str
    contestant: str
    content_hash: str | None = None
    response: str | None = None
    finish_reason: str | None = None  # stop | length | abort | error
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: float | None = None
    duration_ms: float | None = None
    finished_at: dt.datetime | None = None
    error: str | None = None
    flags: list[str] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)  # this side's earlier turns (user, assistant, ...)

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    def conversation(self, prompt: str) -> list[dict]:
        """This side's whole conversation through this turn: history, the turn's prompt, its answer."""
        return [*self.history, {"role": "user", "content": prompt},
                {"role": "assistant", "content": self.response or ""}]


@dataclass
class VoteRecord:
    winner: str
    voted_at: dt.datetime
    judge_sha256: str | None = None
    ui_version: str | None = None
    reasons: list[str] = field(default_factory=list)
    comment: str | None = None
    edited_response: str | None = None
    edited_at: dt.datetime | None = None


@dataclass
class BattleRecord:
    id: str
    created_at: dt.datetime
    prompt: str
    system: str | None
    prompt_sha256: str
    base_model: str
    sampling: dict[str, Any]
    seed: int
    sides: dict[str, SideRecord]
    ui_version: str | None = None
    judge_sha256: str | None = None
    vote: VoteRecord | None = None
    parent_id: str | None = None
    turn: int = 1

    @property
    def finished(self) -> bool:
        return all(self.sides[s].finished for s in SIDES)

    @property
    def flags(self) -> list[str]:
        """Every side's flags as 'flag:side', e.g. ['truncated:B', 'identity_leak:A']."""
        return [f"{flag}:{s}" for s in SIDES for flag in self.sides[s].flags]

    def winner_contestant(self) -> str | None:
        if self.vote and self.vote.winner in SIDES:
            return self.sides[self.vote.winner].contestant
        return None


def normalize_url(url: str, root: Path | None = None) -> str:
    """Use psycopg 3 for PostgreSQL URLs; make relative SQLite paths relative to `root` and create the folder."""
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        path = Path(url[len("sqlite:///"):])
        if not path.is_absolute() and root is not None:
            path = root / path
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    return url


def safe_url(url: str) -> str:
    """The URL with any password masked, for logs and error messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a malformed URL is shown by scheme only
        return url.split("://", 1)[0] + "://…"


class VoteStore:
    """Battles and votes in the database at `url`. Thread-safe; every method is a short transaction, so an async
    server calls them in a worker thread."""

    def __init__(self, url: str, *, root: Path | None = None, migrate: bool = True):
        self.url = normalize_url(url, root)
        self.engine: Engine = self._make_engine(self.url)
        if migrate:
            self.migrate()

    @staticmethod
    def _make_engine(url: str) -> Engine:
        if url.startswith("sqlite"):
            engine = sa.create_engine(url, connect_args={"timeout": 30})

            @sa.event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn, _record):  # noqa: ANN001
                cursor = dbapi_conn.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=FULL")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.close()

            return engine
        return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)

    def close(self) -> None:
        self.engine.dispose()

    # ---- schema ------------------------------------------------------------------------------------------------
    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("palate_schema"):
                return 0
            return conn.execute(sa.select(sa.func.max(schema_table.c.version))).scalar() or 0

    def migrate(self) -> int:
        """Apply the migrations this database lacks, in order; returns the schema version. Replicas starting at
        once are serialised (an advisory lock on PostgreSQL; SQLite's write lock and idempotent DDL otherwise)."""
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(8472025)"))
            metadata.create_all(conn, tables=[schema_table], checkfirst=True)
            done = set(conn.execute(sa.select(schema_table.c.version)).scalars())
            newer = max(done, default=0)
            if newer > SCHEMA_VERSION:
                raise VoteStoreError(f"The vote store at {safe_url(self.url)} has schema version {newer}, newer than "
                                     f"this Palate ({SCHEMA_VERSION}); upgrade Palate.")
            for version, description, apply in MIGRATIONS:
                if version in done:
                    continue
                apply(conn)
                conn.execute(schema_table.insert().values(version=version, description=description,
                                                          applied_at=utcnow()))
                log.info("vote store %s: applied migration %d (%s)", safe_url(self.url), version, description)
        return SCHEMA_VERSION

    # ---- writing -----------------------------------------------------------------------------------------------
    def create_battle(self, record: BattleRecord) -> None:
        """Insert a new battle and its two (unfinished) sides in one transaction."""
        with self.engine.begin() as conn:
            conn.execute(battles.insert().values(
                id=record.id, created_at=record.created_at, prompt=record.prompt, system=record.system,
                prompt_sha256=record.prompt_sha256, base_model=record.base_model, sampling=record.sampling,
                seed=record.seed, ui_version=record.ui_version, judge_sha256=record.judge_sha256,
                parent_id=record.parent_id, turn=record.turn))
            conn.execute(battle_sides.insert(), [
                {"battle_id": record.id, "side": s, "contestant": record.sides[s].contestant,
                 "content_hash": record.sides[s].content_hash, "flags": [],
                 "history": list(record.sides[s].history) or None} for s in SIDES])

    def finish_side(self, battle_id: str, side: SideRecord) -> None:
        """Record one side's finished answer (finished_at defaults to now)."""
        with self.engine.begin() as conn:
            conn.execute(battle_sides.update().where(
                battle_sides.c.battle_id == battle_id, battle_sides.c.side == side.side).values(
                response=side.response, finish_reason=side.finish_reason, prompt_tokens=side.prompt_tokens,
                completion_tokens=side.completion_tokens, ttft_ms=side.ttft_ms, duration_ms=side.duration_ms,
                finished_at=side.finished_at or utcnow(), error=side.error, flags=list(side.flags)))

    def record_vote(self, battle_id: str, winner: str, *, judge_sha256: str | None = None,
                    ui_version: str | None = None, reasons: list[str] | None = None,
                    comment: str | None = None) -> BattleRecord:
        """Store the one vote of a finished battle and return the battle with its vote. The database's primary
        key on votes.battle_id makes a second vote fail even when two arrive at once, on any replica. A turn
        that was continued is not votable: the vote belongs to the latest turn."""
        if winner not in CHOICES:
            raise ValueError(f"winner must be one of {CHOICES}, got {winner!r}")
        with self.engine.connect() as conn:
            finished = conn.execute(sa.select(battle_sides.c.finished_at).where(
                battle_sides.c.battle_id == battle_id)).scalars().all()
            continued = conn.execute(sa.select(battles.c.id).where(battles.c.parent_id == battle_id)).first()
        if not finished:
            raise BattleNotFound(f"No arena battle with id '{battle_id}'.")
        if any(value is None for value in finished):
            raise BattleNotFinished("Both sides must finish before a vote; wait for the stream to end.")
        if continued is not None:
            raise BattleContinued(f"This turn was continued (battle '{continued[0]}'); vote on the latest turn.")
        try:
            with self.engine.begin() as conn:
                conn.execute(votes.insert().values(battle_id=battle_id, winner=winner, judge_sha256=judge_sha256,
                                                   voted_at=utcnow(), ui_version=ui_version,
                                                   reasons=list(reasons) if reasons else None, comment=comment))
        except IntegrityError:
            raise AlreadyVoted("This battle already has a vote; start a new round to vote again.") from None
        record = self.get_battle(battle_id)
        assert record is not None
        return record

    def edit_winner(self, battle_id: str, text: str, *, judge_sha256: str | None = None) -> BattleRecord:
        """Store the judge's edit of the winning answer (after the vote; A or B won). When the vote recorded a
        judge, only that judge may edit. Editing again replaces the edit."""
        record = self.get_battle(battle_id)
        if record is None:
            raise BattleNotFound(f"No arena battle with id '{battle_id}'.")
        if record.vote is None:
            raise NotEditable("Vote first: the winning answer can be edited after the reveal.")
        if record.vote.winner not in SIDES:
            raise NotEditable("Only a winning answer can be edited; this vote was a tie or both bad.")
        if record.vote.judge_sha256 and record.vote.judge_sha256 != judge_sha256:
            raise NotEditable("Only the person who voted can edit the winning answer.")
        with self.engine.begin() as conn:
            conn.execute(votes.update().where(votes.c.battle_id == battle_id).values(
                edited_response=text, edited_at=utcnow()))
        edited = self.get_battle(battle_id)
        assert edited is not None
        return edited

    def continuation_of(self, battle_id: str) -> str | None:
        """The id of the battle that continued this one (its next turn), or None."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(battles.c.id).where(battles.c.parent_id == battle_id)).first()
        return row[0] if row else None

    # ---- reading -----------------------------------------------------------------------------------------------
    def get_battle(self, battle_id: str) -> BattleRecord | None:
        found = list(self._battles(battles.c.id == battle_id))
        return found[0] if found else None

    def voted_battles(self) -> list[BattleRecord]:
        """Every battle with a vote, oldest vote first."""
        return sorted(self._battles(battles.c.id.in_(sa.select(votes.c.battle_id))),
                      key=lambda b: (b.vote.voted_at, b.id))

    def count_votes(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(votes)).scalar() or 0

    def count_battles(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(battles)).scalar() or 0

    def outcomes(self) -> list[tuple[str, str, str]]:
        """(side A contestant, side B contestant, winner) of every voted battle: what the leaderboard needs."""
        a, b = battle_sides.alias("a"), battle_sides.alias("b")
        query = (sa.select(a.c.contestant, b.c.contestant, votes.c.winner)
                 .select_from(votes.join(a, sa.and_(a.c.battle_id == votes.c.battle_id, a.c.side == "A"))
                              .join(b, sa.and_(b.c.battle_id == votes.c.battle_id, b.c.side == "B")))
                 .order_by(votes.c.voted_at))
        with self.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(query)]

    def pair_load(self, pending_window_s: float = 900.0) -> dict[frozenset[str], int]:
        """How many battles each unordered contestant pair has: voted ones, plus unvoted ones started within the
        last `pending_window_s` seconds (they are probably about to be voted)."""
        a, b = battle_sides.alias("a"), battle_sides.alias("b")
        since = utcnow() - dt.timedelta(seconds=pending_window_s)
        query = (sa.select(a.c.contestant, b.c.contestant, sa.func.count())
                 .select_from(battles.join(a, sa.and_(a.c.battle_id == battles.c.id, a.c.side == "A"))
                              .join(b, sa.and_(b.c.battle_id == battles.c.id, b.c.side == "B"))
                              .outerjoin(votes, votes.c.battle_id == battles.c.id))
                 .where(sa.or_(votes.c.battle_id.is_not(None), battles.c.created_at >= since))
                 .group_by(a.c.contestant, b.c.contestant))
        load: dict[frozenset[str], int] = {}
        with self.engine.connect() as conn:
            for left, right, count in conn.execute(query):
                key = frozenset((left, right))
                load[key] = load.get(key, 0) + int(count)
        return load

    def _battles(self, where: Any) -> Iterator[BattleRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(battles, votes.c.winner, votes.c.voted_at,
                                          votes.c.judge_sha256.label("vote_judge"),
                                          votes.c.ui_version.label("vote_ui"), votes.c.reasons, votes.c.comment,
                                          votes.c.edited_response, votes.c.edited_at)
                                .outerjoin(votes, votes.c.battle_id == battles.c.id).where(where)).mappings().all()
            ids = [r["id"] for r in rows]
            sides: dict[str, dict[str, SideRecord]] = {i: {} for i in ids}
            for chunk_start in range(0, len(ids), 500):
                chunk = ids[chunk_start:chunk_start + 500]
                for s in conn.execute(sa.select(battle_sides).where(battle_sides.c.battle_id.in_(chunk))).mappings():
                    sides[s["battle_id"]][s["side"]] = SideRecord(
                        side=s["side"], contestant=s["contestant"], content_hash=s["content_hash"],
                        response=s["response"], finish_reason=s["finish_reason"], prompt_tokens=s["prompt_tokens"],
                        completion_tokens=s["completion_tokens"], ttft_ms=s["ttft_ms"], duration_ms=s["duration_ms"],
                        finished_at=_aware(s["finished_at"]), error=s["error"], flags=list(s["flags"] or []),
                        history=list(s["history"] or []))
        for r in rows:
            vote = VoteRecord(r["winner"], _aware(r["voted_at"]), r["vote_judge"], r["vote_ui"],
                              list(r["reasons"] or []), r["comment"], r["edited_response"],
                              _aware(r["edited_at"])) if r["winner"] is not None else None
            yield BattleRecord(
                id=r["id"], created_at=_aware(r["created_at"]), prompt=r["prompt"], system=r["system"],
                prompt_sha256=r["prompt_sha256"], base_model=r["base_model"], sampling=dict(r["sampling"] or {}),
                seed=int(r["seed"]), sides=sides[r["id"]], ui_version=r["ui_version"],
                judge_sha256=r["judge_sha256"], vote=vote, parent_id=r["parent_id"], turn=r["turn"] or 1)


def open_store(url: str, root: Path | None = None) -> VoteStore:
    """Open (and migrate) the store at `url`; relative SQLite paths are taken from `root` (the project root)."""
    if root is None:
        from core.config import PROJECT_ROOT
        root = PROJECT_ROOT
    return VoteStore(url, root=root)
