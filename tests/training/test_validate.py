"""User data validation: line-numbered errors, counts by reason, exit code 2, nothing dropped silently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.cli import main as palate
from training.validate import DataValidationError, validate_file

GOOD_DPO = {"prompt": [{"role": "user", "content": "Describe it."}],
            "chosen": [{"role": "assistant", "content": "Two beds."}],
            "rejected": [{"role": "assistant", "content": "AMAZING!!!"}]}


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def malformed_dpo(tmp_path) -> Path:
    same = dict(GOOD_DPO, rejected=GOOD_DPO["chosen"])
    return _write(tmp_path / "bad.jsonl", [
        json.dumps(GOOD_DPO),                                          # 1 ok
        '{"prompt": "unterminated',                                    # 2 invalid json
        json.dumps({k: v for k, v in GOOD_DPO.items() if k != "chosen"}),  # 3 missing chosen
        json.dumps(dict(GOOD_DPO, rejected=[{"role": "assistant", "content": "  "}])),  # 4 empty
        json.dumps(dict(GOOD_DPO, chosen=42)),                         # 5 wrong type
        json.dumps(same),                                              # 6 chosen == rejected
        "",                                                            # 7 blank: ignored
        json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}),   # 8 standard row in a conversational file
        "[1, 2]",                                                      # 9 not an object
        json.dumps(dict(GOOD_DPO, kind="hype", listing={"id": "x"})),  # 10 ok, extra keys dropped
    ])


def test_malformed_jsonl_gets_line_numbered_errors(malformed_dpo):
    report = validate_file(malformed_dpo, "dpo")
    assert [(e.line, e.reason) for e in report.errors] == [
        (2, "invalid_json"), (3, "missing_field"), (4, "empty_field"), (5, "wrong_type"),
        (6, "chosen_equals_rejected"), (8, "format_mismatch"), (9, "wrong_type")]
    assert report.kept == 2 and report.format == "conversational" and not report.ok
    assert report.dropped == {"invalid_json": 1, "missing_field": 1, "empty_field": 1, "wrong_type": 2,
                              "chosen_equals_rejected": 1, "format_mismatch": 1}
    assert set(report.rows[1]) == {"prompt", "chosen", "rejected"}  # extra keys never reach TRL
    summary = report.summary()
    assert "kept 2 rows, dropped 7" in summary and "line 3: missing field 'chosen'" in summary
    with pytest.raises(DataValidationError, match="line 2: invalid JSON"):
        report.raise_for_errors()
    report.raise_for_errors(allow_dropped=True)  # explicit opt-in keeps the 2 good rows


def test_sft_formats(tmp_path):
    path = _write(tmp_path / "sft.jsonl", [
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}),
        json.dumps({"messages": [{"role": "user", "content": "q"}]}),
        json.dumps({"messages": [{"role": "robot", "content": "q"}]}),
    ])
    report = validate_file(path, "sft")
    assert report.kept == 1
    assert [(e.line, e.reason) for e in report.errors] == [(2, "missing_field"), (3, "wrong_type")]
    standard = _write(tmp_path / "std.jsonl", [json.dumps({"prompt": "q", "completion": "a"})])
    assert validate_file(standard, "sft").ok and validate_file(standard, "sft").format == "standard"
    empty = _write(tmp_path / "empty.jsonl", [""])
    with pytest.raises(DataValidationError, match="no usable rows"):
        validate_file(empty, "sft").raise_for_errors(allow_dropped=True)


def test_cli_validate_exits_2_with_the_report(malformed_dpo, capsys):
    assert palate(["data", "validate", str(malformed_dpo), "--kind", "dpo"]) == 2
    err = capsys.readouterr().err
    assert "line 6:" in err and "chosen_equals_rejected" in err


def test_train_fails_fast_on_bad_data(malformed_dpo, tiny_model_dir, registry_root, capsys):
    code = palate(["train", "dpo", "--data", str(malformed_dpo), "--base_model_dir", str(tiny_model_dir),
                   "--registry", str(registry_root), "--from", "base"])
    assert code == 2
    err = capsys.readouterr().err
    assert "invalid data" in err and "line 2: invalid JSON" in err
    assert not registry_root.exists()  # nothing trained, nothing registered


def test_demo_dataset_passes(small_dataset):
    training_files = {name: path for name, path in small_dataset.items() if name.startswith(("sft", "prefs"))}
    assert set(training_files) == {"sft_train", "sft_eval", "prefs_train", "prefs_eval"}, small_dataset
    for name, path in training_files.items():
        report = validate_file(path, "sft" if name.startswith("sft") else "dpo")
        assert report.ok and report.kept > 0, report.summary()
