"""Fixtures for the eval tests: the real base model (and, from tests/conftest.py, a small random LoRA adapter)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def base_dir(base_model_dir) -> Path:
    return base_model_dir


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
