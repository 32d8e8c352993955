"""Checks an adapter must pass before it reaches the engine.

Each check returns a clear message saying what is wrong and how to fix it. A failed check raises `PreflightError`
and nothing is sent to the engine, so a bad adapter can never take the server down. Checks: a recorded content
hash that the files match, the base model, rank, target modules, no `modules_to_save`, readable safetensors whose
shapes fit the base model and whose values are finite and within float16's range - lora_B after the LoRA scaling
(lora_alpha / r), which vLLM folds into it when it loads the adapter. Tensors are read one at a time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from core.lora import SERVABLE_TARGET_MODULES, lora_rule_problem
from core.registry import META_FILE, adapter_content_hash

# The largest weight magnitude preflight accepts: float16's largest finite value. A LoRA weight beyond it becomes
# inf in a float16 engine, and no training run produces one; inside vLLM one request's non-finite activations
# corrupt state shared with other models' requests, so such adapters must never load.
MAX_ABS_WEIGHT = 65504.0


class PreflightError(ValueError):
    def __init__(self, check: str, message: str):
        super().__init__(f"preflight check '{check}' failed: {message}")
        self.check = check


@dataclass(frozen=True)
class BaseModelFacts:
    """What preflight needs to know about the served base model."""

    id: str
    weights_sha256: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    q_out: int
    kv_out: int

    @classmethod
    def from_model_dir(cls, model_dir: Path, model_id: str, weights_sha256: str) -> "BaseModelFacts":
        config = json.loads((Path(model_dir) / "config.json").read_text())
        hidden = config["hidden_size"]
        heads = config["num_attention_heads"]
        head_dim = config.get("head_dim") or hidden // heads
        kv_heads = config.get("num_key_value_heads", heads)
        return cls(model_id, weights_sha256, hidden, config["intermediate_size"], config["num_hidden_layers"],
                   heads * head_dim, kv_heads * head_dim)

    def module_shape(self, module: str) -> tuple[int, int]:
        """(in_features, out_features) of a Llama-style linear layer."""
        return {
            "q_proj": (self.hidden_size, self.q_out), "k_proj": (self.hidden_size, self.kv_out),
            "v_proj": (self.hidden_size, self.kv_out), "o_proj": (self.q_out, self.hidden_size),
            "gate_proj": (self.hidden_size, self.intermediate_size),
            "up_proj": (self.hidden_size, self.intermediate_size),
            "down_proj": (self.intermediate_size, self.hidden_size),
        }[module]


def _adapter_config(path: Path) -> dict:
    config_path = path / "adapter_config.json"
    if not config_path.is_file():
        raise PreflightError("files", f"{path.name} has no adapter_config.json; point at a saved PEFT adapter directory.")
    try:
        return json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise PreflightError("files", f"adapter_config.json is not valid JSON ({exc}).") from None


def check_adapter(path: Path, base: BaseModelFacts, max_lora_rank: int) -> dict:
    """Run every check on the adapter directory `path`; return its adapter_config on success."""
    path = Path(path)
    config = _adapter_config(path)
    meta_path = path / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if not meta.get("content_sha256"):
        # Without a recorded hash nothing ties the files served to the files that were checked and trained.
        raise PreflightError(
            "content_hash", f"{META_FILE} records no content_sha256, so the adapter files cannot be verified. "
            "Register the adapter with `palate adapters add PATH --name NAME`, which checks it and records one.")

    recorded_base = (meta.get("base_model") or {}).get("weights_sha256")
    if recorded_base and recorded_base != base.weights_sha256:
        raise PreflightError(
            "base_model",
            f"the adapter was trained on another base model (weights {recorded_base[:12]}…, "
            f"{(meta.get('base_model') or {}).get('id', '?')}); this server runs {base.id} ({base.weights_sha256[:12]}…). "
            "Retrain it on this base model or serve it with its own base.")

    problem = lora_rule_problem(config, max_lora_rank, limit_name="the engine's max_lora_rank")
    if problem:
        check, message = problem
        if check == "rank":
            message += (". Retrain with a smaller r, or restart the server: with "
                        "server.vllm.max_lora_rank null (the default) it fits the largest rank in the registry at "
                        "start-up; a number there is a fixed limit.")
        raise PreflightError(check, message + ("" if message.endswith(".") else "."))

    weights = path / "adapter_model.safetensors"
    if not weights.is_file():
        raise PreflightError("files", "adapter_model.safetensors is missing (only safetensors adapters are served).")
    _check_weights(weights, base, lora_scale(config))

    expected = meta["content_sha256"]
    if adapter_content_hash(path) != expected:
        raise PreflightError(
            "content_hash", "the adapter files do not match the content hash in palate.json: they changed after "
            "registration or were corrupted. Re-register or retrain the adapter.")
    return config


def lora_scale(config: dict) -> float:
    """The largest factor PEFT (and vLLM, folding it into lora_B) multiplies an update by: lora_alpha / r, or
    lora_alpha / sqrt(r) with rsLoRA, over the default and every per-module `rank_pattern` / `alpha_pattern`."""
    rank, alpha = float(config.get("r") or 8), float(config.get("lora_alpha") or 8)
    ranks = [rank, *map(float, (config.get("rank_pattern") or {}).values())]
    alphas = [alpha, *map(float, (config.get("alpha_pattern") or {}).values())]
    root = (lambda r: r ** 0.5) if config.get("use_rslora") else (lambda r: r)
    return max(abs(a) / root(max(r, 1.0)) for a in alphas for r in ranks)


def _check_weights(weights: Path, base: BaseModelFacts, scale: float = 1.0) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as handle:
            for key in handle.keys():
                tensor = handle.get_tensor(key)  # one tensor at a time; reads the bytes: catches truncation too
                _check_shape(key, tuple(tensor.shape), base)
                _check_finite(key, tensor, scale if "lora_B" in key else 1.0)
    except PreflightError:
        raise
    except Exception as exc:
        raise PreflightError("safetensors", f"adapter_model.safetensors is unreadable ({exc}); the file is "
                                            "corrupted or truncated. Re-copy or retrain the adapter.") from None


def _check_finite(key: str, tensor, scale: float = 1.0) -> None:  # noqa: ANN001 - a torch tensor
    """Refuse NaN, infinite and out-of-range values (MAX_ABS_WEIGHT, after `scale`), naming the tensor."""
    import torch

    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        nan = int(torch.isnan(tensor).sum())
        inf = int((~finite).sum()) - nan
        raise PreflightError("finite", f"tensor {key} holds {nan} NaN and {inf} infinite value(s); the adapter is "
                                       "numerically broken (diverged training?). Retrain it or use an earlier version.")
    largest = float(tensor.abs().max()) if tensor.numel() else 0.0
    if largest > MAX_ABS_WEIGHT:
        raise PreflightError("finite", f"tensor {key} holds a value of magnitude {largest:.3g}, above "
                                       f"{MAX_ABS_WEIGHT:g}; it would overflow to infinity in the engine. Retrain it.")
    if largest * scale > MAX_ABS_WEIGHT:
        raise PreflightError("finite", f"tensor {key} times the LoRA scaling {scale:.3g} (lora_alpha / r in "
                                       f"adapter_config.json) reaches magnitude {largest * scale:.3g}, above "
                                       f"{MAX_ABS_WEIGHT:g}; it would overflow to infinity in the engine. Fix lora_alpha "
                                       "or retrain it.")


def _check_shape(key: str, shape: tuple[int, ...], base: BaseModelFacts) -> None:
    parts = key.split(".")
    module = next((p for p in parts if p in SERVABLE_TARGET_MODULES), None)
    layer = next((int(p) for p in parts if p.isdigit()), None)
    if module is None or layer is None or len(shape) != 2:
        return
    if layer >= base.num_layers:
        raise PreflightError("base_model", f"{key} refers to layer {layer}, but {base.id} has {base.num_layers} "
                                           "layers: the adapter was made for another base model.")
    in_features, out_features = base.module_shape(module)
    if "lora_A" in parts and shape[1] != in_features or "lora_B" in parts and shape[0] != out_features:
        raise PreflightError("base_model", f"{key} has shape {list(shape)}, which does not fit {base.id}'s {module} "
                                           f"({in_features}->{out_features}): the adapter was made for another base model.")
