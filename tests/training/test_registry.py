"""The adapter registry as training uses it: immutable versions, atomic aliases, external adapters validated."""

from __future__ import annotations

import json
import shutil

import pytest

from core.cli import main as palate
from core.registry import AdapterRegistry, RegistryError
from core.training_progress import PROGRESS_DIR
from training.external import add_external


@pytest.fixture
def registry_copy(trained, tmp_path):
    root, _, _ = trained
    copy = tmp_path / "adapters"
    shutil.copytree(root, copy)
    return AdapterRegistry(copy)


def test_overwriting_a_version_fails(registry_copy):
    sft = registry_copy.resolve("sft")
    before = (sft.path / "adapter_model.safetensors").read_bytes()
    with pytest.raises(RegistryError, match="immutable"):
        registry_copy.add("sft", sft.path, {"kind": "sft"}, version=1)
    assert (sft.path / "adapter_model.safetensors").read_bytes() == before
    assert registry_copy.verify(registry_copy.get("sft", 1)) is None
    # a new version is fine, and the alias moves to it
    again = registry_copy.add("sft", sft.path, dict(sft.meta))
    assert again.ref == "sft@2" and registry_copy.resolve("sft").ref == "sft@2"


def test_alias_file_is_replaced_atomically(registry_copy):
    registry_copy.set_alias("dpo", "sft@1")
    assert registry_copy.aliases()["dpo"] == "sft@1"
    leftovers = [p.name for p in registry_copy.root.iterdir() if p.name.startswith(".") and p.name != PROGRESS_DIR]
    assert leftovers == []  # temp file renamed over aliases.json, nothing left behind (.training: jobs' progress)


def test_tampered_adapter_is_detected(registry_copy):
    sft = registry_copy.get("sft", 1)
    weights = sft.path / "adapter_model.safetensors"
    weights.chmod(0o644)
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    assert "content hash mismatch" in registry_copy.verify(sft)


def test_external_adapter_is_validated_and_recorded(trained, tiny_model_dir, base_model_dir, tmp_path):
    root, sft, _ = trained
    registry = AdapterRegistry(tmp_path / "adapters")
    external = add_external(registry, sft.path, "mine", tiny_model_dir)
    assert external.ref == "mine@1" and external.kind == "external" and external.parent is None
    assert external.meta["base_model"]["weights_sha256"] == sft.meta["base_model"]["weights_sha256"]
    assert registry.verify(external) is None
    # Trained on the tiny model: its shapes do not fit the real 576-wide base.
    with pytest.raises(RegistryError, match="does not fit"):
        add_external(registry, sft.path, "wrong-base", base_model_dir)
    broken = tmp_path / "broken"
    shutil.copytree(sft.path, broken)
    (broken / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(RegistryError, match="unreadable"):
        add_external(registry, broken, "broken", tiny_model_dir)
    config = json.loads((broken / "adapter_config.json").read_text())
    config["modules_to_save"] = ["lm_head"]
    (broken / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(RegistryError, match="modules_to_save"):
        add_external(registry, broken, "broken", tiny_model_dir)
    assert registry.versions("wrong-base") == [] and registry.versions("broken") == []


def test_cli_add_and_list(trained, tiny_model_dir, tmp_path, capsys):
    _, sft, _ = trained
    root = tmp_path / "adapters"
    assert palate(["adapters", "add", str(sft.path), "--name", "ext", "--registry", str(root),
                   "--model-dir", str(tiny_model_dir)]) == 0
    assert palate(["adapters", "add", str(tmp_path), "--name", "nope", "--registry", str(root),
                   "--model-dir", str(tiny_model_dir)]) == 2
    capsys.readouterr()
    assert palate(["adapters", "list", "--registry", str(root)]) == 0
    out = capsys.readouterr().out
    assert "ext@1" in out and "external" in out


def test_list_shows_headline_metrics(trained, capsys):
    root, _, _ = trained
    assert palate(["adapters", "list", "--registry", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["ADAPTER", "KIND", "PARENT", "CREATED"]
    dpo_line = next(line for line in lines if line.startswith("dpo@1"))
    assert "sft@1" in dpo_line and "eval_acc=" in dpo_line
    assert "eval_loss=" in next(line for line in lines if line.startswith("sft@1"))


def test_train_all_if_missing_reuses_what_is_there(trained, tmp_path, capsys):
    root, _, _ = trained
    copy = tmp_path / "adapters"
    shutil.copytree(root, copy)
    assert palate(["train", "all", "--profile", "quick", "--if-missing", "--registry", str(copy)]) == 0
    out = capsys.readouterr().out
    assert "sft@1 is in the registry - reusing it" in out and "dpo@1 is in the registry - reusing it" in out
    assert AdapterRegistry(copy).versions("sft") == [1] and AdapterRegistry(copy).versions("dpo") == [1]
