"""Arena v2 on the real app with the fake engine: multi-turn battles, reasons, edit-the-winner, KTO, compare,
and who may read the export."""

from __future__ import annotations

import json

import pytest

from tests.arena.test_api import battle

ADMIN = {"Authorization": "Bearer admin-secret"}


@pytest.fixture
def admin_token(monkeypatch):
    monkeypatch.setenv("PALATE_ADMIN_TOKEN", "admin-secret")


def sse_events(response) -> list[dict]:
    return [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]


def test_follow_up_keeps_sides_and_each_side_its_own_conversation(fake_client):
    first, _, _ = battle(fake_client, prompt="Describe a condo", judge="j1")
    second, events, raw = battle(fake_client, prompt="Now shorter, please", continue_from=first, judge="j1")
    assert events[-1]["type"] == "done" and second != first
    assert b"sft" not in raw and b"dpo" not in raw  # still blind
    view = fake_client.get(f"/v1/arena/battles/{first}").json()
    assert view["status"] == "continued" and view["continued_by"] == second
    # the first turn is no longer votable; the latest turn is
    refused = fake_client.post(f"/v1/arena/battles/{first}/vote", json={"choice": "A"})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "battle_continued"
    record_1 = fake_client.app.state.votes.get_battle(first)
    record_2 = fake_client.app.state.votes.get_battle(second)
    for side in "AB":
        assert record_2.sides[side].contestant == record_1.sides[side].contestant
        assert record_2.sides[side].history == [{"role": "user", "content": "Describe a condo"},
                                                {"role": "assistant", "content": record_1.sides[side].response}]
    assert record_2.turn == 2 and record_2.parent_id == first and record_2.sampling == record_1.sampling
    reveal = fake_client.post(f"/v1/arena/battles/{second}/vote", json={"choice": "B", "judge": "j1"}).json()
    assert reveal["turn"] == 2
    assert {s: reveal["contestants"][s]["model"] for s in "AB"} == {s: record_1.sides[s].contestant for s in "AB"}
    # after the reveal, no more turns
    again = fake_client.post("/v1/arena/battles", json={"prompt": "more", "continue_from": second})
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_voted"


def test_follow_up_refuses_sampling_and_unknown_parents(fake_client):
    first, _, _ = battle(fake_client)
    bad = fake_client.post("/v1/arena/battles", json={"prompt": "x", "continue_from": first, "temperature": 1.0})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "continue_from"
    missing = fake_client.post("/v1/arena/battles",
                               json={"prompt": "x", "continue_from": "00000000-0000-4000-8000-000000000000"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "battle_not_found"


def test_multi_turn_export_shares_identical_earlier_turns_and_drops_diverged(fake_client, admin_token):
    # SAME makes both sides answer turn 1 identically, so turn 2's rows share their history.
    same, _, _ = battle(fake_client, prompt="SAME first turn")
    turn2, _, _ = battle(fake_client, prompt="Follow-up question", continue_from=same)
    fake_client.post(f"/v1/arena/battles/{turn2}/vote", json={"choice": "A"})
    differ, _, _ = battle(fake_client, prompt="Different first turn")
    turn2b, _, _ = battle(fake_client, prompt="Follow-up question", continue_from=differ)
    fake_client.post(f"/v1/arena/battles/{turn2b}/vote", json={"choice": "A"})
    exported = fake_client.get("/v1/arena/export", headers=ADMIN).json()
    assert exported["summary"]["dropped"]["diverged_history"] == 1 and exported["summary"]["rows"] == 1
    row = exported["rows"][0]
    assert [m["role"] for m in row["prompt"]] == ["user", "assistant", "user"]
    assert row["prompt"][1]["content"] == "The same answer." and row["provenance"]["turn"] == 2


def test_reasons_comment_and_edited_winner_reach_the_export(fake_client, admin_token):
    battle_id, _, _ = battle(fake_client, prompt="Describe a loft", judge="me")
    early = fake_client.post(f"/v1/arena/battles/{battle_id}/edit", json={"text": "Better.", "judge": "me"})
    assert early.status_code == 409 and "Vote first" in early.json()["error"]["message"]
    reveal = fake_client.post(f"/v1/arena/battles/{battle_id}/vote",
                              json={"choice": "B", "judge": "me", "reasons": ["grounded", "too_long"],
                                    "comment": "B kept to the facts"}).json()
    assert reveal["reasons"] == ["grounded", "too_long"] and reveal["comment"] == "B kept to the facts"
    other = fake_client.post(f"/v1/arena/battles/{battle_id}/edit", json={"text": "Mine.", "judge": "someone"})
    assert other.status_code == 409 and other.json()["error"]["code"] == "not_editable"
    edited = fake_client.post(f"/v1/arena/battles/{battle_id}/edit",
                              json={"text": "A bright loft, 700 sq ft.", "judge": "me"})
    assert edited.status_code == 200 and edited.json()["edited"] is True
    row = fake_client.get("/v1/arena/export", headers=ADMIN).json()["rows"][0]
    loser = fake_client.app.state.votes.get_battle(battle_id).sides["A"].response
    assert row["chosen"][0]["content"] == "A bright loft, 700 sq ft." and row["rejected"][0]["content"] == loser
    assert row["provenance"]["edited"] is True and row["provenance"]["reasons"] == ["grounded", "too_long"]
    assert row["provenance"]["comments"] == ["B kept to the facts"]
    bad_tag = fake_client.post(f"/v1/arena/battles/{battle_id}/vote", json={"choice": "A", "reasons": ["nice"]})
    assert bad_tag.status_code == 422


def test_both_bad_votes_export_as_kto_rows(fake_client, admin_token):
    bad, _, _ = battle(fake_client, prompt="Describe a house")
    fake_client.post(f"/v1/arena/battles/{bad}/vote", json={"choice": "both_bad", "reasons": ["hype"]})
    good, _, _ = battle(fake_client, prompt="Describe a condo")
    fake_client.post(f"/v1/arena/battles/{good}/vote", json={"choice": "A"})
    kto = fake_client.get("/v1/arena/export?format=kto", headers=ADMIN).json()
    store = fake_client.app.state.votes
    rows = {(r["provenance"]["battle_id"], r["provenance"]["side"]): r for r in kto["rows"]}
    assert kto["summary"]["rows"] == 4 and kto["summary"]["desirable"] == 1
    for side in "AB":
        assert rows[(bad, side)]["label"] is False
        assert rows[(bad, side)]["completion"][0]["content"] == store.get_battle(bad).sides[side].response
    assert rows[(good, "A")]["label"] is True and rows[(good, "B")]["label"] is False
    assert set(rows[(bad, "A")]) == {"prompt", "completion", "label", "provenance"}
    dpo = fake_client.get("/v1/arena/export", headers=ADMIN).json()
    assert dpo["summary"]["dropped"]["both_bad"] == 1


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "admin-secret"}])
def test_export_needs_the_admin_token(fake_client, admin_token, headers):
    response = fake_client.get("/v1/arena/export", headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and "admin token" in error["message"]
    assert "rows" not in response.json()
    assert fake_client.get("/v1/models").status_code == 200  # the server keeps serving


def test_export_without_a_configured_token_says_how_to_open_it(fake_client, monkeypatch):
    monkeypatch.delenv("PALATE_ADMIN_TOKEN", raising=False)
    response = fake_client.get("/v1/arena/export")
    assert response.status_code == 401 and "export_access: open" in response.json()["error"]["message"]


def test_export_access_open_and_off(fake_client, monkeypatch):
    monkeypatch.delenv("PALATE_ADMIN_TOKEN", raising=False)
    service = fake_client.app.state.arena
    monkeypatch.setattr(service, "config", service.config.model_copy(update={"export_access": "open"}))
    assert fake_client.get("/v1/arena/export").json()["object"] == "arena.export"
    monkeypatch.setattr(service, "config", service.config.model_copy(update={"export_access": "off"}))
    assert fake_client.get("/v1/arena/export", headers=ADMIN).status_code == 403


def test_old_export_via_api_key_is_refused_naming_its_replacement(tmp_path):
    from core.arena_config import load_arena_config
    from core.config import ConfigError

    path = tmp_path / "arena.yaml"
    path.write_text("export_via_api: true\n")
    with pytest.raises(ConfigError, match="export_via_api was replaced by export_access"):
        load_arena_config(path)


def test_compare_three_models_one_seed_one_batch(fake_client):
    body = {"models": ["base", "sft", "dpo"], "prompt": "Describe a condo", "seed": 42, "max_tokens": 32,
            "temperature": 0.5}
    before = len(fake_client.engine.requests)
    response = fake_client.post("/v1/arena/compare", json=body)
    assert response.status_code == 200
    events = sse_events(response)
    assert events[0]["type"] == "compare" and events[0]["served"] == ["base", "sft@1", "dpo@1"]
    assert events[-1] == {"type": "done"}
    texts = {i: "".join(e["text"] for e in events if e["type"] == "delta" and e["index"] == i) for i in range(3)}
    assert all(texts.values()) and len(set(texts.values())) == 3
    requests = fake_client.engine.requests[before:]
    assert sorted(ref or "base" for _, ref, _ in requests) == ["base", "dpo@1", "sft@1"]
    assert {(s.seed, s.temperature, s.max_tokens) for _, _, s in requests} == {(42, 0.5, 32)}
    assert fake_client.app.state.votes.count_battles() == 0  # nothing stored


@pytest.mark.parametrize("body, status, param", [
    ({"models": ["base", "nope"], "prompt": "hi"}, 404, "model"),
    ({"models": ["base", "sft", "dpo", "base"], "prompt": "hi"}, 400, "models"),
    ({"models": ["base", "base"], "prompt": "hi"}, 400, "models"),
    ({"models": ["base", "sft"]}, 400, "messages"),
    ({"models": ["base", "sft"], "messages": [{"role": "tool", "content": "x"}]}, 400, "messages[0]"),
])
def test_compare_refuses_bad_requests_naming_the_field(fake_client, body, status, param):
    response = fake_client.post("/v1/arena/compare", json=body)
    assert response.status_code == status and response.json()["error"]["param"] == param


def test_compare_takes_a_conversation(fake_client):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "Describe a loft"}]
    response = fake_client.post("/v1/arena/compare", json={"models": ["base", "sft"], "messages": messages})
    assert response.status_code == 200 and sse_events(response)[-1]["type"] == "done"


def test_info_and_queue(fake_client):
    info = fake_client.get("/v1/arena/info").json()
    assert info["export_access"] == "admin" and "base" in info["served_models"] and "sft" in info["served_models"]
    assert info["reason_tags"] == ["grounded", "invented_facts", "hype", "repetitive", "too_long", "too_short"]
    queue = fake_client.get("/v1/arena/queue").json()
    assert queue["engine_requests"] == 0 and queue["engine_capacity"] >= 1


def test_reason_tags_of_the_protocol_match_the_config():
    import typing

    from core.arena_config import REASON_TAGS
    from server.arena.protocol import ReasonTag

    assert typing.get_args(ReasonTag) == REASON_TAGS
