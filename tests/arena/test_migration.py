"""A database written by the previous schema version (1) opens with today's code: migrated to the current version,
every row intact, and readable through the store's API. The fixture was written by Palate's schema-1 code."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import sqlalchemy as sa

from core.vote_export import export_pairs
from core.votes import SCHEMA_VERSION, VoteStore

DATA = Path(__file__).parent / "data"


def _rows(url: str, table: str, columns: list[str]) -> list[dict]:
    engine = sa.create_engine(url)
    order = "battle_id, side" if table == "battle_sides" else columns[0]
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}")).mappings().all()
    engine.dispose()
    return [{k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in r.items()} for r in rows]


def test_schema_1_database_migrates_with_every_row_intact(tmp_path):
    path = tmp_path / "votes.db"
    shutil.copy(DATA / "votes_schema_v1.db", path)
    expected = json.loads((DATA / "votes_schema_v1.expected.json").read_text())
    url = f"sqlite:///{path}"
    before = VoteStore(url, migrate=False)
    assert before.schema_version() == 1
    before.close()

    store = VoteStore(url)
    assert store.schema_version() == SCHEMA_VERSION == 2
    for table, rows in expected.items():
        assert _rows(url, table, sorted(rows[0])) == rows, table  # the old columns, byte for byte

    battles = {b.id: b for b in store._battles(sa.true())}
    assert len(battles) == 5 and store.count_votes() == 4
    first = battles["00000000-0000-4000-8000-000000000001"]
    assert (first.turn, first.parent_id, first.sides["A"].history) == (1, None, [])
    assert first.vote.winner == "B" and first.vote.reasons == [] and first.vote.edited_response is None
    assert battles["00000000-0000-4000-8000-000000000002"].system == "Be factual."
    assert battles["00000000-0000-4000-8000-000000000005"].vote is None
    # old votes still export exactly as before: one pair (battle 1), the rest dropped for their reasons
    result = export_pairs(store.voted_battles())
    assert result.summary["rows"] == 1
    assert {k: v for k, v in result.summary["dropped"].items() if v} == {"truncated": 1, "tie": 1, "both_bad": 1}
    # and the migrated store takes new multi-turn data
    store.record_vote("00000000-0000-4000-8000-000000000005", "A", reasons=["grounded"], comment="ok")
    assert store.get_battle("00000000-0000-4000-8000-000000000005").vote.reasons == ["grounded"]
    store.close()
