"""A real server process (the real app and store, fake engine): concurrent votes, repeated votes, SIGKILL.

Parametrised over the embedded SQLite file and a real PostgreSQL server.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from core.votes import VoteStore
from tests.arena.fake_server import FakeServerProcess


async def run_battle(client: httpx.AsyncClient, prompt: str) -> str:
    battle_id = None
    async with client.stream("POST", "/v1/arena/battles", json={"prompt": prompt}) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                battle_id = event.get("battle_id", battle_id)
                last = event["type"]
    assert last == "done"
    return battle_id


async def vote(client: httpx.AsyncClient, battle_id: str, choice: str) -> int:
    return (await client.post(f"/v1/arena/battles/{battle_id}/vote", json={"choice": choice})).status_code


@pytest.fixture
def server(tmp_path, database_url):
    proc = FakeServerProcess(tmp_path, database_url).start()
    yield proc
    proc.stop()


def test_200_votes_from_20_concurrent_clients_and_repeats(server, database_url):
    async def client_session(n: int) -> list[tuple[str, int]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            results = []
            for i in range(10):
                battle_id = await run_battle(client, f"client {n} prompt {i}")
                results.append((battle_id, await vote(client, battle_id, "ABAB"[i % 4] if i % 5 else "tie")))
            return results

    async def scenario():
        sessions = await asyncio.gather(*(client_session(n) for n in range(20)))
        results = [r for s in sessions for r in s]
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            # The same vote sent again (a retry), and ten clients racing on one battle.
            repeats = await asyncio.gather(*(vote(client, b, "A") for b, _ in results[:20]))
            fresh = await run_battle(client, "raced")
            raced = await asyncio.gather(*(vote(client, fresh, "AB"[i % 2]) for i in range(10)))
        return results, repeats, raced

    results, repeats, raced = asyncio.run(scenario())
    assert len(results) == 200 and all(status == 200 for _, status in results)
    assert set(repeats) == {409}
    assert sorted(raced) == [200] + [409] * 9
    store = VoteStore(database_url)
    assert store.count_votes() == 201
    assert len({b.id for b in store.voted_battles()}) == 201
    store.close()


def test_acknowledged_votes_survive_sigkill(tmp_path, server, database_url):
    async def scenario():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            battles = await asyncio.gather(*(run_battle(client, f"p{i}") for i in range(60)))
        acknowledged: dict[str, str] = {}

        async def voter(ids: list[str]):
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                for i, battle_id in enumerate(ids):
                    choice = "AB"[i % 2]
                    try:
                        if await vote(client, battle_id, choice) == 200:
                            acknowledged[battle_id] = choice
                    except httpx.HTTPError:
                        return  # the server died under us: this vote was never acknowledged
                    if len(acknowledged) >= 40:
                        server.kill()  # SIGKILL right after acknowledging, other votes still in flight
                        return

        await asyncio.gather(*(voter(battles[k::6]) for k in range(6)))
        return acknowledged

    acknowledged = asyncio.run(scenario())
    assert server.process.returncode == -9 and len(acknowledged) >= 40
    restarted = FakeServerProcess(tmp_path, database_url).start()
    try:
        for battle_id, choice in acknowledged.items():
            view = httpx.get(f"{restarted.url}/v1/arena/battles/{battle_id}", timeout=10).json()
            assert view["status"] == "voted" and view["reveal"]["winner"] == choice
    finally:
        restarted.stop()
