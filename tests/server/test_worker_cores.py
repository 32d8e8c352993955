"""The scoring engine's worker binding (`server.engines.vllm_engine._worker_cores`): set only while the engine
processes are spawned, every core of this process's affinity, never over a value the user exported."""

from __future__ import annotations

import os

import pytest

from server.engines.vllm_engine import _worker_cores

KEYS = ("VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)


def test_every_core_while_spawning_then_restored():
    cores = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    with _worker_cores(True):
        assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == cores
        assert os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert not any(key in os.environ for key in KEYS)  # the next engine in this process gets vLLM's default


def test_off_changes_nothing_and_the_users_value_wins(monkeypatch):
    with _worker_cores(False):
        assert not any(key in os.environ for key in KEYS)
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0")
    with _worker_cores(True):
        assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0"
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0" and "VLLM_CPU_NUM_OF_RESERVED_CPU" not in os.environ
