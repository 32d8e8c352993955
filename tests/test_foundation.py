"""Foundation: base-model provisioning, configuration errors, the CLI."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys

import pytest

from core.config import BaseModelConfig, ConfigError, load_config
from training.provision import MANIFEST, ProvisionError, check_model_dir, provision


def test_second_pull_is_a_verified_no_op(base_model_dir):
    manifest_before = (base_model_dir / MANIFEST).read_text()
    result = provision(BaseModelConfig(), log=lambda *a: None)
    assert result.created is False
    assert "already provisioned" in result.message
    assert (base_model_dir / MANIFEST).read_text() == manifest_before
    assert json.loads(manifest_before)["weights_sha256"] == result.weights_sha256


def test_pull_cli_twice_says_already_there(base_model_dir):
    out = subprocess.run([sys.executable, "-m", "core.cli", "model", "pull"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "already provisioned" in out.stdout


def test_damaged_model_is_detected_and_rebuilt(base_model_dir, tmp_path):
    copy = tmp_path / "base"
    shutil.copytree(base_model_dir, copy)
    with open(copy / "tokenizer.json", "r+b") as handle:  # flip bytes in place: same size, wrong checksum
        handle.seek(100)
        handle.write(b"XXXX")
    assert check_model_dir(copy) == "checksum mismatch in tokenizer.json"
    (copy / "config.json").unlink()
    assert check_model_dir(copy) == "missing file config.json"
    messages = []
    result = provision(BaseModelConfig(model_dir=copy), log=messages.append)
    assert result.created and check_model_dir(copy) is None
    assert any("damaged" in m for m in messages)
    # Rebuilt from the same GGUF: the same weights as the intact copy.
    assert result.weights_sha256 == json.loads((base_model_dir / MANIFEST).read_text())["weights_sha256"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".base.tmp-")]  # no half-written leftovers


def test_user_model_dir_errors_say_what_and_how(tmp_path):
    with pytest.raises(ProvisionError, match="does not exist"):
        provision(BaseModelConfig(source=str(tmp_path / "nope")))
    (tmp_path / "notlm").mkdir()
    (tmp_path / "notlm" / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    with pytest.raises(ProvisionError, match="not a causal language model"):
        provision(BaseModelConfig(source=str(tmp_path / "notlm")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProvisionError, match="no config.json"):
        provision(BaseModelConfig(source=str(tmp_path / "empty")))


def test_user_model_dir_is_used_as_is(base_model_dir):
    result = provision(BaseModelConfig(source=str(base_model_dir)))
    assert result.model_dir == base_model_dir and result.created is False


def test_config_error_names_file_and_key(tmp_path):
    bad = tmp_path / "server.yaml"
    bad.write_text("# Used by: tests\nport: eighty\nvllm:\n  max_lora_rnk: 8\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    message = str(info.value)
    assert str(bad) in message and "'port'" in message and "'vllm.max_lora_rnk'" in message


def test_config_error_from_cli_exits_2(tmp_path):
    bad = tmp_path / "server.yaml"
    bad.write_text("port: [1, 2]\n")
    out = subprocess.run([sys.executable, "-m", "core.cli", "serve", "--config", str(bad)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "key 'port'" in out.stderr


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "core.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("model", "serve", "train", "adapters", "arena", "votes", "eval"):
        assert command in out.stdout, command


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every (sub)command parser of `palate`, with the words that reach it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, (*path, name))


def test_every_subcommand_prints_its_help():
    # `palate eval --help` once died on a bare '%' in a help string (argparse formats help with %).
    from core.cli import build_parser

    seen = []
    for path, parser in _parsers(build_parser()):
        assert parser.format_help(), path
        seen.append(" ".join(path))
    assert {"eval agreement", "eval generate", "promote", "loop", "train sft", "serve"} <= set(seen), seen
