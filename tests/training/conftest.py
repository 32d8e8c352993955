"""Fixtures for training tests: a tiny 2-layer Llama with the real tokenizer, a small demo dataset, a registry.
(`base_model_dir`, the provisioned real model, comes from tests/conftest.py.)

The tiny model (2 layers, 64 wide) keeps mechanics tests to seconds on a 2-core CPU; it borrows the provisioned
base model's tokenizer and chat template so data handling is exactly what the real jobs see.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")


def make_tiny_model(base_dir: Path, out_dir: Path, seed: int = 0) -> Path:
    """Save a randomly initialised 2-layer, 64-wide Llama sharing `base_dir`'s tokenizer, with a palate manifest."""
    import torch
    from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

    from training.data import sha256_path

    base_cfg = AutoConfig.from_pretrained(base_dir)
    config = LlamaConfig(vocab_size=base_cfg.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=base_cfg.bos_token_id, eos_token_id=base_cfg.eos_token_id,
                         pad_token_id=base_cfg.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (base_dir / name).is_file():
            shutil.copy(base_dir / name, out_dir / name)
    manifest = {"id": "tiny-llama-2l", "weights_sha256": sha256_path(out_dir / "model.safetensors")}
    (out_dir / "palate_model.json").write_text(json.dumps(manifest))
    return out_dir


@pytest.fixture(scope="session")
def tiny_model_dir(base_model_dir, tmp_path_factory) -> Path:
    return make_tiny_model(base_model_dir, tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> dict[str, Path]:
    """The demo dataset with few listings (same generator, smaller n)."""
    from training.data import build_dataset

    return build_dataset(tmp_path_factory.mktemp("listings"), seed=0, n_listings=40)


@pytest.fixture
def registry_root(tmp_path) -> Path:
    return tmp_path / "adapters"


# Settings that make a job take seconds on the tiny model: a few steps, short sequences, a big learning rate so
# the adapter visibly moves, no checkpoints unless a test asks for them.
TINY_OVERRIDES = {"max_steps": 3, "logging_steps": 1, "save_steps": 1000, "learning_rate": 5e-3,
                  "per_device_train_batch_size": 2, "per_device_eval_batch_size": 4, "max_length": 256,
                  "max_eval_rows": 4, "warmup_steps": 0, "lora_r": 8, "lora_alpha": 16}


@pytest.fixture
def tiny_overrides() -> dict:
    return dict(TINY_OVERRIDES)


@pytest.fixture(scope="session")
def trained(tiny_model_dir, small_dataset, tmp_path_factory):
    """sft@1 then dpo@1 (from sft) on the tiny model, in a session registry. Returns (registry_root, sft, dpo)."""
    from training.jobs import train_dpo, train_sft

    root = tmp_path_factory.mktemp("registry") / "adapters"
    runs = str(tmp_path_factory.mktemp("runs"))
    common = dict(model_dir=tiny_model_dir, registry_root=root, log=lambda *_: None)
    sft = train_sft(data=small_dataset["sft_train"], eval_data=small_dataset["sft_eval"],
                    overrides={**TINY_OVERRIDES, "run_root": runs}, **common)
    dpo = train_dpo(data=small_dataset["prefs_train"], eval_data=small_dataset["prefs_eval"], parent="sft",
                    overrides={**TINY_OVERRIDES, "run_root": runs}, **common)
    return root, sft, dpo
