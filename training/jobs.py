"""SFT and DPO jobs on TRL + PEFT, ending in an immutable registry version.

    train_sft(...)  base model + LoRA, TRL SFTTrainer                       -> adapters/sft/<n>
    train_dpo(...)  parent adapter (default alias `sft`) trained further     -> adapters/dpo/<n>
                    with TRL DPOTrainer; TRL copies the parent into a frozen
                    "ref" adapter, so the reference is the SFT adapter, not
                    the bare base model

A job runs in `runs/<name>/<fingerprint>/`; the fingerprint covers the resolved config, data, base weights and
parent, so the same command finds its own checkpoints and resumes (Ctrl-C saves one before stopping). On success
the adapter, `metrics.json` and `metrics.png` are registered with a `palate.json` record and the run directory is
removed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

from core.config import ConfigError, load_model_config
from core.registry import AdapterRegistry, AdapterVersion, RegistryError
from training.config import JobSpec, project_path, resolve_job
from training.data import ensure_dataset
from training.inputs import PreparedData, base_model_info, prepare_data
from training.metrics import GracefulInterrupt, MetricsRecorder, final_metrics, plot_metrics


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C after saving a checkpoint; the same command resumes it."""


def train_sft(*, model_dir: Path | str | None = None, data: Path | str | None = None,
              eval_data: Path | str | None = None, registry_root: Path | str = "adapters", name: str = "sft",
              profile: str = "quick", config: Path | str | None = None, overrides: dict | None = None,
              argv: list[str] | None = None, log=print) -> AdapterVersion:
    """Train an SFT LoRA adapter and register it as `name@<next>`. `overrides` sets any TRL/LoRA/Palate field
    (e.g. {"max_steps": 2}); `argv` takes the same as command-line flags. Returns the registered version."""
    spec = resolve_job("sft", argv=argv, config=config, profile=profile,
                       overrides=_job_overrides(overrides, model_dir, data, eval_data, registry_root, name, None))
    return run_job(spec, log=log)


def train_dpo(*, model_dir: Path | str | None = None, data: Path | str | None = None,
              eval_data: Path | str | None = None, registry_root: Path | str = "adapters", name: str = "dpo",
              parent: str = "sft", profile: str = "quick", config: Path | str | None = None,
              overrides: dict | None = None, argv: list[str] | None = None, log=print) -> AdapterVersion:
    """Train a DPO adapter starting from `parent` (an alias or name@version; 'base' for a fresh LoRA on the base
    model), with a frozen copy of the parent as the reference, and register it as `name@<next>`."""
    spec = resolve_job("dpo", argv=argv, config=config, profile=profile,
                       overrides=_job_overrides(overrides, model_dir, data, eval_data, registry_root, name, parent))
    return run_job(spec, log=log)


def _job_overrides(overrides, model_dir, data, eval_data, registry_root, name, parent) -> dict:
    values = {"registry": str(registry_root), "name": name}
    if model_dir is not None:
        values["base_model_dir"] = str(model_dir)
    if data is not None:
        values["data"] = str(data)
    if eval_data is not None:
        values["eval_data"] = str(eval_data)
    if parent is not None:
        values["parent"] = parent
    values.update(overrides or {})
    return values


# ---- the job ---------------------------------------------------------------------------------------------------

def _resolve_inputs(spec: JobSpec, log) -> tuple[PreparedData, PreparedData | None]:
    args = spec.palate
    train_path, eval_path = args.data, args.eval_data
    if train_path is None:
        paths = ensure_dataset(project_path(args.dataset_dir), seed=args.dataset_seed)
        prefix = "sft" if spec.kind == "sft" else "prefs"
        train_path = paths[f"{prefix}_train"]
        eval_path = eval_path or paths[f"{prefix}_eval"]
    train = prepare_data(spec.kind, project_path(train_path), args.allow_invalid_rows, args.max_train_rows, log)
    evaluation = None
    if eval_path:
        evaluation = prepare_data(spec.kind, project_path(eval_path), args.allow_invalid_rows, args.max_eval_rows, log)
    log(f"data: {train.path} ({len(train.rows)} rows used of {train.report.kept} valid)"
        + (f"; eval: {evaluation.path} ({len(evaluation.rows)} rows)" if evaluation else "; no eval data"))
    return train, evaluation


def _fingerprint(spec: JobSpec, base: dict, train: PreparedData, evaluation, parent: AdapterVersion | None) -> str:
    record = spec.as_record()
    key = {"config": record, "base": base["weights_sha256"], "data": train.sha256,
           "eval": evaluation.sha256 if evaluation else None,
           "parent": parent.meta.get("content_sha256") if parent else None}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _resolve_parent(spec: JobSpec, registry: AdapterRegistry, base: dict) -> AdapterVersion | None:
    if spec.kind != "dpo" or (spec.palate.parent or "sft") == "base":
        return None
    parent = registry.resolve(spec.palate.parent or "sft")
    problem = registry.verify(parent)
    if problem:
        raise RegistryError(f"parent {parent.ref} is damaged: {problem}")
    parent_base = (parent.meta.get("base_model") or {}).get("weights_sha256")
    if parent_base and parent_base != base["weights_sha256"]:
        raise RegistryError(f"parent {parent.ref} was trained on another base model (weights {parent_base[:12]}…, "
                            f"this base is {base['weights_sha256'][:12]}…).")
    return parent


def load_model(spec: JobSpec, model_dir: Path, parent: AdapterVersion | None):
    """(model, tokenizer): the base model, wrapped in the parent adapter (trainable) when there is one."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, spec.model.dtype) if spec.model.dtype not in (None, "auto") else "auto"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if parent is not None:
        # TRL sees a PEFT model and no ref_model: it copies this adapter into a frozen "ref" adapter.
        model = PeftModel.from_pretrained(model, parent.path, is_trainable=True)
    return model, tokenizer


def make_trainer(spec: JobSpec, model, tokenizer, train: PreparedData, evaluation, callbacks):
    """TRL's SFTTrainer or DPOTrainer on the prepared rows; a fresh LoRA from the config unless `model` has one."""
    from datasets import Dataset
    from trl import DPOTrainer, SFTTrainer, get_peft_config

    train_ds = Dataset.from_list(train.rows)
    eval_ds = Dataset.from_list(evaluation.rows) if evaluation else None
    peft_config = None if hasattr(model, "peft_config") else get_peft_config(spec.model)
    cls = SFTTrainer if spec.kind == "sft" else DPOTrainer
    return cls(model=model, args=spec.trl, train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer,
               peft_config=peft_config, callbacks=callbacks)


def _lora_record(adapter_dir: Path) -> dict:
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    targets = cfg.get("target_modules") or []
    return {"r": cfg.get("r"), "alpha": cfg.get("lora_alpha"), "target_modules": sorted(targets)}


def run_job(spec: JobSpec, log=print) -> AdapterVersion:
    """Run a resolved job end to end (validate data, train or resume, evaluate, register). See module docstring."""
    from transformers.trainer_utils import get_last_checkpoint

    args = spec.palate
    name = args.name or spec.kind
    registry = AdapterRegistry(project_path(args.registry))
    model_dir = project_path(args.base_model_dir) if args.base_model_dir else load_model_config().resolved_dir()
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"base model directory {model_dir} has no config.json; run `palate model pull` first.")
    base = base_model_info(model_dir)
    train, evaluation = _resolve_inputs(spec, log)
    parent = _resolve_parent(spec, registry, base)

    run_dir = project_path(args.run_root) / name / _fingerprint(spec, base, train, evaluation, parent)
    spec.trl.output_dir = str(run_dir)
    last_checkpoint = get_last_checkpoint(str(run_dir)) if run_dir.is_dir() else None
    t = spec.trl
    log(f"palate train {spec.kind}: profile={args.profile} -> {name}@{registry.next_version(name)}; "
        f"base={base['id']} parent={parent.ref if parent else None}; max_steps={t.max_steps} epochs={t.num_train_epochs} "
        f"batch={t.per_device_train_batch_size}x{t.gradient_accumulation_steps} lr={t.learning_rate}"
        + (f" beta={t.beta} precompute_ref_log_probs={t.precompute_ref_log_probs}" if spec.kind == "dpo" else "")
        + f"; run dir {run_dir}")
    if last_checkpoint:
        log(f"resuming from {last_checkpoint}")

    model, tokenizer = load_model(spec, model_dir, parent)
    recorder = MetricsRecorder(run_dir / "metrics.json")
    if last_checkpoint:  # keep the curve of the interrupted run: its log history is in the checkpoint
        state = json.loads((Path(last_checkpoint) / "trainer_state.json").read_text())
        recorder.history = [dict(e) for e in state.get("log_history", [])]
    interrupt = GracefulInterrupt()
    trainer = make_trainer(spec, model, tokenizer, train, evaluation, [recorder, interrupt])
    started = time.time()
    try:
        result = trainer.train(resume_from_checkpoint=last_checkpoint)
    finally:
        interrupt.restore()
    if interrupt.interrupted:
        raise TrainingInterrupted(f"interrupted at step {trainer.state.global_step}; checkpoint saved in {run_dir}. "
                                  "Run the same command again to resume.")
    train_seconds = time.time() - started
    if evaluation is not None:
        trainer.evaluate()  # logged through the recorder as eval_* entries
    eval_seconds = time.time() - started - train_seconds
    return _register(spec, name, registry, trainer, recorder, base, train, evaluation, parent, run_dir,
                     {"train_seconds": round(train_seconds, 1), "eval_seconds": round(eval_seconds, 1),
                      "global_step": result.global_step,
                      "resumed_from": Path(last_checkpoint).name if last_checkpoint else None}, log)


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def _register(spec, name, registry, trainer, recorder, base, train, evaluation, parent, run_dir, timing, log):
    saved, final_dir = run_dir / "saved", run_dir / "final"
    for directory in (saved, final_dir):
        shutil.rmtree(directory, ignore_errors=True)
    version = registry.next_version(name)
    # save_model gathers sharded weights under FSDP/DeepSpeed (a collective: every rank calls it). PEFT writes the
    # trained "default" adapter at the top level and the frozen "ref" copy in a subfolder, which is not kept.
    trainer.save_model(str(saved))
    if not trainer.accelerator.is_main_process:
        trainer.accelerator.wait_for_everyone()
        return registry.get(name, version)
    final_dir.mkdir(parents=True)
    for file_name in ADAPTER_FILES:
        shutil.copy2(saved / file_name, final_dir / file_name)
    history = recorder.history
    (final_dir / "metrics.json").write_text(json.dumps(history, indent=1))
    plot_metrics(history, final_dir / "metrics.png", f"{name}@{version} ({spec.kind}, profile {spec.palate.profile})")
    meta = {
        "kind": spec.kind,
        "base_model": {"id": base["id"], "weights_sha256": base["weights_sha256"]},
        "parent": parent.ref if parent else None,
        "dataset_sha256": train.sha256,
        "dataset": {"train": train.record(), "eval": evaluation.record() if evaluation else None},
        "config": spec.as_record(),
        "lora": _lora_record(final_dir),
        "metrics": final_metrics(history),
        "timing": timing,
    }
    adapter = registry.add(name, final_dir, meta, version=version, move_alias=False)
    current = registry.aliases().get(name)
    if current is None:
        # Nothing is served under this name yet, so there is nothing to beat: the first version takes the alias.
        registry.promote(name, adapter.ref, {"reason": f"first version of '{name}': nothing served under it to "
                                                       "compare against"})
    trainer.accelerator.wait_for_everyone()
    shutil.rmtree(run_dir, ignore_errors=True)
    log(f"registered {adapter.ref} at {adapter.path}")
    if current is not None:
        log(f"'{name}' still serves {current}; `palate promote {adapter.ref} --alias {name}` moves it if "
            f"{adapter.ref} beats it on held-out margins and judged generations (or --force)")
    return adapter
