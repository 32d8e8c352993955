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
