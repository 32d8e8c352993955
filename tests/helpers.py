"""Shared test helpers: a real `palate serve` subprocess, free ports, tiny real adapters."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from core.config import PROJECT_ROOT
from core.lora import ENGINE_LORA_LAYERS

BASE_MODEL_DIR = PROJECT_ROOT / "models" / "base"


def _kill_group(pgid: int) -> None:
    """Kill whatever is left of a process group we started (start_new_session=True makes the leader's pid the
    group id): a server killed while still starting can leave engine children behind."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, log_path: Path, what: str, timeout_s: float,
                  interval_s: float = 1.0) -> None:
    """Poll `url` until it answers 200. Raise with the log's tail if `process` exits first or time runs out
    (the caller stops the process)."""
    def tail() -> str:
        return log_path.read_text(errors="replace")[-4000:] if log_path.exists() else ""

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{tail()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(interval_s)
    raise RuntimeError(f"{what} did not come up in {timeout_s}s:\n{tail()}")


def engine_pids(parent_pid: int) -> list[int]:
    """PIDs of every descendant of `parent_pid` (vLLM's EngineCore and workers among them)."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        pid, ppid = (int(x) for x in line.split())
        children.setdefault(ppid, []).append(pid)
    found, stack = [], [parent_pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    return bool(state) and not state.startswith("Z")


@dataclass
class LiveServer:
    """A running `palate serve` subprocess and what a test needs to talk to it."""

    url: str
    admin_token: str
    registry_root: Path
    database_url: str
    config_path: Path
    log_path: Path
    process: subprocess.Popen
    extra: dict = field(default_factory=dict)

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def admin_headers(self) -> dict:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                return self.process.wait(10)
            finally:
                _kill_group(self.process.pid)
        return self.process.returncode


def write_server_config(path: Path, *, port: int, registry_root: Path, database_url: str, admin_token: str,
                        **server_overrides) -> Path:
    config = {"host": "127.0.0.1", "port": port, "adapter_root": str(registry_root), "database_url": database_url,
              "admin_token": admin_token, "watch_interval_s": 1.0,
              "vllm": {"max_model_len": 1024, "max_num_seqs": 16, "kv_cache_space_gib": 1, "max_loras": 4,
                       "max_lora_rank": 32},
              # One test process is one client: a share that fits the tests' own bursts (8 streams during a hot-swap,
              # 16 seeded requests, 60+ battles), so they test what they say. Admission itself is tested with its
              # defaults in tests/server/test_admission.py and benchmarks/fairness.py.
              "admission": {"engine_slots": 16, "per_client_slots": 16, "per_client_queue": 64, "max_wait_s": 600,
                            "battles_per_minute": 1000}}
    for key, value in server_overrides.items():
        if isinstance(value, dict):
            config.setdefault(key, {}).update(value)
        else:
            config[key] = value
    path.write_text("# Used by: tests (palate serve --config this-file)\n" + yaml.safe_dump(config))
    return path


def start_server(workdir: Path, registry_root: Path, *, database_url: str | None = None, admin_token: str = "test-admin",
                 args: tuple[str, ...] = (), timeout_s: float = 480, command: str = "serve",
                 **server_overrides) -> LiveServer:
    """Start `palate serve` (or `palate demo`: `command`) with its own config file and wait until /health answers."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    database_url = database_url or f"sqlite:///{workdir / 'votes.db'}"
    config_path = write_server_config(workdir / "server.yaml", port=port, registry_root=registry_root,
                                      database_url=database_url, admin_token=admin_token, **server_overrides)
    log_path = workdir / f"server-{port}.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("PALATE_ADMIN_TOKEN", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "core.cli", command, "--config", str(config_path), *args],
        cwd=PROJECT_ROOT, stdout=open(log_path, "w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = LiveServer(f"http://127.0.0.1:{port}", admin_token, registry_root, database_url, config_path, log_path,
                        process)
    try:
        wait_until_up(f"{server.url}/health", process, log_path, "palate serve", timeout_s)
    except RuntimeError:
        server.stop(signal.SIGKILL)
        raise
    return server


@dataclass
class RawVllm:
    """vLLM's own OpenAI server as a subprocess (the baseline for benchmarks, the backend for the remote engine)."""

    url: str
    process: subprocess.Popen
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        _kill_group(self.process.pid)


def start_raw_vllm(workdir: Path, loras: dict[str, Path] | None = None, timeout_s: float = 600,
                   dtype: str = "auto") -> RawVllm:
    """Start `python -m vllm.entrypoints.openai.api_server` on the base model with LoRA enabled (runtime LoRA
    loading allowed) and the given adapters served under their names. `dtype` "auto" is what Palate's engine
    resolves it to on this machine (core.config.engine_dtype: float32 on a CPU without bf16 instructions), so the
    two compute in the same dtype; vLLM's own "auto" would take the checkpoint's bfloat16."""
    from core.config import engine_dtype

    workdir.mkdir(parents=True, exist_ok=True)
    dtype = engine_dtype(dtype, on_gpu=False)
    port = free_port()
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", PYTHONUNBUFFERED="1", VLLM_ALLOW_RUNTIME_LORA_UPDATING="True")
    log_path = workdir / f"raw-vllm-{port}.log"
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(BASE_MODEL_DIR),
               "--served-model-name", "base", "--port", str(port), "--host", "127.0.0.1", "--dtype", dtype,
               "--max-model-len", "1024", "--max-num-seqs", "16", "--enable-lora", "--max-lora-rank", "32",
               "--max-loras", "4", "--enforce-eager", "--seed", "0",
               # the same LoRA layers as Palate's own engine: without it vLLM also wraps lm_head (slower, and its
               # CPU kernel crashes on prompt log-probs)
               "--lora-target-modules", *ENGINE_LORA_LAYERS,
               # as Palate's engine on CPU: chunked prefill + a seeded request kills vLLM 0.32's CPU worker
               "--no-enable-chunked-prefill", "--max-num-batched-tokens", "2048"]
    if loras:
        command += ["--lora-modules", *(f"{name}={path}" for name, path in loras.items())]
    process = subprocess.Popen(command, stdout=open(log_path, "w"), stderr=subprocess.STDOUT, env=env,
                               start_new_session=True)
    raw = RawVllm(f"http://127.0.0.1:{port}", process, log_path)
    try:
        wait_until_up(f"{raw.url}/v1/models", process, log_path, "vLLM server", timeout_s)
    except RuntimeError:
        raw.stop()
        raise
    return raw


def train_tiny_adapters(registry_root: Path, steps: int = 2) -> dict:
    """Real sft@1 and dpo@1 on the real base model, trained for a couple of steps: enough to be distinct,
    real PEFT adapters the engine must serve, in well under a minute."""
    from training.jobs import train_dpo, train_sft

    quiet = lambda *a, **k: None  # noqa: E731
    # No warm-up and a high learning rate: two steps must move the adapter far enough that its greedy output
    # differs from the base model's, or tests that compare engines could not tell an ignored adapter apart.
    # Pairs of short rows: each step costs a third of the quick profile's 4 x 384 tokens (the live server's
    # fixture trains these before the first engine test can start).
    # fp32 whatever the CPU (the quick profile's `bf16: auto` picks bf16 on AVX-512 BF16 hosts): two steps at this
    # rate land elsewhere in bf16, and the closed loop's votes need answers that end within 96 tokens (seen in CI:
    # 1 usable vote of 60 with bf16-trained tiny adapters).
    overrides = {"max_steps": steps, "logging_steps": 1, "save_strategy": "no", "max_eval_rows": 4,
                 "warmup_steps": 0, "learning_rate": 2e-3, "per_device_train_batch_size": 2,
                 "per_device_eval_batch_size": 4, "max_length": 256, "max_train_rows": 8, "bf16": False}
    sft = train_sft(registry_root=registry_root, overrides=dict(overrides), log=quiet)
    # The written pairs, not the quick profile's sampled ones: sampling answers from sft@1 would be most of this
    # fixture's time (measured on a 2-core fp32 host: 80 of 120 s), and on-policy pairs have tests of their own.
    dpo = train_dpo(registry_root=registry_root, overrides={**overrides, "on_policy_rows": 0}, log=quiet)
    return {"sft": sft, "dpo": dpo}


def write_old_registry(root: Path, aliases: dict[str, str] | None = None) -> Path:
    """A registry as an earlier release wrote it by hand: sft@1, dpo@1 (from sft@1), dpo@2 (from dpo@1), with
    aliases sft -> sft@1 and dpo -> dpo@2, and no record files (format 1); tests add what a later format added."""
    import json

    for name, version, parent in (("sft", 1, None), ("dpo", 1, "sft@1"), ("dpo", 2, "dpo@1")):
        d = root / name / str(version)
        d.mkdir(parents=True)
        (d / "adapter_config.json").write_text(json.dumps({"r": 16, "lora_alpha": 32, "target_modules": ["q_proj"]}))
        (d / "adapter_model.safetensors").write_bytes(b"\0" * 16)
        (d / "palate.json").write_text(json.dumps({"kind": name, "name": name, "version": version, "parent": parent,
                                                   "content_sha256": "0" * 64, "created": "2026-11-22T00:00:00Z"}))
    (root / "aliases.json").write_text(json.dumps(aliases or {"sft": "sft@1", "dpo": "dpo@2"}))
    return root
