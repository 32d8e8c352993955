"""`vllm.max_lora_rank` null (the default): the largest rank in the registry, rounded up to a size vLLM accepts, so
rank-16 adapters are not padded to 32; an explicit number still works; preflight refuses a bigger adapter naming
the limit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.config import ConfigError, PalateConfig, VLLM_LORA_RANKS, auto_max_lora_rank, load_config
from server.preflight import BaseModelFacts, PreflightError, check_adapter

BASE = BaseModelFacts("tiny", "0" * 64, hidden_size=64, intermediate_size=128, num_layers=2, q_out=64, kv_out=32)


def _version(root: Path, name: str, number: int, r: int, rank_pattern: dict | None = None) -> Path:
    path = root / name / str(number)
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps(
        {"r": r, "lora_alpha": 2 * r, "target_modules": ["q_proj"], "rank_pattern": rank_pattern or {}}))
    (path / "palate.json").write_text(json.dumps({"kind": "sft", "content_sha256": "recorded"}))
    return path


def _config(root: Path, **vllm) -> PalateConfig:
    return PalateConfig.model_validate({"server": {"adapter_root": str(root), "vllm": vllm}})


def test_rounding_to_what_vllm_accepts():
    assert auto_max_lora_rank([16, 16, 8]) == 16
    assert auto_max_lora_rank([4]) == 8
    assert auto_max_lora_rank([17]) == 32
    assert auto_max_lora_rank([64]) == 64
    assert auto_max_lora_rank([]) == 32  # empty registry: the largest rank Palate trains


def test_the_rank_list_is_vllms():
    import typing

    from vllm.config.lora import MaxLoRARanks

    assert VLLM_LORA_RANKS == typing.get_args(MaxLoRARanks)


def test_null_takes_the_registrys_largest_rank(tmp_path):
    _version(tmp_path, "sft", 1, 16)
    _version(tmp_path, "dpo", 1, 8, {"model.layers.0.self_attn.q_proj": 16})
    assert _config(tmp_path).server.vllm.max_lora_rank == 16
    _version(tmp_path, "dpo", 2, 4, {"model.layers.1.self_attn.q_proj": 24})  # a rank_pattern entry counts too
    assert _config(tmp_path).server.vllm.max_lora_rank == 32
    assert _config(tmp_path / "nothing-here").server.vllm.max_lora_rank == 32


def test_an_explicit_rank_is_kept_and_a_bad_one_named(tmp_path):
    _version(tmp_path, "sft", 1, 16)
    assert _config(tmp_path, max_lora_rank=64).server.vllm.max_lora_rank == 64
    config = tmp_path / "server.yaml"
    config.write_text(f"adapter_root: {tmp_path}\nvllm:\n  max_lora_rank: 24\n")
    with pytest.raises(ConfigError, match=r"vllm\.max_lora_rank.*24 is not a LoRA rank vLLM accepts"):
        load_config(config)


def test_preflight_refuses_an_adapter_above_the_resolved_rank(tmp_path):
    _version(tmp_path / "registry", "sft", 1, 16)
    limit = _config(tmp_path / "registry").server.vllm.max_lora_rank
    big = _version(tmp_path / "later", "big", 1, 32)  # trained after the server started
    with pytest.raises(PreflightError, match="LoRA rank 32 is above the engine's max_lora_rank 16") as refused:
        check_adapter(big, BASE, limit)
    assert refused.value.check == "rank"
    assert "max_lora_rank null" in str(refused.value)
