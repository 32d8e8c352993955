"""Register a LoRA adapter trained elsewhere (`palate adapters add PATH --name N`), after checking it fits.

Checks, each failing with a message that says what is wrong:
- the directory holds `adapter_config.json` and `adapter_model.safetensors` that parse, with finite values;
- it is a LoRA adapter without `modules_to_save` and with rank <= the server's limit;
- every LoRA tensor targets a module that exists in the base model, with matching input/output sizes
  (the base model is built on the meta device: no weights are loaded).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from core.registry import AdapterRegistry, AdapterVersion, RegistryError
from core.lora import MAX_TRAINED_LORA_RANK, SERVABLE_TARGET_MODULES, lora_rule_problem
from training.inputs import base_model_info

_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")


def check_adapter(adapter_dir: Path, model_dir: Path) -> dict:
    """Validate a PEFT LoRA directory against the base model; returns its adapter_config. Raises RegistryError."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    adapter_dir = Path(adapter_dir)
    config_path, weights_path = adapter_dir / "adapter_config.json", adapter_dir / "adapter_model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise RegistryError(f"{adapter_dir}: missing {path.name}; a PEFT LoRA adapter directory is needed.")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise RegistryError(f"{config_path}: not valid JSON ({exc.msg}).") from None
    if config.get("peft_type") != "LORA":
        raise RegistryError(f"{adapter_dir}: peft_type is {config.get('peft_type')!r}; only LoRA adapters are served.")
    problem = lora_rule_problem(config, MAX_TRAINED_LORA_RANK)
    if problem:
        raise RegistryError(f"{adapter_dir}: {problem[1]}.")
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise RegistryError(f"{weights_path}: unreadable safetensors file ({exc}).") from None
    if not tensors:
        raise RegistryError(f"{weights_path}: holds no tensors.")

    with torch.device("meta"):
        base = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    modules = dict(base.named_modules())
    for key, tensor in tensors.items():
        match = _LORA_KEY.match(key)
        if not match:
            raise RegistryError(f"{weights_path}: tensor {key!r} is not a LoRA A/B weight.")
        module_name, ab = match["module"], match["ab"]
        target = modules.get(module_name)
        if target is None or not hasattr(target, "in_features"):
            raise RegistryError(f"{key}: the base model has no linear layer {module_name!r} (different base model?).")
        if module_name.rsplit(".", 1)[-1] not in SERVABLE_TARGET_MODULES:
            raise RegistryError(f"{key}: targets {module_name!r}; the server serves "
                                f"{sorted(SERVABLE_TARGET_MODULES)} only.")
        expected_dim = target.in_features if ab == "A" else target.out_features
        actual_dim = tensor.shape[1] if ab == "A" else tensor.shape[0]
        if actual_dim != expected_dim:
            raise RegistryError(f"{key}: size {tuple(tensor.shape)} does not fit {module_name} "
                                f"({target.in_features}->{target.out_features}); trained on another base model?")
        if not torch.isfinite(tensor.float()).all():
            raise RegistryError(f"{key}: contains NaN or infinite values.")
    return config


def add_external(registry: AdapterRegistry, adapter_dir: Path, name: str, model_dir: Path) -> AdapterVersion:
    """Validate `adapter_dir` against the base model in `model_dir` and register it as kind `external`."""
    config = check_adapter(adapter_dir, model_dir)
    base = base_model_info(model_dir)
    meta = {
        "kind": "external",
        "base_model": {"id": base["id"], "weights_sha256": base["weights_sha256"]},
        "parent": None,
        "source": str(Path(adapter_dir).resolve()),
        "declared_base_model": config.get("base_model_name_or_path"),
        "lora": {"r": config.get("r"), "alpha": config.get("lora_alpha"),
                 "target_modules": sorted(config.get("target_modules") or [])},
        "metrics": {},
        "dataset_sha256": None,
        "config": None,
    }
    return registry.add(name, Path(adapter_dir), meta)
