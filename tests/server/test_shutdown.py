"""SIGTERM (and Ctrl-C) stop `palate serve` cleanly: no vLLM engine process is left behind."""

from __future__ import annotations

import signal
import time

import pytest

from tests.helpers import engine_pids, pid_alive, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.engine]


@pytest.mark.parametrize("sig", [signal.SIGTERM])
def test_signal_leaves_no_engine_process(base_model_dir, tmp_path, sig):
    server = start_server(tmp_path, tmp_path / "empty-registry", mount_arena=False)
    children = engine_pids(server.process.pid)
    assert children, "vLLM runs its engine core in child processes; expected some"
    # Signal the server directly (server.stop() would also kill its process group, hiding a leak).
    server.process.send_signal(sig)
    code = server.process.wait(90)
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status says how it ended.
    assert code in (0, -sig), server.log_tail()
    assert "Application shutdown complete" in server.log_tail()
    deadline = time.monotonic() + 20
    while any(pid_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.5)
    leftovers = [pid for pid in children if pid_alive(pid)]
    server.stop()  # clean up whatever a failure left behind
    assert leftovers == []
