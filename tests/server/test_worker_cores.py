"""Where vLLM's CPU worker computes (`server.engines.vllm_engine`): `cpu_worker_cores` turns `vllm.cpu_threads` (or
the scoring engine's every-core wish) into a core list and refuses what it cannot honour; `_worker_cores` sets that
binding only while the engine processes are spawned, never over a value the user exported."""

from __future__ import annotations

import os

import pytest

from core.config import ConfigError, VllmConfig
from server.engines.vllm_engine import _worker_cores, cpu_worker_cores

KEYS = ("VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU")
FOUR = {0, 1, 2, 3}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)


def test_every_core_while_spawning_then_restored():
    cores = sorted(os.sched_getaffinity(0))
    with _worker_cores(cores):
        assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == ",".join(map(str, cores))
        assert os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert not any(key in os.environ for key in KEYS)  # the next engine in this process gets vLLM's default


def test_none_changes_nothing_and_the_users_value_wins(monkeypatch):
    with _worker_cores(None):
        assert not any(key in os.environ for key in KEYS)
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0")
    with _worker_cores([0, 1]):
        assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0"
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0" and "VLLM_CPU_NUM_OF_RESERVED_CPU" not in os.environ


def test_unset_cpu_threads_is_vllms_choice_or_every_core():
    assert cpu_worker_cores(VllmConfig(), affinity=FOUR, environ={}) is None
    assert cpu_worker_cores(VllmConfig(), every_core=True, affinity=FOUR, environ={}) == [0, 1, 2, 3]


def test_cpu_threads_binds_that_many_cores_and_wins_over_every_core():
    assert cpu_worker_cores(VllmConfig(cpu_threads=2), affinity=FOUR, environ={}) == [2, 3]
    assert cpu_worker_cores(VllmConfig(cpu_threads=1), every_core=True, affinity=FOUR, environ={}) == [3]
    assert cpu_worker_cores(VllmConfig(cpu_threads=4), affinity=FOUR, environ={}) == [0, 1, 2, 3]


@pytest.mark.parametrize("cfg, environ, named", [
    (VllmConfig(cpu_threads=5), {}, "at most 4"),
    (VllmConfig(cpu_threads=2, tensor_parallel_size=2), {}, "2 workers"),
    (VllmConfig(cpu_threads=2), {"VLLM_CPU_OMP_THREADS_BIND": "0-1"}, "unset one of the two"),
])
def test_what_cannot_be_honoured_is_refused_naming_the_key(cfg, environ, named):
    with pytest.raises(ConfigError, match="vllm.cpu_threads") as err:
        cpu_worker_cores(cfg, affinity=FOUR, environ=environ)
    assert named in str(err.value)


def test_zero_threads_is_refused_by_the_config():
    with pytest.raises(ValueError, match="cpu_threads"):
        VllmConfig(cpu_threads=0)
