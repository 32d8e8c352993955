"""Subcommands of the training package.

    palate model pull                         provision the base model (idempotent)
    palate data build [--seed 0] [--out DIR]  write the demo listings dataset (4 JSONL files)
    palate data validate FILE --kind sft|dpo  line-numbered report; exit 2 if the file is unusable
    palate train sft|dpo [flags]              one job; flags are TRL/LoRA/Palate fields (`palate train sft --help`)
    palate train sft|dpo --nproc N [--accelerate-config fsdp|zero2|zero3|PATH] [flags]
                                              the same job under N torch.distributed processes (training/launch.py)
    palate train all --profile quick --if-missing [--nproc N] [-- FLAGS]
                                              sft then dpo, each in its own process, skipping what the
                                              registry has; FLAGS go to both jobs
    palate adapters list                      the registry: versions, kinds, parents, headline metrics
    palate adapters show NAME@V               one version's training summary and where its curves are
    palate adapters add PATH --name N         register an adapter trained elsewhere (kind external)

Heavy imports (torch, TRL) happen inside handlers so `palate --help` stays instant.
"""

from __future__ import annotations

import argparse
import sys
import time


def register(subparsers: argparse._SubParsersAction) -> None:
    model = subparsers.add_parser("model", help="Provision the base model.")
    model_sub = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    pull = model_sub.add_parser("pull", help="Build the base model directory from the embedded GGUF (idempotent).")
    pull.add_argument("--config", default=None, help="Model config YAML (default: configs/model.yaml).")
    pull.add_argument("--force", action="store_true", help="Rebuild even if an intact copy exists.")
    pull.set_defaults(handler=_model_pull)

    data = subparsers.add_parser("data", help="Build or validate training data.")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    build = data_sub.add_parser("build", help="Write the demo listings dataset (SFT + preference pairs, train/eval).")
    build.add_argument("--seed", type=int, default=0, help="Dataset seed (same seed, same bytes).")
    build.add_argument("--out", default="data/listings", help="Output directory.")
    build.add_argument("--listings", type=int, default=800, help="Number of distinct listings.")
    build.set_defaults(handler=_data_build)
    check = data_sub.add_parser("validate", help="Validate a JSONL file for SFT or DPO; exit 2 if unusable.")
    check.add_argument("file")
    check.add_argument("--kind", choices=["sft", "dpo"], required=True)
    check.set_defaults(handler=_data_validate)

    train = subparsers.add_parser("train", help="Train LoRA adapters (SFT, then DPO) with TRL.")
    train_sub = train.add_subparsers(dest="train_command", metavar="JOB", required=True)
    for kind in ("sft", "dpo"):
        # Every flag goes to TRL's parser (it owns --help); '+' as prefix keeps argparse from reading '--' flags.
        job = train_sub.add_parser(kind, help=f"Train a {kind.upper()} adapter (flags: `palate train {kind} --help`).",
                                   add_help=False, prefix_chars="+")
        job.add_argument("flags", nargs=argparse.REMAINDER)
        job.set_defaults(handler=_train_job, job_kind=kind)
    every = train_sub.add_parser("all", help="Train sft then dpo (what `make demo` runs).")
    every.add_argument("--profile", default="quick", choices=["quick", "full"])
    every.add_argument("--if-missing", action="store_true", help="Skip a job whose alias is already in the registry.")
    every.add_argument("--registry", default="adapters", help="Adapter registry root.")
    every.add_argument("--nproc", type=int, default=None, help="Train each job under N torch.distributed processes.")
    every.add_argument("--accelerate-config", default=None,
                       help="GPU launch config: fsdp, zero2, zero3 (configs/accelerate/) or a path.")
    every.add_argument("job_flags", nargs="*", metavar="-- FLAG",
                       help="After `--`: flags for both jobs, as `palate train sft/dpo` take them (--max_steps 4).")
    every.set_defaults(handler=_train_all)

    adapters = subparsers.add_parser("adapters", help="List or add adapters in the registry.")
    adapters_sub = adapters.add_subparsers(dest="adapters_command", metavar="ACTION", required=True)
    listing = adapters_sub.add_parser("list", help="Show every adapter version with its headline metrics.")
    listing.add_argument("--registry", default="adapters", help="Adapter registry root.")
    listing.set_defaults(handler=_adapters_list)
    show = adapters_sub.add_parser("show", help="One version's training summary and where its curves are.")
    show.add_argument("ref", help="name@version, a name (its alias, else its latest version) or an alias.")
    show.add_argument("--registry", default="adapters", help="Adapter registry root.")
    show.set_defaults(handler=_adapters_show)
    add = adapters_sub.add_parser("add", help="Register a LoRA adapter trained elsewhere (validated, kind external).")
    add.add_argument("path", help="PEFT adapter directory (adapter_config.json + adapter_model.safetensors).")
    add.add_argument("--name", required=True, help="Registry name; the version is the next free one.")
    add.add_argument("--registry", default="adapters", help="Adapter registry root.")
    add.add_argument("--model-dir", default=None, help="Base model directory (default: configs/model.yaml).")
    add.set_defaults(handler=_adapters_add)


def _model_pull(args: argparse.Namespace) -> int:
    from core.config import load_model_config
    from training.provision import ProvisionError, provision

    cfg = load_model_config(args.config)
    try:
        result = provision(cfg, force=args.force)
    except ProvisionError as exc:
        print(f"palate model pull: {exc}", file=sys.stderr)
        return 2
    print(result.message)
    print(f"weights sha256: {result.weights_sha256}")
    return 0


def _data_build(args: argparse.Namespace) -> int:
    from training.data import build_dataset
    from core.config import project_path

    paths = build_dataset(project_path(args.out), seed=args.seed, n_listings=args.listings)
    for name, path in paths.items():
        print(f"{name:12s} {sum(1 for _ in open(path)):6d} rows  {path}")
    return 0


def _data_validate(args: argparse.Namespace) -> int:
    from training.validate import DataValidationError, validate_file

    try:
        report = validate_file(args.file, args.kind)
    except DataValidationError as exc:
        print(f"palate data validate: {exc}", file=sys.stderr)
        return 2
    print(report.summary(), file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 2


def _run_job(kind: str, flags: list[str]) -> int:
    import os

    from core.registry import RegistryError
    from training.config import resolve_job
    from training.distributed import MainRankFailed
    from training.jobs import TrainingInterrupted, run_job
    from training.launch import inside_launch, launch_job, split_launch_flags
    from training.validate import DataValidationError

    nproc, accelerate_config, flags = split_launch_flags(flags)
    if inside_launch() and (nproc or accelerate_config):
        print(f"palate train {kind}: --nproc/--accelerate-config given inside a launched rank; "
              "the launcher has already started the processes.", file=sys.stderr)
        return 2
    if accelerate_config is not None or (nproc or 1) > 1:
        return launch_job(kind, flags, nproc or 1, accelerate_config)
    main = os.environ.get("RANK", "0") == "0"  # under a launcher only rank 0 reports; the launcher names failures
    report = (lambda text: print(text, file=sys.stderr)) if main else (lambda text: None)
    try:
        adapter = run_job(resolve_job(kind, argv=flags))
    except DataValidationError as exc:
        report(f"palate train {kind}: invalid data\n{exc}")
        return 2
    except RegistryError as exc:
        report(f"palate train {kind}: {exc}")
        return 2
    except MainRankFailed:
        return 2  # rank 0 printed the reason
    except TrainingInterrupted as exc:
        report(f"palate train {kind}: {exc}")
        return 130
    if main:
        print(_describe(adapter))
    return 0


def _train_job(args: argparse.Namespace) -> int:
    return _run_job(args.job_kind, list(args.flags))


def _train_all(args: argparse.Namespace) -> int:
    from core.registry import AdapterRegistry
    from core.config import project_path

    registry = AdapterRegistry(project_path(args.registry))
    for kind in ("sft", "dpo"):
        existing = registry.aliases().get(kind) or (registry.versions(kind) and f"{kind}@{registry.versions(kind)[-1]}")
        if args.if_missing and existing:
            print(f"palate train all: {existing} is in the registry - reusing it.")
            continue
        print(f"palate train all: training {kind} (profile {args.profile}) ...", flush=True)
        started = time.time()
        launch = ([f"--nproc={args.nproc}"] if args.nproc else []) + (
            [f"--accelerate-config={args.accelerate_config}"] if args.accelerate_config else [])
        code = _job_in_own_process(kind, ["--profile", args.profile, "--registry", args.registry, *launch,
                                          *args.job_flags])
        if code:
            return code
        print(f"palate train all: {kind} done in {time.time() - started:.0f}s wall", flush=True)
    return 0


def _job_in_own_process(kind: str, flags: list[str]) -> int:
    """`palate train KIND FLAGS` in a fresh Python process, so each job starts from a clean interpreter: measured
    on 2 CPU cores, the DPO steps ran 1.7x slower after SFT in the same process (README, "Quick profile timing").

    The child has its own session, so a terminal's Ctrl-C reaches it only through here: each SIGINT this process
    gets is passed on once (first: checkpoint and stop; second: abort, as for a job run directly), and the child
    gets SIGINT if this process dies outright."""
    import signal
    import subprocess

    from core.child_process import interrupt_when_parent_dies

    child = subprocess.Popen([sys.executable, "-m", "core.cli", "train", kind, *flags], start_new_session=True,
                             preexec_fn=interrupt_when_parent_dies)
    previous = signal.signal(signal.SIGINT, lambda signum, frame: child.send_signal(signal.SIGINT))
    try:
        code = child.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as a shell reports it


def headline(meta: dict) -> str:
    """The metrics worth one glance: eval loss for SFT, eval reward accuracy and margin for DPO."""
    evaluation = (meta.get("metrics") or {}).get("eval") or {}
    train = (meta.get("metrics") or {}).get("train") or {}
    parts = []
    if "eval_rewards/accuracies" in evaluation:
        parts.append(f"eval_acc={evaluation['eval_rewards/accuracies']:.3f}")
        parts.append(f"eval_margin={evaluation.get('eval_rewards/margins', float('nan')):.2f}")
    elif "eval_loss" in evaluation:
        parts.append(f"eval_loss={evaluation['eval_loss']:.3f}")
    if "train_loss" in train:
        parts.append(f"train_loss={train['train_loss']:.3f}")
    return " ".join(parts) or "-"


def _describe(adapter) -> str:
    return f"{adapter.ref} ({adapter.kind}, parent {adapter.parent or '-'}) {headline(adapter.meta)} -> {adapter.path}"


def _adapters_list(args: argparse.Namespace) -> int:
    from core.registry import AdapterRegistry
    from core.config import project_path

    registry = AdapterRegistry(project_path(args.registry))
    versions = registry.all_versions()
    if not versions:
        print(f"no adapters in {registry.root}; `palate train all --profile quick` trains sft and dpo.")
        return 0
    aliases: dict[str, list[str]] = {}
    for alias, target in registry.aliases().items():
        aliases.setdefault(target, []).append(alias)
    rows = [("ADAPTER", "KIND", "PARENT", "CREATED", "ALIASES", "METRICS")]
    for adapter in versions:
        rows.append((adapter.ref, adapter.kind, adapter.parent or "-", str(adapter.meta.get("created", "-")),
                     ",".join(sorted(aliases.get(adapter.ref, []))) or "-", headline(adapter.meta)))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[5])
    return 0


def _adapters_show(args: argparse.Namespace) -> int:
    from core.registry import AdapterRegistry, RegistryError
    from core.config import project_path
    from training.summary import adapter_summary

    registry = AdapterRegistry(project_path(args.registry))
    try:
        adapter = registry.resolve(args.ref)
    except RegistryError as exc:
        print(f"palate adapters show: {exc}", file=sys.stderr)
        return 2
    print(adapter_summary(registry, adapter))
    return 0


def _adapters_add(args: argparse.Namespace) -> int:
    from pathlib import Path

    from core.config import load_model_config
    from core.registry import AdapterRegistry, RegistryError
    from training.external import add_external
    from core.config import project_path

    model_dir = project_path(args.model_dir) if args.model_dir else load_model_config().resolved_dir()
    try:
        adapter = add_external(AdapterRegistry(project_path(args.registry)), Path(args.path), args.name, model_dir)
    except RegistryError as exc:
        print(f"palate adapters add: {exc}", file=sys.stderr)
        return 2
    print(f"registered {_describe(adapter)}")
    return 0
