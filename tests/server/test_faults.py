"""Faults stay contained (unit level, fake engine): bad names, poisoned adapters, a dead engine, orphaned processes.

The same faults on the real engine and a real `palate serve` are in test_faults_engine.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.registry import AdapterRegistry, RegistryError, check_name
from server.engines import lifeline
from server.preflight import PreflightError, check_adapter
from tests.arena.fakes import FAKE_BASE, FakeEngine, make_app, make_config, write_tiny_adapter
from tests.helpers import pid_alive

BAD_NAMES = ["", "../x", "../../x", "a/b", "..", ".", ".hidden", "-flag", "a..b", "base", "dpo@2", "x" * 65, "a b"]


# ---- names ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BAD_NAMES)
def test_registry_refuses_bad_names_for_adapters_and_aliases(tmp_path, name):
    registry = AdapterRegistry(tmp_path / "adapters")
    source = write_tiny_adapter(tmp_path / "src")
    with pytest.raises(RegistryError, match="letters, digits"):
        registry.add(name, source, {})
    registry.add("sft", source, {})
    with pytest.raises(RegistryError, match="cannot be an alias"):
        registry.set_alias(name, "sft@1")
    assert set(registry.aliases()) == {"sft"}
    assert not any(p.name not in {"sft", "aliases.json"} for p in registry.root.iterdir())


@pytest.mark.parametrize("name", ["dpo", "sft-v2", "listing_1.5", "DPO", "7b"])
def test_registry_accepts_the_documented_pattern(name):
    assert check_name(name) == name


def test_aliases_written_before_names_were_checked_are_not_served(tmp_path, caplog):
    registry = AdapterRegistry(tmp_path / "adapters")
    registry.add("sft", write_tiny_adapter(tmp_path / "src"), {})
    (registry.root / "aliases.json").write_text(json.dumps({"sft": "sft@1", "": "sft@1", "../../x": "sft@1"}))
    assert registry.aliases() == {"sft": "sft@1"}
    assert "'../../x'" in caplog.text and "''" in caplog.text


@pytest.fixture
def admin_client(tmp_path, monkeypatch):
    monkeypatch.setenv("PALATE_ADMIN_TOKEN", "secret")
    engine = FakeEngine()
    app = make_app(make_config(tmp_path), engine)
    with TestClient(app) as client:
        client.engine = engine
        client.headers.update({"Authorization": "Bearer secret"})
        yield client


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".."])
def test_admin_api_answers_400_for_bad_alias_names(admin_client, name):
    for path, body in [("/admin/aliases", {"alias": name, "target": "sft@1"}),
                       ("/admin/adapters", {"ref": "sft@1", "alias": name})]:
        response = admin_client.post(path, json=body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == "alias" and error["code"] == "invalid_name" and "letters, digits" in error["message"]
    health = admin_client.get("/health").json()
    assert name not in health["models"]
    assert set(json.loads((admin_client.app.state.models.registry.root / "aliases.json").read_text())) == {"sft",
                                                                                                          "dpo"}


def _real_shaped_adapter(directory, model_dir):
    """A valid rank-2 q_proj LoRA for the real base model (passes `palate adapters add`'s checks)."""
    from safetensors.numpy import save_file

    config = json.loads((model_dir / "config.json").read_text())
    hidden = config["hidden_size"]
    directory.mkdir(parents=True)
    tensors = {}
    for layer in range(config["num_hidden_layers"]):
        prefix = f"base_model.model.model.layers.{layer}.self_attn.q_proj"
        tensors[f"{prefix}.lora_A.weight"] = np.zeros((2, hidden), np.float32)
        tensors[f"{prefix}.lora_B.weight"] = np.zeros((hidden, 2), np.float32)
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    (directory / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"], "task_type": "CAUSAL_LM"}))
    return directory


def test_cli_refuses_a_bad_adapter_name(base_model_dir, tmp_path, capsys):
    from core.cli import main

    source = _real_shaped_adapter(tmp_path / "src", base_model_dir)
    registry = tmp_path / "r"
    code = main(["adapters", "add", str(source), "--name", "../x", "--registry", str(registry)])
    assert code == 2
    assert "'../x' cannot be an adapter name" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and AdapterRegistry(registry).names() == []
    assert main(["adapters", "add", str(source), "--name", "ext-1.0", "--registry", str(registry)]) == 0
    assert AdapterRegistry(registry).names() == ["ext-1.0"]


# ---- preflight --------------------------------------------------------------------------------------------------
def _poison(directory, value: float, tensor: str = "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"):
    from safetensors.numpy import load_file, save_file

    path = directory / "adapter_model.safetensors"
    tensors = load_file(str(path))
    tensors[tensor] = tensors[tensor].copy()
    tensors[tensor][0, 0] = value
    save_file(tensors, str(path))
    return tensor


@pytest.mark.parametrize("value, words", [(np.nan, "1 NaN"), (np.inf, "1 infinite"), (1e30, "magnitude 1e+30")])
def test_preflight_refuses_non_finite_weights_naming_the_tensor(tmp_path, value, words):
    registry = AdapterRegistry(tmp_path / "adapters")
    source = write_tiny_adapter(tmp_path / "src")
    tensor = _poison(source, value)
    adapter = registry.add("bad", source, {"base_model": {"weights_sha256": FAKE_BASE.weights_sha256}})
    with pytest.raises(PreflightError) as error:
        check_adapter(adapter.path, FAKE_BASE, 32)
    assert error.value.check == "finite" and tensor in str(error.value) and words in str(error.value)


def test_preflight_refuses_a_lora_scaling_that_overflows_lora_b(tmp_path):
    """Finite weights, but lora_alpha / r (which vLLM multiplies into lora_B) takes them past float16's range."""
    import json

    registry = AdapterRegistry(tmp_path / "adapters")
    source = write_tiny_adapter(tmp_path / "src")
    config = json.loads((source / "adapter_config.json").read_text())
    (source / "adapter_config.json").write_text(json.dumps({**config, "lora_alpha": 1e9}))
    adapter = registry.add("loud", source, {"base_model": {"weights_sha256": FAKE_BASE.weights_sha256}})
    with pytest.raises(PreflightError) as error:
        check_adapter(adapter.path, FAKE_BASE, 32)
    assert error.value.check == "finite" and "lora_B" in str(error.value) and "lora_alpha" in str(error.value)


def test_lora_scale_follows_peft():
    from server.preflight import lora_scale

    assert lora_scale({"r": 16, "lora_alpha": 32}) == 2.0
    assert lora_scale({"r": 16, "lora_alpha": 32, "use_rslora": True}) == 8.0
    assert lora_scale({"r": 16, "lora_alpha": 32, "rank_pattern": {"q_proj": 4}}) == 8.0
    assert lora_scale({"r": 16, "lora_alpha": 32, "alpha_pattern": {"v_proj": 64}}) == 4.0


def test_preflight_refuses_an_adapter_without_a_content_hash(tmp_path):
    directory = write_tiny_adapter(tmp_path / "adapters" / "bare" / "1")
    (directory / "palate.json").write_text("{}")
    with pytest.raises(PreflightError) as error:
        check_adapter(directory, FAKE_BASE, 32)
    assert error.value.check == "content_hash" and "palate adapters add" in str(error.value)


def test_a_poisoned_adapter_never_reaches_the_engine_and_the_server_keeps_serving(admin_client, tmp_path):
    registry = admin_client.app.state.models.registry
    source = write_tiny_adapter(tmp_path / "nan-src", seed=5)
    tensor = _poison(source, np.nan)
    registry.add("poison", source, {"base_model": {"weights_sha256": FAKE_BASE.weights_sha256}}, move_alias=False)
    before = admin_client.post("/v1/chat/completions", json={
        "model": "base", "temperature": 0, "messages": [{"role": "user", "content": "Describe a condo"}]}).json()
    response = admin_client.post("/admin/adapters", json={"ref": "poison@1"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "preflight_finite" and tensor in error["message"]
    assert all(h.ref != "poison@1" for h in admin_client.engine.loaded.values())
    after = admin_client.post("/v1/chat/completions", json={
        "model": "base", "temperature": 0, "messages": [{"role": "user", "content": "Describe a condo"}]}).json()
    assert after["choices"][0]["message"]["content"] == before["choices"][0]["message"]["content"]


# ---- a dead engine takes no battles -----------------------------------------------------------------------------
def test_a_dead_engine_answers_battles_503_and_stores_nothing(tmp_path):
    engine = FakeEngine()
    app = make_app(make_config(tmp_path), engine)
    with TestClient(app) as client:
        assert client.post("/v1/arena/battles", json={"prompt": "Describe a condo"}).status_code == 200
        stored = app.state.votes.count_battles()
        engine.died = "the vLLM engine core died (EngineDeadError); restart `palate serve`"
        response = client.post("/v1/arena/battles", json={"prompt": "Describe a condo"})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "engine_dead" and "restart" in response.json()["error"]["message"]
        assert app.state.votes.count_battles() == stored == 1
        assert app.state.admission.active == 0


# ---- engine processes die with their owner ----------------------------------------------------------------------
_CHILD = textwrap.dedent("""
    import sys, time
    from server.engines import lifeline
    lifeline.register()
    print("armed", flush=True)
    time.sleep(120)
""")
_OWNER = textwrap.dedent("""
    import os, subprocess, sys, time
    from server.engines import lifeline
    lifeline.claim_engine(sys.argv[2])
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "armed"
    print(child.pid, flush=True)
    time.sleep(120)
""")


def test_an_engine_process_dies_when_its_owner_is_sigkilled(tmp_path):
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path))
    owner = subprocess.Popen([sys.executable, "-c", _OWNER, _CHILD, "registry-x"], stdout=subprocess.PIPE, text=True,
                             env=env, start_new_session=True)
    try:
        child = int(owner.stdout.readline())
        assert pid_alive(child)
        record = json.loads((tmp_path / f"palate-engines-{os.getuid()}" / f"{child}.json").read_text())
        assert record["owner"] == owner.pid and record["parent"] == owner.pid and record["tag"] == "registry-x"
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        deadline = time.monotonic() + 10
        while pid_alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pid_alive(child), "the child outlived its SIGKILLed owner"
    finally:
        try:
            os.killpg(owner.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_register_does_nothing_outside_a_palate_owner(monkeypatch):
    monkeypatch.delenv(lifeline.OWNER_ENV, raising=False)
    lifeline.register()  # vLLM's own server, another program: no watchdog, no record
    assert not getattr(lifeline.register, "_armed", False)


def test_start_up_names_stale_engine_processes_of_the_same_registry(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    # An orphan: a process whose parent (a shell that exits at once) is gone, as an engine core whose server was
    # killed while the watchdog could not act.
    shell = subprocess.run(["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $$ $!"], capture_output=True, text=True)
    parent, orphan = (int(x) for x in shell.stdout.split())
    try:
        directory = lifeline.runtime_dir()
        directory.mkdir(parents=True)
        start = lifeline._proc_stat(orphan)[2]
        for tag in ("/srv/adapters", "/elsewhere"):
            (directory / f"{orphan}-{tag.strip('/').replace('/', '-')}.json").write_text(json.dumps(
                {"pid": orphan, "parent": parent, "owner": parent, "tag": tag, "start": start}))
        (directory / "1234567.json").write_text(json.dumps({"pid": 4_000_000, "parent": 1, "tag": "/srv/adapters",
                                                            "start": 1}))
        stale = lifeline.warn_if_stale("/srv/adapters")
        assert [s.pid for s in stale] == [orphan]
        assert f"pids {orphan}" in caplog.text and "/srv/adapters" in caplog.text
        assert not (directory / "1234567.json").exists(), "records of processes that are gone are cleaned up"
        assert lifeline.stale_engines("/other") == []
    finally:
        os.kill(orphan, signal.SIGKILL)


# ---- non-finite logits at run time ------------------------------------------------------------------------------
class _NanForSft(FakeEngine):
    """Generation on sft@1 hits non-finite logits (what VllmEngine raises when a sampled logprob is NaN)."""

    async def generate(self, prompt, sampling, adapter, request_id):  # noqa: ANN001
        from server.engines.base import non_finite

        if adapter is not None and adapter.ref == "sft@1":
            raise non_finite(adapter.ref, "output token 1")
        async for delta in super().generate(prompt, sampling, adapter, request_id):
            yield delta


def test_non_finite_logits_are_a_500_naming_the_model_and_the_neighbour_is_served(tmp_path):
    app = make_app(make_config(tmp_path), _NanForSft())
    body = {"messages": [{"role": "user", "content": "Describe a condo"}], "max_tokens": 8}
    with TestClient(app) as client:
        failed = client.post("/v1/chat/completions", json={**body, "model": "sft"})
        streamed = client.post("/v1/chat/completions", json={**body, "model": "sft", "stream": True})
        served = client.post("/v1/chat/completions", json={**body, "model": "base"})
        metrics = client.get("/metrics").text
    assert failed.status_code == 500
    error = failed.json()["error"]
    assert error["code"] == "non_finite_output" and "sft@1" in error["message"] and "non-finite" in error["message"]
    assert streamed.status_code == 500 and streamed.json()["error"]["code"] == "non_finite_output"
    assert served.status_code == 200 and served.json()["choices"][0]["message"]["content"]
    assert 'status="non_finite"' in metrics
