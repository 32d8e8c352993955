"""Fixtures for training tests: a tiny 2-layer Llama with the real tokenizer, a small demo dataset, a registry.

The tiny model (2 layers, 64 wide) keeps mechanics tests to seconds on a 2-core CPU; it borrows the provisioned
base model's tokenizer and chat template so data handling is exactly what the real jobs see.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    """The provisioned embedded base model (built once from the embedded GGUF if missing)."""
    from core.config import load_model_config
    from training.provision import ProvisionError, provision

    try:
        return provision(load_model_config(), log=lambda *_: None).model_dir
    except ProvisionError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"base model unavailable: {exc}")


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
