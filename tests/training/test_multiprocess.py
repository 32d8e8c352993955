"""`palate train ... --nproc 2`: real torch.distributed ranks (gloo, CPU, fp32) started by torch's elastic launcher.

- SFT then DPO on the embedded model, 2 processes, a few steps: one version each, world size 2 recorded, held-out
  metrics equal to a one-process evaluation over every held-out row, DPO's reference is the parent on every rank,
  the adapter passes preflight and the real engine serves the registry they wrote.
- SIGKILL one rank mid-run: non-zero exit naming it, nothing registered, the same command resumes and registers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from core.config import PROJECT_ROOT
from core.registry import AdapterRegistry
from tests.helpers import start_server

pytestmark = [pytest.mark.multiprocess]

# A few steps on few short rows: the point is the mechanics across processes, not the recipe.
COMMON = ["--max_steps", "2", "--logging_steps", "1", "--per_device_train_batch_size", "2", "--max_train_rows", "8",
          "--max_length", "256", "--warmup_steps", "0", "--save_strategy", "no"]


def _palate_train(kind: str, *flags: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core.cli", "train", kind, "--nproc", "2", *flags],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))


def _one_process_eval(kind, base_model_dir, data, eval_data, adapter, parent=None) -> dict:
    """The registered adapter's held-out metrics from one process over every eval row, in batches of the size each
    rank used (DPO's `sft` loss term is a token mean per batch, so the batch size must match)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from training.config import resolve_job
    from training.inputs import prepare_data
    from training.jobs import load_model, make_trainer

    rows, batch = adapter.meta["evaluation"]["rows"], adapter.meta["evaluation"]["per_device_eval_batch_size"]
    # the precision the ranks used: `bf16: auto` is fp32 for gloo ranks but bf16 for one process on a CPU with bf16
    # instructions, so it is read from the version rather than resolved again in this one process
    spec = resolve_job(kind, overrides={"output_dir": tempfile.mkdtemp(prefix="eval-check-"), "dtype": "float32",
                                        "max_length": 256, "per_device_eval_batch_size": batch,
                                        "bf16": adapter.meta["config"]["trl"]["bf16"]})
    model, tokenizer = load_model(spec, base_model_dir, parent or adapter)
    trainer = make_trainer(spec, model, tokenizer, prepare_data(kind, data),
                           prepare_data(kind, eval_data, max_rows=rows), [])
    if parent is not None:  # the reference ("ref") is the parent; the policy ("default") gets the trained weights
        set_peft_model_state_dict(trainer.model, load_file(str(adapter.path / "adapter_model.safetensors")),
                                  adapter_name="default")
    return trainer.evaluate()


@pytest.fixture(scope="module")
def two_process_runs(base_model_dir, small_dataset, tmp_path_factory):
    """sft@1 then dpo@1 (from sft@1), each trained by `palate train ... --nproc 2` on the embedded model."""
    root = tmp_path_factory.mktemp("mp")
    registry = root / "adapters"
    where = ["--registry", str(registry), "--run_root", str(root / "runs")]
    sft = _palate_train("sft", *COMMON, *where, "--data", str(small_dataset["sft_train"]),
                        "--eval_data", str(small_dataset["sft_eval"]), "--max_eval_rows", "5")
    assert sft.returncode == 0, sft.stdout[-3000:] + sft.stderr[-3000:]
    dpo = _palate_train("dpo", *COMMON, *where, "--data", str(small_dataset["prefs_train"]),
                        "--eval_data", str(small_dataset["prefs_eval"]), "--max_eval_rows", "4",
                        "--report_to", "tensorboard", "--on_policy_rows", "2", "--on_policy_samples", "2")
    assert dpo.returncode == 0, dpo.stdout[-3000:] + dpo.stderr[-3000:]
    return AdapterRegistry(registry), sft, dpo


def test_sft_then_dpo_on_two_processes(two_process_runs, base_model_dir, small_dataset):
    registry, sft_run, dpo_run = two_process_runs
    assert registry.versions("sft") == [1] and registry.versions("dpo") == [1]  # one version each, not one per rank
    assert sft_run.stdout.count("registered sft@1") == 1 and "processes (torch.distributed" in sft_run.stdout
    sft, dpo = registry.get("sft", 1), registry.get("dpo", 1)
    assert dpo.parent == "sft@1"
    assert dpo.meta["on_policy"]["rows"] == 2  # sampled on rank 0 and shared with rank 1
    for adapter in (sft, dpo):
        assert adapter.meta["distributed"] == {"world_size": 2, "per_device_train_batch_size": 2,
                                               "gradient_accumulation_steps": 1, "effective_batch_size": 4,
                                               "backend": "gloo",
                                               "launcher": "torch.distributed elastic (torchrun)"}
        assert adapter.meta["config"]["trl"]["use_cpu"] is True and adapter.meta["config"]["model"]["dtype"] == "float32"
        assert adapter.meta["config"]["trl"]["bf16"] is False  # `bf16: auto` is fp32 for several gloo ranks
        assert adapter.meta["timing"]["global_step"] == 2
    # 5 SFT rows do not split in two: scored twice over (each row the same weight); 4 DPO rows: each once
    assert sft.meta["evaluation"] == {"rows": 5, "world_size": 2, "per_device_eval_batch_size": 5, "repeats": 2,
                                      "rows_scored": 10}
    assert dpo.meta["evaluation"]["rows"] == 4 and dpo.meta["evaluation"]["repeats"] == 1
    assert sft.meta["dataset"]["eval"]["rows_used"] == 5 and dpo.meta["dataset"]["eval"]["rows_used"] == 4

    # the recorded held-out metrics are those of every eval row (one process, one batch, same adapter)
    reference = _one_process_eval("sft", base_model_dir, small_dataset["sft_train"], small_dataset["sft_eval"], sft)
    assert sft.meta["metrics"]["eval"]["eval_loss"] == pytest.approx(reference["eval_loss"], rel=1e-4)
    reference = _one_process_eval("dpo", base_model_dir, small_dataset["prefs_train"], small_dataset["prefs_eval"],
                                  dpo, parent=sft)
    for key in ("eval_loss", "eval_rewards/margins", "eval_rewards/accuracies", "eval_logps/chosen"):
        assert dpo.meta["metrics"]["eval"][key] == pytest.approx(reference[key], rel=1e-4, abs=1e-6), key

    # the reference is the parent on every rank: rewards (gathered over both ranks) are exactly 0 at step 1
    first = next(e for e in json.loads((dpo.path / "metrics.json").read_text()) if "rewards/chosen" in e)
    assert first["step"] == 1 and first["rewards/chosen"] == 0.0 and first["rewards/rejected"] == 0.0
    # the tracker's logs are kept with the version
    assert list((dpo.path / "logs" / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.e2e
@pytest.mark.engine
def test_the_two_process_adapter_passes_preflight_and_is_served(two_process_runs, base_model_dir, tmp_path):
    """The registry the two-process runs wrote is served as it is: a server of its own on a copy of it (not the
    session's live server, which would first train adapters of its own in this run)."""
    from server.preflight import BaseModelFacts, check_adapter
    from training.inputs import base_model_info

    registry, _, _ = two_process_runs
    dpo = registry.get("dpo", 1)
    info = base_model_info(base_model_dir)
    facts = BaseModelFacts.from_model_dir(Path(info["path"]), info["id"], info["weights_sha256"])
    assert check_adapter(dpo.path, facts, max_lora_rank=32)["r"] == dpo.meta["lora"]["r"]

    served = tmp_path / "adapters"
    shutil.copytree(registry.root, served)
    server = start_server(tmp_path / "server", served, mount_arena=False)
    try:
        models = {m["id"]: m for m in httpx.get(f"{server.v1}/models", timeout=30).json()["data"]}
        assert {"base", "sft", "dpo"} <= set(models), server.log_tail()
        assert models["dpo"]["root"] == "dpo@1"
        reply = httpx.post(f"{server.v1}/chat/completions", timeout=120, json={
            "model": "dpo", "messages": [{"role": "user", "content": "Describe a 2-bed flat."}],
            "max_tokens": 8, "temperature": 0}).json()
        assert reply["model"] == "dpo@1" and reply["choices"][0]["message"]["content"], reply
    finally:
        server.stop()


def _rank_pids(launcher_pid: int) -> dict[int, int]:
    """RANK -> pid of the launcher's worker processes (read from their environment)."""
    from tests.helpers import engine_pids

    ranks = {}
    for pid in engine_pids(launcher_pid):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in env:
            if item.startswith(b"RANK="):
                ranks[int(item[5:])] = pid
    return ranks


def test_a_killed_rank_ends_the_launch_and_the_same_command_resumes(tiny_model_dir, small_dataset, tmp_path):
    registry_root, runs = tmp_path / "adapters", tmp_path / "runs"
    command = [sys.executable, "-m", "core.cli", "train", "sft", "--nproc", "2", "--base_model_dir",
               str(tiny_model_dir), "--data", str(small_dataset["sft_train"]), "--eval_data",
               str(small_dataset["sft_eval"]), "--registry", str(registry_root), "--run_root", str(runs),
               "--max_steps", "8", "--save_steps", "2", "--logging_steps", "1", "--per_device_train_batch_size", "2",
               "--max_length", "256", "--max_eval_rows", "2", "--warmup_steps", "0", "--lora_r", "8"]
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        launch = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not list(runs.glob("sft/*/checkpoint-2/trainer_state.json")):
            assert launch.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        ranks = _rank_pids(launch.pid)
        assert sorted(ranks) == [0, 1], ranks
        os.kill(ranks[1], signal.SIGKILL)
        code = launch.wait(300)
    finally:
        if launch.poll() is None:
            os.killpg(launch.pid, signal.SIGKILL)
            launch.wait()
    output = log.read_text()
    assert code != 0
    assert f"rank 1 of 2 killed by SIGKILL (pid {ranks[1]})" in output, output[-3000:]
    assert AdapterRegistry(registry_root).versions("sft") == []  # nothing registered
    assert not any(Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
                   for pid in ranks.values())  # the launcher ended the surviving rank too
    complete = sorted(int(p.parent.name.split("-")[1]) for p in runs.glob("sft/*/checkpoint-*/trainer_state.json"))
    assert complete and max(complete) < 8

    rerun = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    adapter = AdapterRegistry(registry_root).get("sft", 1)
    assert AdapterRegistry(registry_root).versions("sft") == [1]
    assert adapter.meta["timing"]["resumed_from"] == f"checkpoint-{max(complete)}"
    assert adapter.meta["timing"]["global_step"] == 8
    assert adapter.meta["distributed"]["world_size"] == 2
