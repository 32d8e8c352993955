"""The transformers + PEFT scorer and the margins job on the real base model with a random LoRA."""

import asyncio
import json

import pytest
import torch

from tests.eval.rows import LISTING_ROWS, write_rows
from eval.margins_job import compute_margins
from eval.pairs import read_pairs, tokenize_pair
from eval.scoring import score_pairs


@pytest.fixture()
def pairs(hf_scorer, tmp_path):
    rows = read_pairs(write_rows(tmp_path / "p.jsonl", LISTING_ROWS))
    return [tokenize_pair(hf_scorer.tokenizer(), r) for r in rows]


def _plain_logps(model, prompt_ids, completion_ids):
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    logps = torch.log_softmax(logits, -1)
    return [logps[len(prompt_ids) + i - 1, t].item() for i, t in enumerate(completion_ids)]


def test_batched_scores_equal_one_sequence_forward(hf_scorer, pairs, base_dir):
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)  # untouched by PEFT
    scored = asyncio.run(score_pairs(hf_scorer, pairs, None))  # batches of 4 sequences, right-padded
    for pair, result in zip(pairs, scored):
        expected = _plain_logps(plain, pair.prompt_ids, pair.rejected_ids)
        assert result.rejected == pytest.approx(expected, abs=1e-4)
        assert len(result.chosen) == len(pair.chosen_ids)
        assert all(lp <= 0 for lp in result.chosen)


def test_adapter_changes_scores_and_base_stays_base(hf_scorer, pairs, random_adapter):
    before = asyncio.run(score_pairs(hf_scorer, pairs, None))
    with_lora = asyncio.run(score_pairs(hf_scorer, pairs, random_adapter))
    after = asyncio.run(score_pairs(hf_scorer, pairs, None))  # adapter attached now, disabled for base
    moved = [abs(a.chosen_logp - b.chosen_logp) for a, b in zip(with_lora, before)]
    assert max(moved) > 0.1
    for a, b in zip(after, before):
        assert a.chosen_logp == pytest.approx(b.chosen_logp, abs=1e-4)


def test_compute_margins_rewards_use_the_parent_as_reference(hf_scorer, registry_with_adapters, tmp_path):
    data = write_rows(tmp_path / "eval.jsonl", LISTING_ROWS)
    result = asyncio.run(compute_margins(hf_scorer, registry_with_adapters, ["base", "dpo@1", "dpo@2"], data,
                                         progress=lambda _: None))
    assert result["data"]["n_pairs"] == 3 and len(result["data"]["sha256"]) == 64
    base, dpo_on_sft, dpo_on_base = result["models"]
    assert base["summary"]["all"]["rewards"] is None
    assert dpo_on_sft["reference"] == "sft@1" and dpo_on_base["reference"] == "base"
    # dpo@1 has the same weights as its parent sft@1: every implicit reward is exactly zero, so no pair is "won"
    assert dpo_on_sft["summary"]["all"]["rewards"]["margins"] == pytest.approx(0.0, abs=1e-6)
    assert dpo_on_sft["summary"]["all"]["rewards"]["accuracies"] == 0.0
    # dpo@2's reference is the base model: reward margin = beta * (margin under dpo - margin under base)
    for d, b in zip(dpo_on_base["pairs"], base["pairs"]):
        assert d["reward_margin"] == pytest.approx(0.2 * (d["margin"] - b["margin"]), abs=1e-6)
    assert set(dpo_on_base["summary"]) == {"all", "hype", "wrong_number", "vague"}
    assert base["summary"]["all"]["accuracy"] == pytest.approx(
        sum(p["margin"] > 0 for p in base["pairs"]) / 3)


def test_cli_margins_and_report_end_to_end(registry_with_adapters, tmp_path, capsys):
    """`palate eval margins --engine hf` writes results a `palate eval report` turns into tables and plots."""
    from core.cli import main

    data = write_rows(tmp_path / "eval.jsonl", LISTING_ROWS)
    out = tmp_path / "margins.json"
    assert main(["eval", "margins", "--engine", "hf", "--registry", str(registry_with_adapters.root), "--models",
                 "base", "dpo", "--data", str(data), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [m["ref"] for m in result["models"]] == ["base", "dpo@2"]  # the alias is resolved and recorded
    printed = capsys.readouterr().out
    assert "dpo → dpo@2" in printed and result["data"]["sha256"][:12] in printed
    assert main(["eval", "report", "--margins", str(out), "--registry", str(registry_with_adapters.root),
                 "--database-url", f"sqlite:///{tmp_path / 'none.db'}", "--out-dir", str(tmp_path / "rep")]) == 0
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "dpo → dpo@2" in report and (tmp_path / "rep" / "margins.png").is_file()
