"""Faults stay contained, on the real vLLM engine and a real `palate serve`:

- a NaN adapter is refused by preflight (message naming the tensor), as is one without a content hash; `base`'s
  greedy output is the same before and after, with requests to the other adapters in between (shared live_server);
- with the engine core dead, a battle is a 503 `engine_dead` and nothing is stored (a server of its own);
- SIGKILL of `palate serve` leaves no engine process within 10 s (a server of its own).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import httpx
import pytest

from core.registry import AdapterRegistry
from core.votes import VoteStore
from tests.helpers import engine_pids, pid_alive, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.engine]

PROMPT = [{"role": "user", "content": "Describe a 2-bed condo near the park with in-unit laundry."}]


def _greedy(url: str, model: str, **extra) -> str:
    response = httpx.post(f"{url}/v1/chat/completions", timeout=300, json={
        "model": model, "messages": PROMPT, "temperature": 0, "max_tokens": 24, **extra})
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def _poisoned_copy(source: Path, target: Path) -> str:
    """Copy an adapter's PEFT files with one NaN in one tensor; return that tensor's name."""
    from safetensors.torch import load_file, save_file

    target.mkdir(parents=True)
    shutil.copy2(source / "adapter_config.json", target / "adapter_config.json")
    tensors = load_file(str(source / "adapter_model.safetensors"))
    name = sorted(k for k in tensors if "lora_B" in k)[-1]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(target / "adapter_model.safetensors"))
    return name


def test_poisoned_adapters_are_refused_and_base_output_is_unchanged(live_server, tmp_path):
    registry = AdapterRegistry(live_server.registry_root)
    sft = registry.resolve("sft")
    tensor = _poisoned_copy(sft.path, tmp_path / "nan")
    poisoned = registry.add("poison-nan", tmp_path / "nan", {"kind": "external", "base_model": sft.meta["base_model"]},
                            move_alias=False)
    # The issue's own case: NaN weights and a palate.json of {} dropped straight into the registry.
    bare = live_server.registry_root / "poison-bare" / "1"
    _poisoned_copy(sft.path, bare)
    (bare / "palate.json").write_text("{}")

    before = _greedy(live_server.url, "base")
    refusals = {}
    for ref in (poisoned.ref, "poison-bare@1"):
        response = httpx.post(f"{live_server.url}/admin/adapters", json={"ref": ref},
                              headers=live_server.admin_headers(), timeout=120)
        assert response.status_code == 400, response.text
        refusals[ref] = response.json()["error"]
    assert refusals[poisoned.ref]["code"] == "preflight_finite" and tensor in refusals[poisoned.ref]["message"]
    assert refusals["poison-bare@1"]["code"] == "preflight_content_hash"
    assert "palate adapters add" in refusals["poison-bare@1"]["message"]

    for model in ("sft", "dpo"):  # whatever the other adapters' requests do, base must not change
        _greedy(live_server.url, model, logprobs=True, top_logprobs=2)
    after = _greedy(live_server.url, "base")
    assert after == before
    health = httpx.get(f"{live_server.url}/health", timeout=30).json()
    assert health["status"] == "ok" and not any(m.startswith("poison") for m in health["models"])


def _engine_core_pid(server_pid: int) -> int:
    for pid in engine_pids(server_pid):
        try:
            if b"EngineCore" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    raise AssertionError("no EngineCore process under the server")


def test_a_dead_engine_takes_no_battles(base_model_dir, tmp_path):
    server = start_server(tmp_path, tmp_path / "empty-registry", mount_arena=False)
    try:
        os.kill(_engine_core_pid(server.process.pid), signal.SIGKILL)
        deadline = time.monotonic() + 60
        while httpx.get(f"{server.url}/health", timeout=10).status_code != 503 and time.monotonic() < deadline:
            time.sleep(0.5)
        store = VoteStore(server.database_url)
        stored = store.count_battles()
        response = httpx.post(f"{server.v1}/arena/battles", json={"prompt": "Describe a condo."}, timeout=60)
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "engine_dead"
        assert store.count_battles() == stored == 0
    finally:
        server.stop()


def test_sigkill_of_the_server_leaves_no_engine_process(base_model_dir, tmp_path):
    server = start_server(tmp_path, tmp_path / "empty-registry", mount_arena=False)
    try:
        children = engine_pids(server.process.pid)
        assert children, "vLLM runs its engine core in child processes; expected some"
        server.process.send_signal(signal.SIGKILL)  # nothing runs in the server: no shutdown hook can help
        server.process.wait(10)
        deadline = time.monotonic() + 10
        while any(pid_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        leftovers = [pid for pid in children if pid_alive(pid)]
    finally:
        server.stop()  # kills the process group: cleans up whatever a failure left behind
    assert leftovers == [], f"engine processes outlived the SIGKILLed server: {leftovers}"
