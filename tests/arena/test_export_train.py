"""Arena votes -> `palate votes export` -> DPO training -> a new registry version whose dataset is the export.

Votes come through the real arena API (fake engine); training is the real TRL DPO job on a tiny 2-layer model
sharing the real tokenizer, for one step.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.registry import AdapterRegistry


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from core.config import load_model_config
    from tests.training.conftest import make_tiny_model

    base_dir = load_model_config().resolved_dir()
    if not (base_dir / "tokenizer.json").is_file():
        pytest.skip(f"the base model is not provisioned at {base_dir} (run `palate model pull`)")
    return make_tiny_model(base_dir, tmp_path_factory.mktemp("tiny-model"))


def test_export_then_train_dpo_records_the_export_hash(fake_client, tmp_path, tiny_model, capsys):
    from core.cli import main
    from training.jobs import train_dpo
    from training.validate import validate_file

    for i in range(6):
        with fake_client.stream("POST", "/v1/arena/battles", json={"prompt": f"Describe listing number {i}"}) as r:
            lines = [line for line in r.iter_lines() if line.startswith("data: ")]
        battle_id = json.loads(lines[0][6:])["battle_id"]
        assert fake_client.post(f"/v1/arena/battles/{battle_id}/vote", json={"choice": "AB"[i % 2]}).status_code == 200

    out = tmp_path / "pairs.jsonl"
    database_url = fake_client.app.state.config.server.database_url
    assert main(["votes", "export", "--out", str(out), "--database-url", database_url]) == 0
    summary = json.loads((tmp_path / "pairs.jsonl.lint.json").read_text())
    assert summary["rows"] == 6 and validate_file(out, kind="dpo").ok

    registry_root = tmp_path / "registry"
    adapter = train_dpo(model_dir=tiny_model, data=out, registry_root=registry_root, parent="base", log=lambda *a: None,
                        overrides={"max_steps": 1, "per_device_train_batch_size": 2, "logging_steps": 1,
                                   "save_strategy": "no", "lora_r": 4, "lora_alpha": 8, "max_length": 128})
    listed = AdapterRegistry(registry_root).resolve("dpo")
    assert listed.ref == adapter.ref == "dpo@1"
    assert listed.meta["dataset_sha256"] == summary["sha256"]
    assert listed.meta["dataset"]["train"]["rows_used"] == 6
