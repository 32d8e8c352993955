"""Session fixtures shared by every test package: the real base model, real tiny adapters, a real server.

The expensive things (provisioning, two tiny training runs, one vLLM engine) happen once per test session.
"""

from __future__ import annotations

import shutil

import pytest

from tests.helpers import BASE_MODEL_DIR, LiveServer, start_server, train_tiny_adapters


def pytest_collection_modifyitems(config, items):
    """`gpu` tests need CUDA: skip them where there is none, saying so (never by accident)."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; this machine has none")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def base_model_dir():
    """The embedded base model, provisioned into models/base (idempotent: reused when intact)."""
    from core.config import load_model_config
    from training.provision import provision

    result = provision(load_model_config(), log=lambda *a: None)
    assert result.model_dir == BASE_MODEL_DIR
    return result.model_dir


@pytest.fixture(scope="session")
def random_adapter(base_model_dir, tmp_path_factory):
    """A rank-8 LoRA with random (non-zero) A and B on every attention and MLP projection, so it visibly moves
    log-probs. Returns an object with .ref and .path, like an AdapterHandle."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(base_model_dir), dtype=torch.float32)
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
def tiny_registry(base_model_dir, tmp_path_factory):
    """A registry holding real sft@1 and dpo@1 trained for two steps on the real base model."""
    root = tmp_path_factory.mktemp("registry")
    train_tiny_adapters(root)
    return root


@pytest.fixture(scope="session")
def live_server(tiny_registry, tmp_path_factory) -> LiveServer:
    """One real `palate serve --watch` (vLLM CPU engine) for the whole session, on base + sft@1 + dpo@1.

    Tests that change what it serves must put it back (or load versions of their own under new names)."""
    workdir = tmp_path_factory.mktemp("live_server")
    # Its own copy of the registry, so tests that add versions never disturb other fixtures.
    registry = workdir / "adapters"
    shutil.copytree(tiny_registry, registry)
    server = start_server(workdir, registry, args=("--watch",))
    yield server
    server.stop()
