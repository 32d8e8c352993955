"""The vote store on SQLite (WAL) and on a real PostgreSQL server: schema, contract, concurrency."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from core.votes import (MIGRATIONS, SCHEMA_VERSION, AlreadyVoted, BattleNotFinished, BattleNotFound, BattleRecord,
                        SideRecord, VoteStore, prompt_hash, utcnow)


def new_battle(a: str = "sft@1", b: str = "base", prompt: str = "Describe a condo") -> BattleRecord:
    return BattleRecord(
        id=str(uuid.uuid4()), created_at=utcnow(), prompt=prompt, system=None, prompt_sha256=prompt_hash(prompt, None),
        base_model="SmolLM2-135M-Instruct", sampling={"max_tokens": 64, "temperature": 0.7, "top_p": 0.95}, seed=7,
        sides={"A": SideRecord("A", a, "h" * 64 if a != "base" else None), "B": SideRecord("B", b, None)},
        ui_version="test/1", judge_sha256="j" * 64)


def finish(store: VoteStore, battle: BattleRecord, text: str = "answer", flags=()) -> None:
    for side in "AB":
        store.finish_side(battle.id, SideRecord(side, battle.sides[side].contestant, response=f"{text} {side}",
                                                finish_reason="stop", prompt_tokens=10, completion_tokens=3,
                                                ttft_ms=5.0, duration_ms=20.0, flags=list(flags)))


@pytest.fixture
def store(database_url):
    store = VoteStore(database_url)
    yield store
    store.close()


def test_schema_is_versioned_and_migration_idempotent(store, database_url):
    assert store.schema_version() == SCHEMA_VERSION == MIGRATIONS[-1][0]
    again = VoteStore(database_url)  # a second replica starting: nothing re-applied
    assert again.migrate() == SCHEMA_VERSION
    with again.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT version, description FROM palate_schema")).all()
    assert [r[0] for r in rows] == [v for v, _, _ in MIGRATIONS]
    again.close()


def test_sqlite_uses_wal(tmp_path):
    store = VoteStore(f"sqlite:///{tmp_path / 'v.db'}")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    store.close()


def test_relative_sqlite_path_is_under_root_and_folder_created(tmp_path):
    store = VoteStore("sqlite:///data/nested/palate.db", root=tmp_path)
    assert (tmp_path / "data" / "nested" / "palate.db").is_file()
    store.close()


def test_battle_round_trip_records_every_field(store):
    battle = new_battle()
    store.create_battle(battle)
    finish(store, battle, flags=["truncated"])
    got = store.get_battle(battle.id)
    assert got.prompt == "Describe a condo" and got.prompt_sha256 == prompt_hash("Describe a condo", None)
    assert got.sampling == battle.sampling and got.seed == 7 and got.base_model == battle.base_model
    assert got.sides["A"].contestant == "sft@1" and got.sides["A"].content_hash == "h" * 64
    assert got.sides["B"].response == "answer B" and got.sides["B"].completion_tokens == 3
    assert got.sides["A"].ttft_ms == 5.0 and got.sides["A"].duration_ms == 20.0
    assert got.sides["A"].finished_at.tzinfo is not None and got.finished
    assert got.flags == ["truncated:A", "truncated:B"]
    assert got.ui_version == "test/1" and got.judge_sha256 == "j" * 64 and got.vote is None


def test_vote_contract(store):
    battle = new_battle()
    store.create_battle(battle)
    with pytest.raises(BattleNotFound):
        store.record_vote(str(uuid.uuid4()), "A")
    with pytest.raises(BattleNotFinished):
        store.record_vote(battle.id, "A")
    finish(store, battle)
    voted = store.record_vote(battle.id, "B", judge_sha256="x" * 64, ui_version="ui/2")
    assert voted.vote.winner == "B" and voted.winner_contestant() == "base" and voted.vote.judge_sha256 == "x" * 64
    with pytest.raises(AlreadyVoted):
        store.record_vote(battle.id, "A")
    assert store.count_votes() == 1
    assert store.get_battle(battle.id).vote.winner == "B"  # the first vote stands
    with pytest.raises(ValueError):
        store.record_vote(battle.id, "C")


def test_concurrent_votes_on_one_battle_store_exactly_one(store):
    battle = new_battle()
    store.create_battle(battle)
    finish(store, battle)
    barrier = threading.Barrier(8)

    def vote(choice: str) -> str:
        barrier.wait()
        try:
            store.record_vote(battle.id, choice)
            return "ok"
        except AlreadyVoted:
            return "conflict"

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(vote, ["A", "B"] * 4))
    assert results.count("ok") == 1 and results.count("conflict") == 7
    assert store.count_votes() == 1


def test_many_writers(store):
    battles = [new_battle(prompt=f"p{i}") for i in range(40)]

    def run(battle: BattleRecord) -> None:
        store.create_battle(battle)
        finish(store, battle)
        store.record_vote(battle.id, "A")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(run, battles))
    assert store.count_votes() == 40 and store.count_battles() == 40
    assert len(store.voted_battles()) == 40
    assert store.outcomes()[0] == ("sft@1", "base", "A")


def test_pair_load_counts_voted_and_recent_open_battles(store):
    voted, open_ = new_battle("sft@1", "base"), new_battle("base", "sft@1")
    other = new_battle("dpo@1", "sft@1")
    for b in (voted, open_, other):
        store.create_battle(b)
    finish(store, voted)
    store.record_vote(voted.id, "A")
    load = store.pair_load(pending_window_s=900)
    assert load == {frozenset(("sft@1", "base")): 2, frozenset(("dpo@1", "sft@1")): 1}
    assert store.pair_load(pending_window_s=-60) == {frozenset(("sft@1", "base")): 1}


def test_newer_schema_is_refused(store, database_url):
    with store.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO palate_schema (version, description, applied_at) "
                             "VALUES (999, 'future', CURRENT_TIMESTAMP)"))
    with pytest.raises(Exception, match="newer than this Palate"):
        VoteStore(database_url)
