"""The arena API on the real app (create_app) with a fake engine: streaming, votes, errors, flags, blinding."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from core.votes import VoteStore

IDENTITY_STRINGS = ("sft", "dpo", "@1", "adapters/", "lora")


def battle(client, prompt: str = "Describe a condo near transit", **body) -> tuple[str, list[dict], bytes]:
    """Run one battle to the end; returns (battle id, events, raw body bytes)."""
    with client.stream("POST", "/v1/arena/battles", json={"prompt": prompt, **body}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(response.iter_bytes())
    events = [json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: ")]
    return events[0]["battle_id"], events, raw


def store_of(client) -> VoteStore:
    return client.app.state.votes


def test_battle_streams_both_sides_then_vote_reveals(fake_client):
    battle_id, events, _ = battle(fake_client, seed=11, max_tokens=64, temperature=0.5)
    assert str(uuid.UUID(battle_id)) == battle_id and uuid.UUID(battle_id).version == 4
    kinds = [e["type"] for e in events]
    assert kinds[0] == "battle" and kinds[-1] == "done" and kinds.count("side_done") == 2
    text = {s: "".join(e["text"] for e in events if e["type"] == "delta" and e["side"] == s) for s in "AB"}
    assert text["A"] and text["B"] and text["A"] != text["B"]
    # Both sides: the same engine, the same sampling and seed.
    sampled = [r for r in fake_client.engine.requests if battle_id in r[0]]
    assert len(sampled) == 2 and sampled[0][2] == sampled[1][2] and sampled[0][2].seed == 11
    assert sampled[0][2].max_tokens == 64 and sampled[0][2].temperature == 0.5

    view = fake_client.get(f"/v1/arena/battles/{battle_id}").json()
    assert view["status"] == "awaiting_vote" and view["reveal"] is None and view["sides"]["A"]["text"] == text["A"]

    reveal = fake_client.post(f"/v1/arena/battles/{battle_id}/vote", json={"choice": "A"},
                              headers={"X-Palate-Judge": "session-123"}).json()
    assert reveal["winner"] == "A" and set(reveal["contestants"]) == {"A", "B"}
    models = {reveal["contestants"][s]["model"] for s in "AB"}
    assert len(models) == 2 and models <= {"base", "sft@1", "dpo@1"}
    assert reveal["winner_model"] == reveal["contestants"]["A"]["model"]
    record = store_of(fake_client).get_battle(battle_id)
    assert record.vote.judge_sha256 == __import__("hashlib").sha256(b"session-123").hexdigest()
    assert record.sides["A"].response == text["A"] and record.seed == 11
    assert fake_client.get(f"/v1/arena/battles/{battle_id}").json()["reveal"]["winner"] == "A"


def test_vote_errors_are_openai_format(fake_client):
    battle_id, _, _ = battle(fake_client)
    unknown = fake_client.post(f"/v1/arena/battles/{uuid.uuid4()}/vote", json={"choice": "A"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "battle_not_found"
    assert fake_client.post("/v1/arena/battles/not-a-uuid/vote", json={"choice": "A"}).status_code == 404
    bad = fake_client.post(f"/v1/arena/battles/{battle_id}/vote", json={"choice": "left"})
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "choice"
    assert fake_client.post(f"/v1/arena/battles/{battle_id}/vote", json={"choice": "tie"}).status_code == 200
    again = fake_client.post(f"/v1/arena/battles/{battle_id}/vote", json={"choice": "B"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_voted"
    assert store_of(fake_client).count_votes() == 1
    assert fake_client.post("/v1/arena/battles", json={"prompt": ""}).status_code == 422
    assert fake_client.post("/v1/arena/battles", json={"prompt": "x" * 5000}).status_code == 400


def test_vote_before_both_sides_finish_is_409(fake_client):
    fake_client.engine.delay_s = 0.05
    with fake_client.stream("POST", "/v1/arena/battles", json={"prompt": "slow one"}) as response:
        lines = response.iter_lines()
        first = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
        early = fake_client.post(f"/v1/arena/battles/{first['battle_id']}/vote", json={"choice": "A"})
        assert early.status_code == 409 and early.json()["error"]["code"] == "battle_not_finished"
        assert fake_client.get(f"/v1/arena/battles/{first['battle_id']}").json()["status"] == "generating"
        for _ in lines:
            pass
    assert fake_client.post(f"/v1/arena/battles/{first['battle_id']}/vote", json={"choice": "A"}).status_code == 200


def test_failing_side_says_only_its_side_and_server_keeps_serving(fake_client):
    # The fake engine's error names the adapter and its path; none of it may reach the client.
    for _ in range(4):  # until a battle has at least one adapter side (base never fails)
        battle_id, events, raw = battle(fake_client, prompt="FAIL please")
        failed = [e for e in events if e["type"] == "side_done" and e["finish_reason"] == "error"]
        if failed:
            break
    assert failed and failed[0]["message"].startswith(f"side {failed[0]['side']} failed")
    for needle in IDENTITY_STRINGS:
        assert needle.encode() not in raw.lower(), needle
    record = store_of(fake_client).get_battle(battle_id)
    assert "crashed" in record.sides[failed[0]["side"]].error
    assert f"error:{failed[0]['side']}" in record.flags
    assert fake_client.post(f"/v1/arena/battles/{battle_id}/vote", json={"choice": "both_bad"}).status_code == 200
    assert battle(fake_client)[1][-1]["type"] == "done"  # still serving


def test_truncated_and_identity_leaks_are_flagged(fake_client):
    battle_id, events, _ = battle(fake_client, prompt="LONG answer")
    assert {e["finish_reason"] for e in events if e["type"] == "side_done"} == {"length"}
    assert sorted(store_of(fake_client).get_battle(battle_id).flags) == ["truncated:A", "truncated:B"]
    battle_id, _, _ = battle(fake_client, prompt="LEAK your name")
    assert {f.split(":")[0] for f in store_of(fake_client).get_battle(battle_id).flags} == {"identity_leak"}


def test_pairs_with_fewest_votes_come_first(fake_client):
    seen = []
    for _ in range(3):
        battle_id, _, _ = battle(fake_client)
        reveal = fake_client.post(f"/v1/arena/battles/{battle_id}/vote", json={"choice": "A"}).json()
        seen.append(frozenset(c["model"] for c in reveal["contestants"].values()))
    assert len(set(seen)) == 3  # three contestants -> the three pairs, one each


def test_leaderboard_and_export_follow_votes(fake_client, monkeypatch):
    monkeypatch.setenv("PALATE_ADMIN_TOKEN", "admin-secret")
    assert fake_client.get("/v1/arena/leaderboard").json()["total_votes"] == 0
    for choice in ("A", "B", "tie"):
        battle_id, _, _ = battle(fake_client, prompt=f"prompt {choice}")
        fake_client.post(f"/v1/arena/battles/{battle_id}/vote", json={"choice": choice})
    board = fake_client.get("/v1/arena/leaderboard").json()
    assert board["total_votes"] == 3 and {s["contestant"] for s in board["standings"]} == {"base", "sft@1", "dpo@1"}
    exported = fake_client.get("/v1/arena/export", headers={"Authorization": "Bearer admin-secret"}).json()
    assert exported["summary"]["rows"] == 2 and exported["summary"]["dropped"]["tie"] == 1
    info = fake_client.get("/v1/arena/info").json()
    assert info["votes"] == 3 and info["contestant_count"] == 3 and info["example_prompts"]


def test_not_enough_contestants_is_503(tmp_path):
    from fastapi.testclient import TestClient

    from tests.arena.fakes import make_app, make_config

    app = make_app(make_config(tmp_path, names=()))
    with TestClient(app) as client:
        response = client.post("/v1/arena/battles", json={"prompt": "hi"})
        assert response.status_code == 503 and "at least two" in response.json()["error"]["message"]


def test_unreachable_database_leaves_the_rest_serving(tmp_path):
    from fastapi.testclient import TestClient

    from tests.arena.fakes import make_app, make_config

    config = make_config(tmp_path, database_url="postgresql://nobody:secret@127.0.0.1:1/none")
    with TestClient(make_app(config)) as client:
        response = client.post("/v1/arena/battles", json={"prompt": "hi"})
        assert response.status_code == 503 and "secret" not in response.text
        assert client.get("/v1/models").status_code == 200


def test_training_progress_is_served_and_named_when_battles_must_wait(tmp_path):
    """GET /v1/arena/training reads the progress files training writes into the served registry; while only base
    is served, the battle's 503 says what is training and that adapters join when registered."""
    from fastapi.testclient import TestClient

    from core.training_progress import progress_path, write_progress
    from tests.arena.fakes import make_app, make_config

    config = make_config(tmp_path, names=())
    write_progress(progress_path(config.server.adapter_root, "sft"), name="sft", version=1, kind="sft",
                   state="training", step=12, max_steps=64, loss=1.234, elapsed_s=80.0, eta_s=400.0)
    with TestClient(make_app(config)) as client:
        view = client.get("/v1/arena/training").json()
        assert view["object"] == "arena.training"
        (job,) = view["jobs"]
        assert (job["name"], job["state"], job["step"], job["max_steps"]) == ("sft", "training", 12, 64)
        assert job["summary"] == "sft@1: training, step 12/64, loss 1.23, about 7 min left"
        refused = client.post("/v1/arena/battles", json={"prompt": "hi"})
        message = refused.json()["error"]["message"]
        assert refused.status_code == 503 and "training now: sft@1: training, step 12/64" in message
        assert client.get("/v1/models").json()["data"][0]["id"] == "base"  # the registry's .training is no adapter
