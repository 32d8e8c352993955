"""Typed training config: TRL's own `SFTConfig` / `DPOConfig` and `ModelConfig` (LoRA fields), plus Palate's few
job arguments, parsed by TRL's `TrlParser` from YAML defaults, a profile, and command-line overrides.

Precedence, lowest first: dataclass defaults < top-level YAML keys < `profiles.<profile>` in the YAML < `overrides`
passed by a Python caller < command-line flags. Every TRL field is a flag (`--max_steps 2`, `--beta 0.2`).
An unknown key in a YAML file or on the command line is an error that names the key.

LoRA settings the vLLM server could not serve are refused here, before a run starts (the rules: `core.lora`).
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from core.config import CONFIG_DIR, ConfigError, cpu_has_bf16_instructions, read_yaml
from core.lora import MAX_TRAINED_LORA_RANK, SERVABLE_TARGET_MODULES, lora_rule_problem, target_list

log = logging.getLogger("palate.train")

JobKind = Literal["sft", "dpo"]
PROFILES = ("quick", "full")


@dataclass
class PalateArgs:
    """Palate's job arguments (the TRL and LoRA fields come from SFTConfig/DPOConfig and ModelConfig)."""

    profile: str = field(default="quick", metadata={"help": "Recipe profile from the YAML: quick (CPU, minutes) or full (GPU)."})
    data: str | None = field(default=None, metadata={"help": "Training JSONL (TRL standard or conversational format). "
                                                      "Default: the demo listings dataset (built if missing)."})
    eval_data: str | None = field(default=None, metadata={"help": "Held-out JSONL for the final eval metrics. Default: "
                                                           "the demo eval split when --data is not given."})
    name: str | None = field(default=None, metadata={"help": "Registry name of the new adapter (default: sft or dpo)."})
    parent: str | None = field(default=None, metadata={"help": "DPO only (--from): adapter to start from and use as "
                                                        "the frozen reference; 'base' starts a fresh LoRA. Default: sft."})
    registry: str = field(default="adapters", metadata={"help": "Adapter registry root."})
    base_model_dir: str | None = field(default=None, metadata={"help": "Base model directory (default: configs/model.yaml)."})
    dataset_dir: str = field(default="data/listings", metadata={"help": "Where the demo dataset lives / is built."})
    dataset_seed: int = field(default=0, metadata={"help": "Seed of the demo dataset when it must be built."})
    allow_invalid_rows: bool = field(default=False, metadata={"help": "Train on the valid rows of a file with invalid "
                                                               "ones (they are reported and counted), instead of failing."})
    max_train_rows: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})
    max_eval_rows: int | None = field(default=None, metadata={"help": "Use only the first N eval rows."})
    length_buckets: int | None = field(default=None, metadata={"help": "Batch rows of similar length (less padding "
                                       "to compute): shuffle the training rows with the seed, then sort each run of N "
                                       "batches by length. Trains in that order (train_sampling_strategy becomes "
                                       "sequential)."})
    run_root: str = field(default="runs", metadata={"help": "Where checkpoints live while a job runs (resume source)."})
    on_policy_rows: int = field(default=0, metadata={"help": "DPO only: sample the parent's own answers to the first "
                                "N training prompts at the arena's sampling (configs/arena.yaml); each answer the "
                                "dataset's grounding check finds wrong (invented, missing facts, cut by the length "
                                "limit) becomes that row's rejected answer (training/onpolicy.py). Needs rows with "
                                "`listing` facts. 0: the written near-misses only."})
    on_policy_samples: int = field(default=1, metadata={"help": "DPO with on_policy_rows: answers sampled per prompt "
                                   "(the rejected one is the one with the most reasons). Read only when "
                                   "on_policy_rows > 0."})
    on_policy_chosen: str = field(default="dataset", metadata={"help": "DPO with on_policy_rows: 'dataset' keeps the "
                                  "row's written chosen answer (SPIN); 'sample' pairs two of the parent's own answers, "
                                  "one the grounding check finds nothing false in (fewest facts left out) over one "
                                  "it finds something false in or that was cut; a row without both keeps its "
                                  "written pair. 'sample' needs on_policy_samples >= 2. Read only when "
                                  "on_policy_rows > 0."})
    on_policy_keep_kinds: list[str] = field(default_factory=list, metadata={"help": "DPO with on_policy_rows: rows "
                                            "of these near-miss kinds (the dataset rows' `kind`, e.g. omits_facts "
                                            "drops_a_fact) keep their written pair and are not sampled. Read only "
                                            "when on_policy_rows > 0."})
    on_policy_complete: bool = field(default=False, metadata={"help": "DPO with on_policy_chosen 'sample': a row "
                                     "with no right-over-wrong pair whose right answers cover different numbers of "
                                     "facts trains on the most complete right answer over the least complete one "
                                     "(nothing false on either side; the pair differs in the facts left out)."})


@dataclass
class JobSpec:
    """A fully resolved job: what `training.jobs.run_job` needs."""

    kind: JobKind
    palate: PalateArgs
    trl: object  # SFTConfig | DPOConfig
    model: object  # trl.ModelConfig (LoRA fields)
    config_path: Path | None

    def as_record(self) -> dict:
        """JSON-ready resolved config for palate.json."""
        from dataclasses import asdict

        trl = {k: v for k, v in self.trl.to_dict().items() if k not in {"output_dir", "logging_dir", "hub_token"}}
        model = {k: v for k, v in asdict(self.model).items() if k.startswith("lora_") or k in {"use_peft", "dtype"}}
        return {"kind": self.kind, "config_file": str(self.config_path) if self.config_path else None,
                "palate": asdict(self.palate), "trl": trl, "model": model}


def default_config_path(kind: JobKind) -> Path:
    return CONFIG_DIR / "train" / f"{kind}.yaml"


def trl_config_class(kind: JobKind):
    from trl import DPOConfig, SFTConfig

    return SFTConfig if kind == "sft" else DPOConfig


def make_parser(kind: JobKind):
    """TrlParser over (PalateArgs, SFTConfig|DPOConfig, ModelConfig)."""
    from trl import ModelConfig, TrlParser

    return TrlParser((PalateArgs, trl_config_class(kind), ModelConfig), prog=f"palate train {kind}")


def load_recipe(path: Path, profile: str) -> dict:
    """YAML top-level keys merged with `profiles.<profile>`; errors name the file and the profile."""
    data = read_yaml(path)
    profiles = data.pop("profiles", {}) or {}
    if not isinstance(profiles, dict):
        raise ConfigError(f"{path}: 'profiles' must map profile names to settings.")
    if profile not in profiles:
        raise ConfigError(f"{path}: no profile '{profile}' (profiles defined: {', '.join(profiles) or 'none'}).")
    merged = dict(data)
    merged.update(profiles[profile] or {})
    merged["profile"] = profile
    return merged


def recipe_unknown_keys(kind: JobKind, path: Path, profile: str) -> list[str]:
    """Keys of a recipe profile that no TRL/LoRA/Palate field accepts (checked without building the configs, so a
    GPU profile can be checked on a CPU machine, where TrainingArguments refuses bf16)."""
    unknown = make_parser(kind).set_defaults_with_config(**load_recipe(path, profile))
    return sorted({item.lstrip("-") for item in unknown if item.startswith("--")})


def _split_config_and_profile(argv: list[str]) -> tuple[str | None, str | None, list[str]]:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    pre.add_argument("--profile", default=None)
    known, rest = pre.parse_known_args(argv)
    return known.config, known.profile, rest


def resolve_job(kind: JobKind, argv: list[str] | None = None, config: Path | str | None = None,
                profile: str | None = None, overrides: dict | None = None) -> JobSpec:
    """Parse a job from YAML + profile + overrides + argv (flags as on the command line, `--from` accepted)."""
    argv = ["--parent" if a == "--from" else a for a in (argv or [])]
    cli_config, cli_profile, rest = _split_config_and_profile(argv)
    config_path = Path(cli_config or config or default_config_path(kind))
    profile = cli_profile or profile or (overrides or {}).get("profile") or "quick"
    values = load_recipe(config_path, profile)
    values.update(overrides or {})
    values.setdefault("output_dir", "runs/pending")  # replaced by the job's run directory
    rest = resolve_auto_bf16(values, rest)

    parser = make_parser(kind)
    unknown = parser.set_defaults_with_config(**values)
    if unknown:
        keys = sorted({u.lstrip("-") for u in unknown if u.startswith("--")})
        raise ConfigError(f"{config_path} (profile {profile}) or overrides: unknown key(s) {keys}; "
                          f"see `palate train {kind} --help` for the fields.")
    try:
        palate, trl, model = parser.parse_args_into_dataclasses(args=rest)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"palate train {kind}: {exc}") from exc
    spec = JobSpec(kind=kind, palate=palate, trl=trl, model=model, config_path=config_path)
    check_lora(spec)
    check_length_buckets(spec)
    check_on_policy(spec)
    return spec


def auto_bf16(cuda: bool | None = None, bf16_cpu: bool | None = None, world_size: int | None = None) -> bool:
    """What `bf16: auto` means here: bf16 mixed precision on a GPU that supports it, or on one CPU process whose
    CPU computes bf16 natively (AVX-512 BF16 / AMX: a LoRA step of the embedded model 1.5x faster than fp32, README);
    fp32 on other CPUs (bf16 emulated, slower) and for several CPU processes (gloo has no bf16 collectives)."""
    import torch

    cuda = torch.cuda.is_available() if cuda is None else cuda
    if cuda:
        return bool(torch.cuda.is_bf16_supported())
    world_size = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else world_size
    if world_size > 1:
        return False
    return cpu_has_bf16_instructions() if bf16_cpu is None else bf16_cpu


def resolve_auto_bf16(values: dict, argv: list[str]) -> list[str]:
    """Replace `bf16: auto` (YAML, overrides) or `--bf16 auto` (command line) by what `auto_bf16()` picks, before
    TRL validates the config; on CPU, bf16 also needs TRL's `use_cpu`. Returns argv with the flag resolved."""
    argv = list(argv)
    flag_at = next((i for i, a in enumerate(argv) if a == "--bf16" or a.startswith("--bf16=")), None)
    flag = None
    if flag_at is not None:
        flag = argv[flag_at].split("=", 1)[1] if "=" in argv[flag_at] else (
            argv[flag_at + 1] if flag_at + 1 < len(argv) else None)
    wanted = flag if flag is not None else values.get("bf16")
    if str(wanted).strip().lower() != "auto":
        return argv
    chosen = auto_bf16()
    if flag_at is not None:
        if "=" in argv[flag_at]:
            argv[flag_at] = f"--bf16={str(chosen).lower()}"
        else:
            argv[flag_at + 1] = str(chosen).lower()
    values["bf16"] = chosen
    import torch

    if chosen and not torch.cuda.is_available():
        values["use_cpu"] = True
    log.info("bf16: auto -> %s", "bf16 mixed precision" if chosen else "fp32")
    return argv


def check_on_policy(spec: JobSpec) -> None:
    rows = spec.palate.on_policy_rows
    if rows < 0:
        raise ConfigError(f"on_policy_rows={rows}: give a number of training rows (0 switches it off).")
    if rows and spec.kind != "dpo":
        raise ConfigError(f"on_policy_rows={rows} is a DPO setting (it replaces rejected answers); "
                          f"palate train {spec.kind} has none. Remove it.")
    samples, chosen = spec.palate.on_policy_samples, spec.palate.on_policy_chosen
    if samples < 1:
        raise ConfigError(f"on_policy_samples={samples}: give at least 1 answer per prompt.")
    if chosen not in ("dataset", "sample"):
        raise ConfigError(f"on_policy_chosen={chosen!r}: choose 'dataset' or 'sample'.")
    if chosen == "sample" and samples < 2:
        raise ConfigError(f"on_policy_chosen='sample' needs on_policy_samples >= 2 (a right and a wrong answer to "
                          f"pair); it is {samples}.")
    if spec.palate.on_policy_complete and chosen != "sample":
        raise ConfigError(f"on_policy_complete pairs two sampled answers; it needs on_policy_chosen='sample' "
                          f"(it is {chosen!r}).")
    from training.nearmiss import NEAR_MISS_KINDS

    unknown = [kind for kind in spec.palate.on_policy_keep_kinds if kind not in NEAR_MISS_KINDS]
    if unknown:
        raise ConfigError(f"on_policy_keep_kinds: unknown kind(s) {', '.join(unknown)}; the dataset's kinds are "
                          f"{', '.join(NEAR_MISS_KINDS)}.")


def check_length_buckets(spec: JobSpec) -> None:
    """`length_buckets` fixes the training order itself, so the Trainer must keep it (sequential sampling)."""
    buckets = spec.palate.length_buckets
    if buckets is None:
        return
    if buckets < 1:
        raise ConfigError(f"length_buckets={buckets}: give a number of batches (1 or more), or leave it unset.")
    if spec.trl.train_sampling_strategy not in ("random", "sequential"):
        raise ConfigError(f"length_buckets={buckets} orders the rows itself; it cannot be combined with "
                          f"train_sampling_strategy={spec.trl.train_sampling_strategy!r} (unset one of them).")
    spec.trl.train_sampling_strategy = "sequential"


def check_lora(spec: JobSpec) -> None:
    """Reject LoRA settings the vLLM server cannot serve, naming the field."""
    model = spec.model
    model.use_peft = True
    targets = target_list(model.lora_target_modules)
    if not targets:
        raise ConfigError(f"lora_target_modules is empty: choose among {sorted(SERVABLE_TARGET_MODULES)}.")
    problem = lora_rule_problem({"r": model.lora_r, "target_modules": targets,
                                 "modules_to_save": model.lora_modules_to_save}, MAX_TRAINED_LORA_RANK)
    if problem:
        check, message = problem
        field_value = {"rank": f"lora_r={model.lora_r}", "target_modules": f"lora_target_modules={targets}",
                       "modules_to_save": "lora_modules_to_save"}[check]
        raise ConfigError(f"{field_value}: {message} (the vLLM server could not serve it).")
    model.lora_target_modules = targets
