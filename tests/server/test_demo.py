"""`palate demo` (what `make demo` runs) on the real engine: base answers while the adapters train in the
background; sft and dpo join without a restart; the arena's training endpoint shows the progress; stopping the
demo stops the training too."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.helpers import engine_pids, pid_alive, start_server

pytestmark = pytest.mark.e2e
TRAIN_FLAGS = ("--max_steps", "3", "--save_strategy", "no", "--max_eval_rows", "2", "--logging_steps", "1",
               "--warmup_steps", "0", "--max_train_rows", "24", "--per_device_train_batch_size", "2",
               "--max_length", "256", "--on_policy_rows", "0")  # the written pairs: sampling would triple dpo's time


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def _wait_for_a_training_step(process, registry, log) -> None:
    """Until the background job has trained a step; fails with the log's tail if `process` ended first."""
    from core.training_progress import read_progress

    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if any(job["state"] == "training" and (job.get("step") or 0) >= 1 for job in read_progress(registry)):
            return
        time.sleep(1)
    assert process.poll() is None, log.read_text()[-2000:]


def test_demo_serves_base_at_once_and_adapters_join_when_trained(tmp_path):
    from openai import OpenAI

    registry = tmp_path / "adapters"
    server = start_server(tmp_path / "demo", registry, command="demo",
                          args=("--train-log", str(tmp_path / "train.log"), "--", *TRAIN_FLAGS))
    try:
        trainer = [pid for pid in engine_pids(server.process.pid) if b"train" in _cmdline(pid)]
        client = OpenAI(base_url=server.v1, api_key="x")
        reply = client.chat.completions.create(model="base", max_tokens=8, temperature=0,
                                               messages=[{"role": "user", "content": "Describe a loft."}])
        assert reply.choices[0].message.content
        states, served, deadline = set(), set(), time.time() + 900
        while not {"sft", "dpo"} <= served and time.time() < deadline:
            jobs = httpx.get(f"{server.url}/v1/arena/training", timeout=30).json()["jobs"]
            states |= {(job["name"], job["state"]) for job in jobs}
            served = {m["id"] for m in httpx.get(f"{server.v1}/models", timeout=30).json()["data"]}
            time.sleep(1)
        assert {"sft", "dpo"} <= served, (states, (tmp_path / "train.log").read_text()[-3000:])
        assert server.process.poll() is None  # no restart: the same process hot-loaded both
        jobs = {job["name"]: job for job in httpx.get(f"{server.url}/v1/arena/training", timeout=30).json()["jobs"]}
        assert jobs["sft"]["state"] == "registered" and jobs["sft"]["ref"] == "sft@1" and jobs["sft"]["step"] == 3
        assert jobs["dpo"]["state"] == "registered" and jobs["dpo"]["ref"] == "dpo@1"
        assert any(state == "training" for _, state in states)  # progress was visible while it ran
        reply = client.chat.completions.create(model="dpo", max_tokens=8, temperature=0,
                                               messages=[{"role": "user", "content": "Describe a loft."}])
        assert reply.model.startswith("dpo") and reply.choices[0].message.content
    finally:
        server.stop()
    assert trainer and not any(pid_alive(pid) for pid in trainer)


def test_leaving_the_demo_interrupts_its_training_with_a_checkpoint(tmp_path):
    """When the server ends while the background job still trains, the job is interrupted the way Ctrl-C does it
    (a checkpoint, so the next `palate demo` resumes), not left running."""
    from core.training_progress import read_progress
    from server.demo import background_training

    registry, log = tmp_path / "adapters", tmp_path / "train.log"
    with background_training(registry, "quick", ["--max_steps", "400", "--save_steps", "1", "--logging_steps", "1",
                                                 "--max_eval_rows", "2", "--per_device_train_batch_size", "2",
                                                 "--max_length", "256"], log) as child:
        _wait_for_a_training_step(child, registry, log)
    assert child.returncode is not None and not pid_alive(child.pid)
    text = log.read_text()
    assert "saving a checkpoint" in text and "interrupted at step" in text, text[-2000:]
    assert [job["state"] for job in read_progress(registry)] == ["stopped"]


def test_ctrl_c_in_a_terminal_interrupts_train_all_once_with_a_checkpoint(tmp_path):
    """A terminal's Ctrl-C goes to the whole foreground process group. `palate train all` runs each job in its own
    process and session and passes the SIGINT on once: the job saves a checkpoint (a second SIGINT would abort it
    without one), `train all` exits 130 and leaves no process behind."""
    import os
    import signal
    import subprocess
    import sys

    from core.training_progress import read_progress

    registry, log = tmp_path / "adapters", tmp_path / "train.log"
    with open(log, "wb") as out:
        parent = subprocess.Popen(
            [sys.executable, "-m", "core.cli", "train", "all", "--profile", "quick", "--registry", str(registry),
             "--", "--max_steps", "400", "--save_steps", "1", "--logging_steps", "1", "--max_eval_rows", "2",
             "--per_device_train_batch_size", "2", "--max_length", "256", "--run_root", str(tmp_path / "runs")],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # its own group: the "terminal"
    try:
        _wait_for_a_training_step(parent, registry, log)
        job = [pid for pid in engine_pids(parent.pid) if pid_alive(pid)]
        assert job, "the job runs in a child process"
        os.killpg(parent.pid, signal.SIGINT)
        assert parent.wait(120) == 130, log.read_text()[-2000:]
    finally:
        if parent.poll() is None:
            parent.kill()
    text = log.read_text()
    assert "saving a checkpoint" in text and "interrupted at step" in text, text[-2000:]
    assert "KeyboardInterrupt" not in text and "palate train all: training dpo" not in text
    assert [job["state"] for job in read_progress(registry)] == ["stopped"]
    assert not any(pid_alive(pid) for pid in job)
