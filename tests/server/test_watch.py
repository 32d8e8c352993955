"""Watch mode: versions promoted in the registry appear without a restart; an alias moves only to a version that
loaded cleanly, and only through a promotion record (an alias edited by hand is not followed)."""

from __future__ import annotations

import time

import httpx
import pytest

from core.registry import AdapterRegistry
from tests.server.test_e2e_openai import _register_copy

pytestmark = [pytest.mark.e2e, pytest.mark.engine]


def _wait_for(predicate, timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def _aliases(server) -> dict:
    return {m["id"]: m.get("root") for m in httpx.get(f"{server.v1}/models").json()["data"]}


def test_new_versions_are_hot_loaded_and_bad_ones_never_take_the_alias(live_server, tmp_path):
    registry = AdapterRegistry(live_server.registry_root)
    forced = {"reason": "watch test"}
    registry.promote("watch", _register_copy(registry, "sft@1", "watch", tmp=tmp_path / "1").ref, forced, forced=True)
    assert _wait_for(lambda: _aliases(live_server).get("watch") == "watch@1"), live_server.log_tail()

    registry.promote("watch", _register_copy(registry, "dpo@1", "watch", tmp=tmp_path / "2").ref, forced, forced=True)
    assert _wait_for(lambda: _aliases(live_server).get("watch") == "watch@2"), live_server.log_tail()
    assert _wait_for(lambda: "watch@1" not in _aliases(live_server))  # drained and unloaded

    # aliases.json edited by hand, without a promotion record: not followed
    unpromoted = _register_copy(registry, "sft@1", "watch", tmp=tmp_path / "4")
    registry.set_alias("watch", unpromoted.ref)
    time.sleep(5)  # several watch intervals
    assert _aliases(live_server).get("watch") == "watch@2"
    assert f"watch -> {unpromoted.ref} has no promotion record" in live_server.log_tail(20000)

    bad = _register_copy(registry, "sft@1", "watch", tmp=tmp_path / "3")
    (bad.path / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    registry.promote("watch", bad.ref, forced, forced=True)
    time.sleep(5)  # several watch intervals
    assert _aliases(live_server).get("watch") == "watch@2"
    assert f"{bad.ref} not loaded, alias stays at watch@2" in live_server.log_tail(20000)
    reply = httpx.post(f"{live_server.v1}/chat/completions", timeout=60, json={
        "model": "watch", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}).json()
    assert reply["model"] == "watch@2"
