"""The launch flags, the held-out sharding plan, failure reports, the run lock and the version race - one process.

(The real several-process runs are in test_multiprocess.py.)
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest

from core.config import PROJECT_ROOT, ConfigError
from core.registry import AdapterRegistry, RegistryError
from training.distributed import eval_plan
from training.launch import (accelerate_config_path, cpu_rank_flags, describe_failures, failure_exit_code,
                             split_launch_flags)


def test_launch_flags_are_taken_out_of_the_job_flags():
    assert split_launch_flags(["--nproc", "2", "--max_steps", "3", "--accelerate-config=fsdp"]) == (
        2, "fsdp", ["--max_steps", "3"])
    assert split_launch_flags(["--max_steps", "3"]) == (None, None, ["--max_steps", "3"])
    for bad in (["--nproc", "0"], ["--nproc", "two"], ["--nproc"], ["--accelerate-config", "--nproc", "2"]):
        with pytest.raises(ConfigError, match="--nproc|--accelerate-config"):
            split_launch_flags(bad)


def test_cpu_ranks_train_in_fp32_and_bf16_is_refused_by_name():
    assert cpu_rank_flags(["--max_steps", "2"]) == ["--max_steps", "2", "--use_cpu", "true", "--dtype", "float32"]
    assert cpu_rank_flags(["--dtype", "float32"]) == ["--dtype", "float32", "--use_cpu", "true"]
    with pytest.raises(ConfigError, match="--bf16 true"):
        cpu_rank_flags(["--bf16", "true"])
    with pytest.raises(ConfigError, match="--dtype bfloat16"):
        cpu_rank_flags(["--dtype=bfloat16"])


def test_accelerate_configs_by_name_or_path_and_refused_without_a_gpu(tmp_path):
    assert accelerate_config_path("zero3").name == "deepspeed_zero3.yaml"
    assert accelerate_config_path(str(PROJECT_ROOT / "configs/accelerate/fsdp.yaml")).is_file()
    with pytest.raises(ConfigError, match="no such file"):
        accelerate_config_path(str(tmp_path / "missing.yaml"))
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the refusal is for machines without one")
    run = subprocess.run([sys.executable, "-m", "core.cli", "train", "sft", "--nproc", "2", "--accelerate-config",
                          "fsdp"], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert run.returncode == 2
    assert "--accelerate-config fsdp" in run.stderr and "no CUDA GPU" in run.stderr


@pytest.mark.parametrize("rows,world,batch,expected", [
    (4, 2, 8, (2, 1)),     # 2 rows per rank, one step, each row once
    (120, 2, 8, (6, 1)),   # 60 per rank: the largest divisor of 60 up to 8 is 6
    (5, 2, 8, (5, 2)),     # odd: the split twice over, 5 rows per rank, each row counted twice
    (7, 2, 4, (1, 2)),     # 7 is prime: one row a step
    (9, 3, 8, (3, 1)),
    (4, 1, 8, (8, 1)),     # one process: untouched
])
def test_eval_plan_weighs_every_row_the_same(rows, world, batch, expected):
    plan = eval_plan(rows, world, batch)
    assert (plan.batch, plan.repeats) == expected
    scored = rows * plan.repeats
    if world > 1:
        assert scored % (plan.batch * world) == 0  # no rank padded with duplicated rows, every step full
        assert plan.batch <= batch


def test_a_failure_report_names_the_dead_rank():
    failures = {1: SimpleNamespace(exitcode=-signal.SIGKILL, pid=4242)}
    text = describe_failures(failures, 2)
    assert "rank 1 of 2 killed by SIGKILL (pid 4242)" in text and "nothing was registered" in text
    assert failure_exit_code(failures) == 128 + signal.SIGKILL
    assert failure_exit_code({0: SimpleNamespace(exitcode=2, pid=1)}) == 2


def _sft_kwargs(tiny_model_dir, small_dataset, tmp_path, overrides):
    return dict(model_dir=tiny_model_dir, data=small_dataset["sft_train"], eval_data=small_dataset["sft_eval"],
                registry_root=tmp_path / "adapters", log=lambda *_: None,
                overrides={**overrides, "max_steps": 1, "max_eval_rows": 2, "run_root": str(tmp_path / "runs")})


def test_a_second_launch_of_the_same_job_is_refused_while_the_first_runs(tiny_model_dir, small_dataset, tmp_path,
                                                                        tiny_overrides):
    from training.config import resolve_job
    from training.jobs import _prepare, train_sft

    kwargs = _sft_kwargs(tiny_model_dir, small_dataset, tmp_path, tiny_overrides)
    spec = resolve_job("sft", overrides={**kwargs["overrides"], "base_model_dir": str(tiny_model_dir),
                                         "data": str(small_dataset["sft_train"]),
                                         "eval_data": str(small_dataset["sft_eval"]),
                                         "registry": str(tmp_path / "adapters"), "name": "sft"})
    plan = _prepare(spec, "sft", AdapterRegistry(tmp_path / "adapters"), lambda *_: None)
    first = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; h = open(sys.argv[1], 'a+'); "
                              "fcntl.flock(h, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
                              str(plan.run_dir / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        assert first.stdout.readline().strip() == "locked"  # another process holds this job's run directory
        with pytest.raises(RegistryError, match="another launch is running this same job"):
            train_sft(**kwargs)
    finally:
        first.kill()
        first.wait()
    assert AdapterRegistry(tmp_path / "adapters").versions("sft") == []
    assert train_sft(**kwargs).ref == "sft@1"  # once the first is gone the same command runs


def test_a_version_taken_by_another_launch_meanwhile_goes_to_the_next(tiny_model_dir, small_dataset, tmp_path,
                                                                     tiny_overrides, monkeypatch):
    from training.jobs import train_sft

    registry = AdapterRegistry(tmp_path / "adapters")
    original_add = AdapterRegistry.add
    competitor = {}

    def add_after_a_competitor(self, name, source_dir, meta, version=None, move_alias=True):
        if not competitor:  # the other launch renames its sft@<version> into place first
            competitor["adapter"] = original_add(self, name, source_dir, {"kind": "sft", "note": "other launch"},
                                                 version=version, move_alias=False)
        return original_add(self, name, source_dir, meta, version=version, move_alias=move_alias)

    monkeypatch.setattr(AdapterRegistry, "add", add_after_a_competitor)
    ours = train_sft(**_sft_kwargs(tiny_model_dir, small_dataset, tmp_path, tiny_overrides))
    assert competitor["adapter"].ref == "sft@1" and ours.ref == "sft@2"
    assert registry.versions("sft") == [1, 2]
    assert registry.get("sft", 1).meta["note"] == "other launch" and "note" not in ours.meta
    assert json.loads((ours.path / "palate.json").read_text())["version"] == 2


@pytest.mark.parametrize("name", ["fsdp", "zero2", "zero3"])
def test_gpu_launch_configs_pass_accelerates_own_launch_validation(name):
    """What `accelerate launch --config_file ... --num_processes 2` checks and builds before it starts any rank
    (its argument parser, its validation, the environment it hands the ranks); the ranks themselves need GPUs."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    path = accelerate_config_path(name)
    args = launch_command_parser().parse_args(["--config_file", str(path), "--num_processes", "2",
                                               "-m", "core.cli", "train", "sft"])
    args, defaults, _ = _validate_launch_command(args)
    if name == "fsdp":
        env = prepare_multi_gpu_env(args)
        assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    else:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
        assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == name[-1]
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"
