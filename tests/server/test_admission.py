"""Admission control (server/admission.py): bounded queue, round-robin between clients, per-client caps, battle rate.

The queue itself is tested with a fake clock; the HTTP side against the real app around a fake engine, with the
real SQLite vote store. No test here asserts a duration.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from core.config import AdmissionConfig, ConfigError, load_config
from server.admission import Admission, Rejected
from server.errors import APIError
from tests.arena.fakes import FakeEngine, make_app, make_config


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(coro):
    return asyncio.run(coro)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_freed_slots_go_round_robin_not_first_come():
    admission = Admission(AdmissionConfig(engine_slots=2, per_client_slots=2, per_client_queue=8))

    async def body():
        greedy = [await admission.acquire("greedy"), await admission.acquire("greedy")]
        queued = [asyncio.create_task(admission.acquire("greedy")) for _ in range(3)]
        await settle()
        neighbour = asyncio.create_task(admission.acquire("neighbour"))  # arrives after three greedy waiters
        await settle()
        assert admission.waiting("greedy") == 3 and admission.waiting("neighbour") == 1
        greedy[0].release()
        await settle()
        served_first = neighbour.done() and not any(t.done() for t in queued)
        greedy[1].release()
        await settle()
        second = sum(t.done() for t in queued)
        for task in [neighbour, *queued]:
            task.cancel()
        await asyncio.gather(neighbour, *queued, return_exceptions=True)
        return served_first, second

    served_first, second = run(body())
    assert served_first, "the neighbour's request must get the first freed slot, ahead of earlier greedy waiters"
    assert second == 1


def test_a_client_at_its_cap_waits_while_others_use_free_slots():
    admission = Admission(AdmissionConfig(engine_slots=4, per_client_slots=2))

    async def body():
        held = [await admission.acquire("a"), await admission.acquire("a")]
        third = asyncio.create_task(admission.acquire("a"))
        await settle()
        other = await asyncio.wait_for(admission.acquire("b"), 1)
        state = (third.done(), admission.held_by("a"), admission.held_by("b"), admission.active)
        held[0].release()
        await asyncio.wait_for(third, 1)
        return state, admission.held_by("a")

    (third_done, a, b, active), a_after = run(body())
    assert not third_done and (a, b, active) == (2, 1, 3)
    assert a_after == 2


def test_a_waiting_battle_is_not_overtaken_by_single_slot_requests():
    admission = Admission(AdmissionConfig(engine_slots=4, per_client_slots=2))

    async def body():
        x = [await admission.acquire("x"), await admission.acquire("x")]
        y = [await admission.acquire("y", cost=2)]
        battle = asyncio.create_task(admission.acquire("z", cost=2, battle=True, endpoint="battle"))
        await settle()
        chat = asyncio.create_task(admission.acquire("w"))
        await settle()
        x[0].release()  # one slot free: the battle's turn, it needs two; the chat must not slip in
        await settle()
        after_one = (battle.done(), chat.done())
        x[1].release()
        await settle()
        after_two = (battle.done(), chat.done())
        chat.cancel()
        await asyncio.gather(chat, return_exceptions=True)
        return after_one, after_two

    after_one, after_two = run(body())
    assert after_one == (False, False)
    assert after_two == (True, False)


def test_bounds_answer_at_once_with_a_reason_and_retry_after():
    admission = Admission(AdmissionConfig(engine_slots=2, per_client_slots=2, per_client_queue=1, queue_size=2))

    async def body():
        await admission.acquire("a", cost=2)
        waiting = [asyncio.create_task(admission.acquire("a"))]
        await settle()
        with pytest.raises(Rejected) as own:
            await admission.acquire("a")
        waiting.append(asyncio.create_task(admission.acquire("b")))
        await settle()
        with pytest.raises(Rejected) as full:
            await admission.acquire("c")
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        return own.value, full.value, admission.waiting()

    own, full, left = run(body())
    assert own.reason == "client_queue_full" and own.status == 429 and own.retry_after_s >= 1
    assert "per_client_queue" in own.message
    assert full.reason == "queue_full" and "queue_size" in full.message
    assert left == 0, "cancelled waiters leave the queue"
    response = own.response()
    assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1


def test_a_request_that_waits_too_long_gets_a_429_not_a_hang():
    admission = Admission(AdmissionConfig(engine_slots=2, per_client_slots=2, max_wait_s=0.05))

    async def body():
        await admission.acquire("a", cost=2)
        with pytest.raises(Rejected) as timeout:
            await admission.acquire("b")
        return timeout.value, admission.waiting()

    rejection, left = run(body())
    assert rejection.reason == "queue_timeout" and rejection.status == 429
    assert left == 0


def test_battles_per_minute_slides_and_says_when_to_retry():
    clock = Clock()
    admission = Admission(AdmissionConfig(battles_per_minute=2), clock=clock)

    async def body():
        first = await admission.acquire("j", cost=2, battle=True)
        first.release()
        clock.now += 20
        (await admission.acquire("j", cost=2, battle=True)).release()
        with pytest.raises(Rejected) as limited:
            await admission.acquire("j", cost=2, battle=True)
        other = await admission.acquire("k", cost=2, battle=True)  # another judge is not limited by j
        other.release()
        chat = await admission.acquire("j")  # the battle rate does not limit chat
        chat.release()
        clock.now += 41  # the first battle leaves the window
        (await admission.acquire("j", cost=2, battle=True)).release()
        return limited.value

    limited = run(body())
    assert limited.reason == "rate_limited" and limited.retry_after_s == 40
    assert "battles_per_minute" in limited.message


def test_more_sequences_than_a_client_may_run_is_a_400_naming_the_limit():
    admission = Admission(AdmissionConfig(per_client_slots=2))
    with pytest.raises(APIError) as error:
        run(admission.acquire("a", cost=3))
    assert error.value.status == 400 and error.value.param == "n" and "per_client_slots" in error.value.message


def test_config_refuses_a_per_client_share_above_the_whole(tmp_path):
    path = tmp_path / "server.yaml"
    path.write_text("admission:\n  engine_slots: 2\n  per_client_slots: 4\n")
    with pytest.raises(ConfigError, match="admission"):
        load_config(path)
    path.write_text("admission:\n  per_client_slot: 4\n")
    with pytest.raises(ConfigError, match="per_client_slot"):
        load_config(path)


# ---- through HTTP, on the real app ------------------------------------------------------------------------------
def _client(app, host: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(host, 5000)), base_url="http://test",
                             timeout=60)


def test_greedy_battles_get_429s_with_retry_after_and_the_neighbour_is_served(tmp_path):
    config = make_config(tmp_path)
    config.server.admission = AdmissionConfig(engine_slots=4, per_client_slots=2, per_client_queue=2,
                                              battles_per_minute=100)
    engine = FakeEngine(delay_s=0.02)
    app = make_app(config, engine)

    async def battle(client):
        async with client.stream("POST", "/v1/arena/battles", json={"prompt": "Describe a condo", "judge": "g"}) as r:
            body = await r.aread()
            return r.status_code, r.headers.get("retry-after"), body

    async def body():
        async with app.router.lifespan_context(app):
            async with _client(app, "10.0.0.1") as greedy, _client(app, "10.0.0.2") as neighbour:
                battles = [asyncio.create_task(battle(greedy)) for _ in range(50)]
                await asyncio.sleep(0.05)
                chat = await neighbour.post("/v1/chat/completions", json={
                    "model": "base", "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]})
                results = await asyncio.gather(*battles)
                metrics = (await neighbour.get("/metrics")).text
                return chat, results, metrics, app.state.admission.active, app.state.votes.count_battles()

    chat, results, metrics, active_after, stored = run(body())
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"]
    refused = [(s, ra, b) for s, ra, b in results if s == 429]
    served = [b for s, _, b in results if s == 200]
    assert refused and served and len(refused) + len(served) == 50
    for _, retry_after, raw in refused:
        assert int(retry_after) >= 1
        assert b'"type": "rate_limit_error"' in raw or b'"type":"rate_limit_error"' in raw
    assert all(b'"type": "done"' in b for b in served), "admitted battles run to the end"
    assert stored == len(served), "a refused battle stores nothing"
    assert active_after == 0, "every slot is released when its stream ends"
    assert 'palate_admission_rejections_total{endpoint="battle",reason="client_queue_full"}' in metrics
    assert "palate_admission_queue_depth 0.0" in metrics
    assert 'palate_admission_wait_seconds_count{endpoint="chat"} 1.0' in metrics


def test_compare_takes_a_slot_per_pane_within_the_clients_share(tmp_path):
    """3 panes under a 2-slot share: all three answer, the client never holds more than 2 slots; a second browser
    session (another X-Palate-Judge from the same address) has a share of its own meanwhile."""
    import json

    config = make_config(tmp_path)
    config.server.admission = AdmissionConfig(engine_slots=4, per_client_slots=2, per_client_queue=2)
    app = make_app(config, FakeEngine(delay_s=0.02))
    body = {"models": ["base", "sft", "dpo"], "prompt": "Describe a condo", "max_tokens": 16}

    async def scenario():
        held: list[int] = []
        async with app.router.lifespan_context(app):
            admission = app.state.admission

            async def watch():
                while True:
                    held.append(max(admission._active_by_client.values(), default=0))
                    await asyncio.sleep(0.005)

            watcher = asyncio.create_task(watch())
            async with _client(app, "10.0.0.7") as client:
                first, second = await asyncio.gather(
                    client.post("/v1/arena/compare", json=body, headers={"X-Palate-Judge": "tab-1"}),
                    client.post("/v1/arena/compare", json=body, headers={"X-Palate-Judge": "tab-2"}))
            watcher.cancel()
            return first, second, held, admission.active

    first, second, held, after = run(scenario())
    for response in (first, second):
        assert response.status_code == 200, response.text
        events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
        done = [e for e in events if e["type"] == "model_done"]
        assert sorted(e["index"] for e in done) == [0, 1, 2] and all(e["finish_reason"] != "error" for e in done)
    assert max(held) == 2, "one session never holds more than its share"
    assert after == 0, "every pane's slot comes back"


def test_a_compare_from_a_client_with_no_room_left_is_a_429(tmp_path):
    config = make_config(tmp_path)
    config.server.admission = AdmissionConfig(engine_slots=4, per_client_slots=2, per_client_queue=1, max_wait_s=1)
    app = make_app(config, FakeEngine(delay_s=0.05))
    body = {"models": ["base", "sft"], "prompt": "Describe a condo", "max_tokens": 32}

    async def scenario():
        async with app.router.lifespan_context(app):
            async with _client(app, "10.0.0.8") as client:
                return await asyncio.gather(*(client.post("/v1/arena/compare", json=body) for _ in range(4)))

    responses = run(scenario())
    statuses = sorted(r.status_code for r in responses)
    assert 200 in statuses and 429 in statuses
    refused = [r for r in responses if r.status_code == 429]
    assert all(int(r.headers["retry-after"]) >= 1 and r.json()["error"]["type"] == "rate_limit_error" for r in refused)


def test_stream_slots_are_released_when_the_client_leaves_mid_stream(tmp_path):
    """Driven as raw ASGI (httpx's ASGI transport buffers whole responses): the client disconnects after the
    first chunk; the slot it held must come back."""
    import json

    engine = FakeEngine(delay_s=0.05)
    app = make_app(make_config(tmp_path), engine)
    payload = json.dumps({"model": "sft", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}).encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"",
             "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
             "client": ("10.0.0.3", 5000), "server": ("test", 80), "root_path": ""}

    async def body():
        first_chunk = asyncio.Event()
        held = []
        sent_body = False

        async def receive():
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": payload, "more_body": False}
            await first_chunk.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            if message["type"] == "http.response.body" and message.get("body") and not first_chunk.is_set():
                held.append(app.state.admission.active)
                first_chunk.set()

        async with app.router.lifespan_context(app):
            await asyncio.wait_for(app(scope, receive, send), 10)
            return held, app.state.admission.active, len(engine.requests)

    held, after, requests = run(body())
    assert held == [1] and requests == 1
    assert after == 0


def test_admission_off_in_config_means_no_queue(tmp_path):
    config = make_config(tmp_path)
    config.server.admission = AdmissionConfig(enabled=False)
    app = make_app(config, FakeEngine())
    assert app.state.admission is None
