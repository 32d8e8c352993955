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

Under several processes (`palate train ... --nproc N`, training/launch.py) every rank runs this same job: rank 0
alone validates the data, picks and locks the run directory and registers; the other ranks receive what it prepared
and wait. Two launches of the same job (same fingerprint) cannot share a run directory: the second is refused while
the first holds its lock. Two launches that finish at once on one registry take consecutive versions.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from core.config import ConfigError, engine_dtype, load_model_config, project_path
from core.registry import AdapterRegistry, AdapterVersion, RegistryError, VersionExistsError, parse_ref
from core.training_progress import progress_path
from training import distributed
from training.config import JobSpec, resolve_job
from training.data import ensure_dataset
from training.inputs import PreparedData, base_model_info, length_bucketed, prepare_data, row_length
from training.metrics import GracefulInterrupt, MetricsRecorder, ProgressReporter, final_metrics, plot_metrics
from training.onpolicy import ON_POLICY_FILE, Sampling, sampler, with_on_policy_rejections


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
    if args.length_buckets:
        train.reorder(length_bucketed(list(range(len(train.rows))), spec.trl.per_device_train_batch_size,
                                      args.length_buckets, spec.trl.seed, length=lambda i: row_length(train.rows[i])))
    log(f"data: {train.path} ({len(train.rows)} rows used of {train.report.kept} valid"
        + (f", in length buckets of {args.length_buckets} batches" if args.length_buckets else "") + ")"
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


@dataclass
class JobPlan:
    """What rank 0 decided before training; every rank trains from the same plan."""

    model_dir: Path
    base: dict
    train: PreparedData
    evaluation: PreparedData | None
    parent: AdapterVersion | None
    run_dir: Path
    last_checkpoint: str | None


class RunLock:
    """An exclusive lock on a run directory (fcntl, released when the process ends, however it ends)."""

    def __init__(self, run_dir: Path):
        run_dir.mkdir(parents=True, exist_ok=True)
        self._handle = open(run_dir / ".lock", "a+")
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._handle.close()
            raise RegistryError(f"another launch is running this same job right now (run directory {run_dir} is "
                                "locked); wait for it to finish, or change the config or data to start another run.")
        self._handle.truncate(0)
        self._handle.write(str(os.getpid()))
        self._handle.flush()

    def release(self) -> None:
        if not self._handle.closed:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()


def last_complete_checkpoint(run_dir: Path) -> str | None:
    """The newest `checkpoint-N` whose trainer_state.json was written (the Trainer writes it last), so a rank killed
    while a checkpoint was being saved leaves the previous complete one as the resume point."""
    if not run_dir.is_dir():
        return None
    done = [p for p in run_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()
            and (p / "trainer_state.json").is_file()]
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None


def _prepare(spec: JobSpec, name: str, registry: AdapterRegistry, log) -> JobPlan:
    """Rank 0's part before training: model directory, data validation, parent, run directory."""
    args = spec.palate
    model_dir = project_path(args.base_model_dir) if args.base_model_dir else load_model_config().resolved_dir()
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"base model directory {model_dir} has no config.json; run `palate model pull` first.")
    base = base_model_info(model_dir)
    train, evaluation = _resolve_inputs(spec, log)
    parent = _resolve_parent(spec, registry, base)
    run_dir = project_path(args.run_root) / name / _fingerprint(spec, base, train, evaluation, parent)
    return JobPlan(model_dir, base, train, evaluation, parent, run_dir, last_complete_checkpoint(run_dir))


TRACKERS_WITH_LOCAL_LOGS = {"tensorboard", "trackio"}


def _report_to(spec: JobSpec) -> list[str]:
    value = spec.trl.report_to
    values = [value] if isinstance(value, str) else list(value or [])
    return [v for v in values if v and v != "none"]


def _keep_tracker_logs(spec: JobSpec, run_dir: Path) -> None:
    """Point the trackers at `<run dir>/logs/`, which is registered with the adapter (tensorboard: event files,
    through TENSORBOARD_LOGGING_DIR, which transformers' callback reads when the trainer is built; trackio: its local
    SQLite store, through TRACKIO_DIR, read when trackio is imported)."""
    trackers = _report_to(spec)
    unsupported = sorted(set(trackers) - TRACKERS_WITH_LOCAL_LOGS)
    if unsupported:
        raise ConfigError(f"report_to {unsupported}: Palate keeps a run's logs with its adapter for "
                          f"{sorted(TRACKERS_WITH_LOCAL_LOGS)} (local files); use one of those or none.")
    if "tensorboard" in trackers:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "logs" / "tensorboard")
    if "trackio" in trackers:
        os.environ["TRACKIO_DIR"] = str(run_dir / "logs" / "trackio")
        spec.trl.project = spec.trl.project if spec.trl.project != "huggingface" else "palate"
        spec.trl.run_name = spec.trl.run_name or f"{spec.palate.name or spec.kind}-{run_dir.name}"


def _finish_trackers(spec: JobSpec) -> None:
    """Flush trackio's run (its writer is a background thread) so the logs registered with the adapter are whole."""
    if "trackio" in _report_to(spec) and distributed.is_main():
        import trackio

        if trackio.context_vars.current_run.get() is not None:
            trackio.finish()


def distributed_record(spec: JobSpec) -> dict:
    """World size and batch arithmetic for palate.json: effective batch = world x per-device x accumulation."""
    world, t = distributed.world_size(), spec.trl
    record = {"world_size": world, "per_device_train_batch_size": t.per_device_train_batch_size,
              "gradient_accumulation_steps": t.gradient_accumulation_steps,
              "effective_batch_size": world * t.per_device_train_batch_size * t.gradient_accumulation_steps}
    if world > 1:
        import torch.distributed as dist

        record["backend"] = dist.get_backend()
        record["launcher"] = "torch.distributed elastic (torchrun)" if "TORCHELASTIC_RUN_ID" in os.environ else "other"
    return record


def run_job(spec: JobSpec, log=print) -> AdapterVersion:
    """Run a resolved job end to end (validate data, train or resume, evaluate, register). See module docstring."""
    args = spec.palate
    name = args.name or spec.kind
    registry = AdapterRegistry(project_path(args.registry))
    say = log if distributed.is_main() else (lambda *a, **k: None)
    held: dict = {}

    def prepare_on_main() -> JobPlan:
        plan = _prepare(spec, name, registry, say)
        held["lock"] = RunLock(plan.run_dir)
        return plan

    plan = distributed.on_main_then_share(prepare_on_main)
    try:
        return _train_and_register(spec, name, registry, plan, say)
    finally:
        if "lock" in held:
            held["lock"].release()


def _train_and_register(spec: JobSpec, name: str, registry: AdapterRegistry, plan: JobPlan, log) -> AdapterVersion:
    run_dir, last_checkpoint, parent, t = plan.run_dir, plan.last_checkpoint, plan.parent, spec.trl
    spec.trl.output_dir = str(run_dir)
    _keep_tracker_logs(spec, run_dir)
    world = distributed.world_size()
    log(f"palate train {spec.kind}: profile={spec.palate.profile} -> {name}@{registry.next_version(name)}; "
        f"base={plan.base['id']} parent={parent.ref if parent else None}; max_steps={t.max_steps} "
        f"epochs={t.num_train_epochs} batch={t.per_device_train_batch_size}x{t.gradient_accumulation_steps}"
        + (f"x{world} processes" if world > 1 else "") + f" lr={t.learning_rate}"
        + (f" beta={t.beta} precompute_ref_log_probs={t.precompute_ref_log_probs}" if spec.kind == "dpo" else "")
        + f"; run dir {run_dir}")
    if last_checkpoint:
        log(f"resuming from {last_checkpoint}")
    progress = ProgressReporter(progress_path(registry.root, name), name, registry.next_version(name), spec.kind)
    if distributed.is_main():
        progress.write("starting")
    try:
        adapter = _train_evaluate_register(spec, name, registry, plan, progress, log)
    except BaseException as exc:
        if distributed.is_main():
            progress.ended(exc)
        raise
    if distributed.is_main():
        progress.fields["version"] = adapter.version
        progress.write("registered", step=adapter.meta["timing"]["global_step"], ref=adapter.ref)
    return adapter


def _train_evaluate_register(spec: JobSpec, name: str, registry: AdapterRegistry, plan: JobPlan,
                             progress: ProgressReporter, log) -> AdapterVersion:
    run_dir, last_checkpoint = plan.run_dir, plan.last_checkpoint
    model, tokenizer = load_model(spec, plan.model_dir, plan.parent)
    extra = {}
    if spec.palate.on_policy_rows:
        plan.train.rows, extra["on_policy"] = _on_policy_rejections(spec, model, tokenizer, plan, log)
    recorder = MetricsRecorder(run_dir / "metrics.json")
    if last_checkpoint:  # keep the curve of the interrupted run: its log history is in the checkpoint
        state = json.loads((Path(last_checkpoint) / "trainer_state.json").read_text())
        recorder.history = [dict(e) for e in state.get("log_history", [])]
    interrupt = GracefulInterrupt()
    trainer = make_trainer(spec, model, tokenizer, plan.train, plan.evaluation, [recorder, interrupt, progress])
    started = time.time()
    try:
        result = trainer.train(resume_from_checkpoint=last_checkpoint)
    finally:
        interrupt.restore()
    if interrupt.interrupted:
        raise TrainingInterrupted(f"interrupted at step {trainer.state.global_step}; checkpoint saved in {run_dir}. "
                                  "Run the same command again to resume.")
    train_seconds = time.time() - started
    evaluation_record = None
    if plan.evaluation is not None:
        evaluation_record = evaluate_held_out(trainer, spec)  # logged through the recorder as eval_* entries
    eval_seconds = time.time() - started - train_seconds
    _finish_trackers(spec)
    timing = {"train_seconds": round(train_seconds, 1), "eval_seconds": round(eval_seconds, 1),
              "global_step": result.global_step,
              "resumed_from": Path(last_checkpoint).name if last_checkpoint else None}
    return _register(spec, name, registry, trainer, recorder, plan.base, plan.train, plan.evaluation, plan.parent,
                     run_dir, timing, log, {"evaluation": evaluation_record, **extra})


def _on_policy_rejections(spec: JobSpec, model, tokenizer, plan: JobPlan, log) -> tuple[list[dict], dict]:
    """The training rows with the parent's own wrong answers as rejected (training/onpolicy.py), sampled on rank 0
    (kept in the run directory, so a resumed job reuses them) and shared with the other ranks."""
    import torch

    args = spec.palate
    # Rows past what the job trains would be sampled for nothing: max_steps x the effective batch, when set.
    trained = spec.trl.max_steps * distributed_record(spec)["effective_batch_size"] if spec.trl.max_steps > 0 else None
    rows = min(args.on_policy_rows, trained) if trained else args.on_policy_rows
    if rows < args.on_policy_rows:
        log(f"on-policy pairs: on_policy_rows={args.on_policy_rows}, but {spec.trl.max_steps} steps train only "
            f"{trained} rows: sampling those")

    def sample():
        # A merged copy in the engine's dtype samples faster than the training copy; without a parent, that copy.
        sampling_model = (sampler(plan.model_dir, plan.parent.path, engine_dtype("auto", torch.cuda.is_available()),
                                  model.device) if plan.parent is not None else model)
        return with_on_policy_rejections(
            sampling_model, tokenizer, plan.train.rows, plan.train.listings, rows, Sampling.arena(),
            spec.trl.seed, plan.run_dir / ON_POLICY_FILE, log, samples=args.on_policy_samples,
            chosen_from=args.on_policy_chosen, kinds=plan.train.kinds, keep_kinds=args.on_policy_keep_kinds,
            complete=args.on_policy_complete)

    return distributed.on_main_then_share(sample)


def evaluate_held_out(trainer, spec: JobSpec) -> dict:
    """Score the whole held-out split once, on every rank together (training/distributed.py `eval_plan`)."""
    dataset = trainer.eval_dataset
    plan = distributed.eval_plan(len(dataset), distributed.world_size(), spec.trl.per_device_eval_batch_size)
    if plan.world > 1:
        from datasets import concatenate_datasets

        trainer.args.per_device_eval_batch_size = plan.batch
        if plan.repeats > 1:
            dataset = concatenate_datasets([dataset] * plan.repeats)
        trainer.evaluate(eval_dataset=dataset)
    else:
        trainer.evaluate()
    return plan.record()


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def _register(spec, name, registry, trainer, recorder, base, train, evaluation, parent, run_dir, timing, log,
              extra: dict):
    saved = run_dir / "saved"
    if distributed.is_main():
        shutil.rmtree(saved, ignore_errors=True)
    distributed.barrier()
    # save_model gathers sharded weights under FSDP/DeepSpeed (a collective: every rank calls it). PEFT writes the
    # trained "default" adapter at the top level and the frozen "ref" copy in a subfolder, which is not kept.
    trainer.save_model(str(saved))
    world = distributed_record(spec)
    # Rank 0 registers; the others wait for the reference it registered (or its error).
    ref = distributed.on_main_then_share(
        lambda: _register_main(spec, name, registry, recorder, base, train, evaluation, parent, run_dir, timing, log,
                               {"distributed": world, **extra}).ref)
    adapter_name, version = parse_ref(ref)
    return registry.get(adapter_name, version)


def _stage_final(spec, name, version, recorder, run_dir) -> Path:
    """run_dir/final: the adapter files, metrics.json, metrics.png and the trackers' logs/ - what registry.add takes."""
    saved, final_dir = run_dir / "saved", run_dir / "final"
    shutil.rmtree(final_dir, ignore_errors=True)
    final_dir.mkdir(parents=True)
    for file_name in ADAPTER_FILES:
        shutil.copy2(saved / file_name, final_dir / file_name)
    if (run_dir / "logs").is_dir():
        shutil.copytree(run_dir / "logs", final_dir / "logs")
    if (run_dir / ON_POLICY_FILE).is_file():  # what DPO pushed down: the parent's own answers, with the reasons
        shutil.copy2(run_dir / ON_POLICY_FILE, final_dir / ON_POLICY_FILE)
    history = recorder.history
    (final_dir / "metrics.json").write_text(json.dumps(history, indent=1))
    plot_metrics(history, final_dir / "metrics.png", f"{name}@{version} ({spec.kind}, profile {spec.palate.profile})")
    return final_dir


def _register_main(spec, name, registry, recorder, base, train, evaluation, parent, run_dir, timing, log, extra):
    version = registry.next_version(name)
    final_dir = _stage_final(spec, name, version, recorder, run_dir)
    history = recorder.history
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
        **extra,
    }
    while True:  # another launch may take this version between next_version and the atomic rename: take the next
        try:
            adapter = registry.add(name, final_dir, meta, version=version, move_alias=False)
            break
        except VersionExistsError:
            log(f"{name}@{version} was registered by another launch meanwhile; registering as {name}@{version + 1}")
            version = registry.next_version(name)
            final_dir = _stage_final(spec, name, version, recorder, run_dir)
    current = registry.aliases().get(name)
    if current is None:
        # Nothing is served under this name yet, so there is nothing to beat: the first version takes the alias.
        registry.promote(name, adapter.ref, {"reason": f"first version of '{name}': nothing served under it to "
                                                       "compare against"})
    shutil.rmtree(run_dir, ignore_errors=True)
    log(f"registered {adapter.ref} at {adapter.path}")
    if current is not None:
        log(f"'{name}' still serves {current}; `palate promote {adapter.ref} --alias {name}` moves it if "
            f"{adapter.ref} beats it on held-out margins and judged generations (or --force)")
    return adapter
