"""Ctrl-C mid-run saves a checkpoint; the same call again resumes from it instead of starting over."""

from __future__ import annotations

import os
import signal

import pytest

from core.registry import AdapterRegistry
from training.jobs import TrainingInterrupted, train_sft
from training.metrics import GracefulInterrupt


def test_ctrl_c_then_same_command_resumes(tiny_model_dir, small_dataset, tmp_path, tiny_overrides, monkeypatch):
    overrides = {**tiny_overrides, "max_steps": 4, "save_steps": 1000, "run_root": str(tmp_path / "runs"),
                 "max_eval_rows": 2}
    kwargs = dict(model_dir=tiny_model_dir, data=small_dataset["sft_train"], eval_data=small_dataset["sft_eval"],
                  registry_root=tmp_path / "adapters", overrides=overrides, log=lambda *_: None)
    original = GracefulInterrupt.on_step_end

    def press_ctrl_c_at_step_2(self, args, state, control, **kw):
        if state.global_step == 2 and not self.interrupted:
            os.kill(os.getpid(), signal.SIGINT)  # a real SIGINT, handled by the job's handler
        return original(self, args, state, control, **kw)

    monkeypatch.setattr(GracefulInterrupt, "on_step_end", press_ctrl_c_at_step_2)
    with pytest.raises(TrainingInterrupted, match="step 2"):
        train_sft(**kwargs)
    checkpoints = list((tmp_path / "runs" / "sft").glob("*/checkpoint-2"))
    assert len(checkpoints) == 1  # saved on Ctrl-C although save_steps is far away
    assert AdapterRegistry(tmp_path / "adapters").versions("sft") == []  # nothing registered

    monkeypatch.setattr(GracefulInterrupt, "on_step_end", original)
    adapter = train_sft(**kwargs)
    assert adapter.meta["timing"]["resumed_from"] == "checkpoint-2"
    assert adapter.meta["timing"]["global_step"] == 4
    steps = [e["step"] for e in _history(adapter) if "loss" in e]
    assert steps == [1, 2, 3, 4]  # the curve keeps the interrupted run's steps, each once
    assert not checkpoints[0].parent.exists()  # run directory cleaned up once registered


def _history(adapter):
    import json

    return json.loads((adapter.path / "metrics.json").read_text())
