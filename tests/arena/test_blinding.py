"""Blinding, checked on every byte a client receives (status line, headers, body) before the vote is stored.

Runs against a real server process: the fake-engine app (fast) and, marked e2e, the real `palate serve`.
A positive control shows the same check does find the identities in the vote response.
"""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest

from core.registry import AdapterRegistry


def raw_exchange(base_url: str, method: str, path: str, body: dict | None = None, timeout_s: float = 300) -> bytes:
    """One HTTP/1.1 request over a plain socket; returns every byte the server sent until it closed."""
    url = urlparse(base_url)
    payload = json.dumps(body).encode() if body is not None else b""
    request = (f"{method} {path} HTTP/1.1\r\nHost: {url.netloc}\r\nConnection: close\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode() + payload
    chunks = []
    with socket.create_connection((url.hostname, url.port), timeout=timeout_s) as sock:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def identity_strings(registry_root: Path) -> list[str]:
    """Everything that would identify an adapter: names, name@version, content hashes (and prefixes), paths."""
    registry = AdapterRegistry(registry_root)
    found = set()
    for adapter in registry.all_versions():
        found.update({adapter.name, adapter.ref, str(adapter.path), str(adapter.path.resolve()),
                      f"{adapter.name}/{adapter.version}"})
        digest = adapter.meta.get("content_sha256")
        if digest:
            found.update({digest, digest[:8], digest[:12]})
    found.update(registry.aliases())
    return sorted(found, key=len, reverse=True)


def leaks(raw: bytes, strings: list[str]) -> list[str]:
    text = raw.decode("utf-8", "replace").lower()
    return [s for s in strings if s.lower() in text]


def check_blinding(base_url: str, registry_root: Path, prompt: str) -> None:
    strings = identity_strings(registry_root)
    assert strings, "the registry has no adapters to hide"
    stream = raw_exchange(base_url, "POST", "/v1/arena/battles", {"prompt": prompt, "max_tokens": 48, "seed": 3})
    head, _, body = stream.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    events = [json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: ")]
    battle_id = events[0]["battle_id"]
    assert events[-1]["type"] == "done"
    # Event fields are only these: nothing else can carry an identity.
    allowed = {"type", "battle_id", "sides", "side", "text", "finish_reason", "completion_tokens", "message",
               "vote_url"}
    assert {k for e in events for k in e} <= allowed
    before_vote = [
        stream,
        raw_exchange(base_url, "GET", f"/v1/arena/battles/{battle_id}"),
        raw_exchange(base_url, "POST", f"/v1/arena/battles/{battle_id}/vote", {"choice": "maybe"}),  # 422
        raw_exchange(base_url, "POST", f"/v1/arena/battles/{uuid.uuid4()}/vote", {"choice": "A"}),  # 404
    ]
    for raw in before_vote:
        assert leaks(raw, strings) == [], raw[:2000]
    reveal = raw_exchange(base_url, "POST", f"/v1/arena/battles/{battle_id}/vote", {"choice": "A"})
    assert reveal.startswith(b"HTTP/1.1 200")
    revealed = json.loads(reveal.partition(b"\r\n\r\n")[2])
    names = {revealed["contestants"][s]["model"] for s in "AB"} - {"base"}
    assert names and all(n in leaks(reveal, strings) for n in names)  # positive control: the check would see it
    after = raw_exchange(base_url, "GET", f"/v1/arena/battles/{battle_id}")
    assert json.loads(after.partition(b"\r\n\r\n")[2])["reveal"]["winner"] == "A"


def test_blinding_bytes_fake_engine(tmp_path):
    from tests.arena.fake_server import FakeServerProcess

    server = FakeServerProcess(tmp_path).start()
    try:
        # Several battles so that every pair (and so every adapter) shows up before a vote; one failing side too.
        for prompt in ("Describe a condo", "Describe a house", "Describe a loft", "FAIL now"):
            check_blinding(server.url, tmp_path / "adapters", prompt)
    finally:
        server.stop()


def test_blinding_bytes_fake_engine_active_matchmaking(tmp_path, monkeypatch):
    """The same byte check with `matchmaking: active`: after the first three battles (one per pair) the pair comes
    from the Bradley-Terry scores of the stored votes, and still nothing before the vote names a contestant."""
    from tests.arena.fake_server import FakeServerProcess

    config = tmp_path / "arena.yaml"
    config.write_text((Path(__file__).resolve().parents[2] / "configs" / "arena.yaml").read_text()
                      .replace("matchmaking: least_played", "matchmaking: active"))
    assert "matchmaking: active" in config.read_text()
    monkeypatch.setenv("PALATE_ARENA_CONFIG", str(config))
    server = FakeServerProcess(tmp_path).start()
    try:
        for prompt in ("Describe a condo", "Describe a house", "Describe a loft", "Describe a barn", "FAIL now"):
            check_blinding(server.url, tmp_path / "adapters", prompt)
    finally:
        server.stop()


@pytest.mark.e2e
def test_blinding_bytes_live_server(live_server):
    for prompt in ("Write a listing for a 2-bed condo near the Green Line.", "Describe a townhouse in Cedar Park."):
        check_blinding(live_server.url, Path(live_server.registry_root), prompt)
