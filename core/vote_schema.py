"""The vote store's tables and their migrations (SQLAlchemy Core). `core.votes` reads and writes them.

Schema version 2 (`MIGRATIONS` lists every version, applied in order and recorded in `palate_schema`):

    battles        id (uuid4), created_at, prompt (this turn's user message), system, prompt_sha256, base_model,
                   sampling (JSON), seed, ui_version, judge_sha256 of whoever started it;
                   v2: parent_id (the previous turn's battle of a multi-turn battle), turn (1 for a first turn)
    battle_sides   (battle_id, side A|B): contestant name@version, content hash, response, finish reason, token
                   counts, time to first token, duration, finished_at, error, flags (JSON);
                   v2: history (JSON: this side's own earlier turns, user and assistant messages, oldest first)
    votes          battle_id (primary key: one vote per battle, enforced by the database), winner
                   A|B|tie|both_bad, judge_sha256, voted_at, ui_version;
                   v2: reasons (JSON list of tags), comment, edited_response (the judge's edit of the winning
                   answer, after the reveal), edited_at

A migration only adds: columns added later are nullable, so rows written by an older version stay valid as they are.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

metadata = sa.MetaData()
schema_table = sa.Table(
    "palate_schema", metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)
battles = sa.Table(
    "battles", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("system", sa.Text),
    sa.Column("prompt_sha256", sa.String(64), nullable=False, index=True),
    sa.Column("base_model", sa.Text, nullable=False),
    sa.Column("sampling", sa.JSON, nullable=False),
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column("ui_version", sa.Text),
    sa.Column("judge_sha256", sa.String(64)),
    sa.Column("parent_id", sa.String(36)),  # v2
    sa.Column("turn", sa.Integer),  # v2; NULL (rows from v1) means 1
)
battle_sides = sa.Table(
    "battle_sides", metadata,
    sa.Column("battle_id", sa.String(36), sa.ForeignKey("battles.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("side", sa.String(1), primary_key=True),
    sa.Column("contestant", sa.Text, nullable=False),
    sa.Column("content_hash", sa.Text),
    sa.Column("response", sa.Text),
    sa.Column("finish_reason", sa.String(16)),
    sa.Column("prompt_tokens", sa.Integer),
    sa.Column("completion_tokens", sa.Integer),
    sa.Column("ttft_ms", sa.Float),
    sa.Column("duration_ms", sa.Float),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("error", sa.Text),
    sa.Column("flags", sa.JSON, nullable=False, default=list),
    sa.Column("history", sa.JSON),  # v2; NULL means no earlier turns
)
votes = sa.Table(
    "votes", metadata,
    sa.Column("battle_id", sa.String(36), sa.ForeignKey("battles.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("winner", sa.String(8), nullable=False),
    sa.Column("judge_sha256", sa.String(64)),
    sa.Column("voted_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("ui_version", sa.Text),
    sa.Column("reasons", sa.JSON),  # v2
    sa.Column("comment", sa.Text),  # v2
    sa.Column("edited_response", sa.Text),  # v2
    sa.Column("edited_at", sa.DateTime(timezone=True)),  # v2
)

_V1_COLUMNS = {"battles": {"parent_id", "turn"}, "battle_sides": {"history"},
               "votes": {"reasons", "comment", "edited_response", "edited_at"}}


def _migration_1(conn: Connection) -> None:
    # A fresh database gets today's tables at once; migration 2 then finds its columns present and skips them.
    metadata.create_all(conn, tables=[battles, battle_sides, votes], checkfirst=True)


def _add_column(conn: Connection, table: sa.Table, name: str) -> None:
    """ALTER TABLE ... ADD COLUMN, unless the column is there already (idempotent for replicas racing)."""
    present = {c["name"] for c in sa.inspect(conn).get_columns(table.name)}
    if name in present:
        return
    column = table.c[name]
    kind = column.type.compile(dialect=conn.dialect)
    conn.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{name}" {kind}'))


def _migration_2(conn: Connection) -> None:
    for table in (battles, battle_sides, votes):
        for name in sorted(_V1_COLUMNS[table.name]):
            _add_column(conn, table, name)
    # Follow-up turns are looked up by their parent.
    conn.execute(sa.text("CREATE INDEX IF NOT EXISTS ix_battles_parent_id ON battles (parent_id)"))


# (version, description, apply). Append new versions; never edit an applied one.
MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "battles, battle_sides, votes", _migration_1),
    (2, "multi-turn battles (parent_id, turn, side history); vote reasons, comment, edited winner", _migration_2),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
