"""Fixtures for the eval tests: the real base model and a small random LoRA adapter on it."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def base_dir(base_model_dir) -> Path:
    return base_model_dir


@pytest.fixture(scope="session")
def random_adapter(base_dir, tmp_path_factory):
    """A rank-8 LoRA with random (non-zero) A and B on every attention and MLP projection, so it visibly moves
    log-probs. Returns an object with .ref and .path, like an AdapterHandle."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                            "up_proj", "down_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.mul_(0.5)  # keep the random update moderate: noticeable but not destructive
    out = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(str(out))

    class Handle:
        ref = "rand@1"
        lora_id = 1
        path = out

    return Handle()


@pytest.fixture(scope="session")
def hf_scorer(base_dir):
    from eval.logprobs_hf import HfScorer

    return HfScorer(base_dir, dtype="float32", batch_size=4)


@pytest.fixture()
def registry_with_adapters(tmp_path, random_adapter):
    """A registry holding the random adapter as sft@1 and as dpo@1 (parent sft@1, beta 0.2) and dpo@2 (no parent)."""
    from core.registry import AdapterRegistry

    registry = AdapterRegistry(tmp_path / "adapters")
    registry.add("sft", random_adapter.path, {"kind": "sft", "dataset_sha256": "d0"})
    registry.add("dpo", random_adapter.path, {"kind": "dpo", "parent": "sft@1", "config": {"trl": {"beta": 0.2}}})
    registry.add("dpo", random_adapter.path, {"kind": "dpo", "config": {"trl": {"beta": 0.2}}})
    return registry
