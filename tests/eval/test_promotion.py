"""Promotion on evidence: the three checks on hand-made numbers, the registry record, and the refusal of a
deliberately degenerate adapter on the real model and engine."""

from __future__ import annotations

import json
import shutil

import pytest

from core.registry import AdapterRegistry
from core.ratings import wilson_interval
from eval.promotion import PromotionPolicy, PromotionRefused, check_evidence, incumbent_for, promote


def _margins(cand_acc, inc_acc, cand_margin=5.0, inc_margin=4.0):
    def model(ref, acc, margin):
        return {"label": ref, "ref": ref, "summary": {"all": {"n": 100, "accuracy": acc, "margin_mean": margin}}}
    return {"data": {"path": "pairs.jsonl"}, "models": [model("dpo@2", cand_acc, cand_margin),
                                                        model("dpo@1", inc_acc, inc_margin)]}


def _generations(wins, losses, ties, cand=(0.05, 0.0), inc=(0.10, 0.05)):
    games = wins + losses + ties
    rate = (wins + ties / 2) / games
    low, high = wilson_interval(wins + ties / 2, games)
    summary = lambda rep, cut: {"repetition": rep, "truncated_rate": cut}  # noqa: E731
    return {"data": {"path": "prompts.jsonl"}, "sampling": {"temperature": 0.7},
            "models": [{"label": "dpo@2", "ref": "dpo@2"}, {"label": "dpo@1", "ref": "dpo@1"}],
            "summary": {"dpo@2": summary(*cand), "dpo@1": summary(*inc)},
            "pairwise": {"listing_judge": [{"a": "dpo@2", "b": "dpo@1", "games": games, "wins": wins,
                                            "losses": losses, "ties": ties, "win_rate": rate, "ci_low": low,
                                            "ci_high": high}]}}


def test_a_clearly_better_candidate_passes_every_check():
    # 30 wins, 6 losses, 4 ties of 40: win rate 0.80, Wilson lower bound ~0.65 > 0.5
    verdict = check_evidence("dpo@2", "dpo@1", _margins(0.95, 0.90), _generations(30, 6, 4))
    assert verdict["passed"] and [c["name"] for c in verdict["checks"]] == ["margins", "judged generations",
                                                                            "degeneration"]
    generations = verdict["checks"][1]
    assert generations["win_rate"] == pytest.approx(0.80) and generations["ci_low"] > 0.6


def test_each_check_fails_on_its_own_numbers_and_says_so():
    # margins: lower accuracy
    v = check_evidence("dpo@2", "dpo@1", _margins(0.85, 0.90), _generations(30, 6, 4))
    assert [c["name"] for c in v["checks"] if not c["passed"]] == ["margins"]
    assert "0.850 vs 0.900" in v["checks"][0]["detail"]
    # margins: equal accuracy decided by the mean margin
    assert check_evidence("dpo@2", "dpo@1", _margins(0.9, 0.9, 6.0, 5.0), _generations(30, 6, 4))["passed"]
    assert not check_evidence("dpo@2", "dpo@1", _margins(0.9, 0.9, 4.0, 5.0), _generations(30, 6, 4))["passed"]
    # generations: 24 of 40 wins (0.60) is better than a coin flip but not with 95% confidence (lower bound ~0.45)
    v = check_evidence("dpo@2", "dpo@1", _margins(0.95, 0.90), _generations(24, 16, 0))
    failed = [c for c in v["checks"] if not c["passed"]]
    assert [c["name"] for c in failed] == ["judged generations"] and failed[0]["ci_low"] < 0.5
    assert "24 of 40" in failed[0]["detail"]
    # degeneration: more repetition, or more answers cut by the length limit
    v = check_evidence("dpo@2", "dpo@1", _margins(0.95, 0.90), _generations(30, 6, 4, cand=(0.2, 0.0)))
    assert [c["name"] for c in v["checks"] if not c["passed"]] == ["degeneration"]
    v = check_evidence("dpo@2", "dpo@1", _margins(0.95, 0.90), _generations(30, 6, 4, cand=(0.05, 0.2)))
    assert [c["name"] for c in v["checks"] if not c["passed"]] == ["degeneration"]
    assert "(more)" in v["checks"][2]["detail"]


def test_a_pairwise_row_written_from_the_incumbents_side_is_mirrored():
    g = _generations(30, 6, 4)
    row = g["pairwise"]["listing_judge"][0]
    g["pairwise"]["listing_judge"] = [dict(row, a="dpo@1", b="dpo@2", wins=6, losses=30, win_rate=1 - row["win_rate"],
                                           ci_low=1 - row["ci_high"], ci_high=1 - row["ci_low"])]
    verdict = check_evidence("dpo@2", "dpo@1", _margins(0.95, 0.90), g)
    assert verdict["passed"] and verdict["checks"][1]["win_rate"] == pytest.approx(0.80)


def _two_sets(generated: tuple[int, int, int], handwritten: tuple[int, int, int]) -> dict:
    """Generations on two prompt sets with the pooled table on top, as `gather_evidence` returns them."""
    pooled = _generations(*(g + h for g, h in zip(generated, handwritten)))
    sets = [dict(_generations(*generated), name="prompts_heldout"),
            dict(_generations(*handwritten), name="prompts_handwritten")]
    return dict(pooled, sets=sets, data=[{"path": "heldout.jsonl"}, {"path": "handwritten.jsonl"}])


def test_a_candidate_that_wins_the_generated_prompts_but_loses_the_hand_written_ones_is_refused():
    # pooled 49-30-9 of 88 (lower bound ~0.50+) would pass alone; losing 11-16-1 on the hand-written set does not
    v = check_evidence("dpo@2", "dpo@1", _margins(0.95, 0.90), _two_sets((38, 14, 8), (11, 16, 1)))
    generations = v["checks"][1]
    assert not v["passed"] and not generations["passed"] and generations["ci_low"] > 0.5
    assert "prompts_handwritten 11-16-1 (0.41, loses)" in generations["detail"]
    assert [s["name"] for s in generations["sets"]] == ["prompts_heldout", "prompts_handwritten"]
    # winning both sets (pooled bound above 0.5) passes, and a tie on one set (0.50) is not a loss
    assert check_evidence("dpo@2", "dpo@1", _margins(0.95, 0.90), _two_sets((38, 14, 8), (20, 8, 0)))["passed"]
    assert check_evidence("dpo@2", "dpo@1", _margins(0.95, 0.90), _two_sets((38, 4, 8), (12, 12, 4)))["passed"]


def _registry_with_two_versions(tiny_registry, tmp_path) -> AdapterRegistry:
    root = tmp_path / "adapters"
    shutil.copytree(tiny_registry, root)
    registry = AdapterRegistry(root)
    source = registry.resolve("dpo@1")
    registry.add("dpo", source.path, dict(source.meta, parent="dpo@1"), move_alias=False)
    return registry


def test_refused_promotion_leaves_the_alias_and_force_records_it(tiny_registry, tmp_path):
    registry = _registry_with_two_versions(tiny_registry, tmp_path)
    assert incumbent_for(registry, "dpo@2", "dpo") == "dpo@1"
    assert incumbent_for(registry, "dpo@2", "new-alias") == "dpo@1"  # a new alias: the candidate's parent
    weak = (_margins(0.85, 0.90), _generations(24, 16, 0))
    with pytest.raises(PromotionRefused, match="margins: held-out preference accuracy 0.850 vs 0.900") as refused:
        promote(registry, "dpo@2", "dpo", evidence=weak)
    assert "judged generations" in str(refused.value) and "stays at dpo@1" in str(refused.value)
    assert registry.aliases()["dpo"] == "dpo@1" and registry.promotion_of("dpo@2") is None
    with pytest.raises(PromotionRefused, match=r"not promoted to 'fresh' \(not created; compared with dpo@1\)"):
        promote(registry, "dpo@2", "fresh", evidence=weak)  # a new alias: held against the parent, not created
    assert "fresh" not in registry.aliases()
    result = promote(registry, "dpo@2", "dpo", force=True, evidence=weak)
    assert registry.aliases()["dpo"] == "dpo@2"
    record = registry.promotion_of("dpo@2", "dpo")
    assert record == result["record"] and record["forced"] is True and record["from"] == "dpo@1"
    assert [c["passed"] for c in record["evidence"]["checks"]] == [False, False, True]
    # and it is on disk, one JSON line per move
    lines = (registry.root / "promotions.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["to"] == "dpo@2"


def test_a_registry_from_before_promotion_records_opens_with_every_version(tmp_path):
    """Format 1 (no promotions.jsonl), as the previous release wrote it: versions, aliases intact; no records."""
    from tests.helpers import write_old_registry

    registry = AdapterRegistry(write_old_registry(tmp_path / "adapters"))
    assert [v.ref for v in registry.all_versions()] == ["dpo@1", "dpo@2", "sft@1"]
    assert registry.aliases() == {"sft": "sft@1", "dpo": "dpo@2"} and registry.promotions() == []
    assert registry.resolve("dpo").ref == "dpo@2" and registry.resolve("dpo").parent == "dpo@1"
    registry.promote("dpo", "dpo@1", {"reason": "test"}, forced=True)  # the first record creates the file
    assert registry.aliases()["dpo"] == "dpo@1" and len(registry.promotions()) == 1


@pytest.mark.engine
def test_a_degenerate_adapter_is_refused_promotion_on_the_real_model(tiny_registry, tmp_path):
    """An SFT adapter trained a few steps at a huge learning rate loops and garbles; the gate, run for real (HF
    margins, vLLM generations at the arena's sampling), refuses it and names the failed checks."""
    from core.config import load_config
    from training.jobs import train_sft

    root = tmp_path / "adapters"
    shutil.copytree(tiny_registry, root)
    registry = AdapterRegistry(root)
    bad = train_sft(registry_root=root, overrides={"max_steps": 3, "learning_rate": 0.5, "warmup_steps": 0,
                                                   "logging_steps": 1, "save_strategy": "no", "max_eval_rows": 2,
                                                   "per_device_train_batch_size": 2, "max_train_rows": 8},
                    log=lambda *_: None)
    assert bad.ref == "sft@2" and registry.aliases()["sft"] == "sft@1"  # training alone does not move the alias
    cfg = load_config()
    # 4 pairs: HF float32 scoring is the slow part; 6 generated and 4 hand-written prompts
    policy = PromotionPolicy(pairs=4, prompts=6, handwritten_prompts=4, max_tokens=64)
    with pytest.raises(PromotionRefused) as refused:
        promote(registry, "sft@2", "sft", policy=policy, model_dir=cfg.model.resolved_dir(), vllm_cfg=cfg.server.vllm,
                progress=lambda *_: None)
    failed = {c["name"] for c in refused.value.result["checks"] if not c["passed"]}
    # Six prompts are too few for a confident win whatever the adapter, so the telling checks are the other two:
    # the broken adapter loses held-out margins or degenerates (or both).
    assert failed & {"margins", "degeneration"}, refused.value.result["checks"]
    assert str(refused.value).count(":") >= 2 and "stays at sft@1" in str(refused.value)
    assert registry.aliases()["sft"] == "sft@1" and registry.promotion_of("sft@2") is None


@pytest.mark.parametrize("flag, value, message", [("--handwritten", "-3", "expected 0 or more, got -3"),
                                                  ("--prompts", "0", "expected 1 or more, got 0"),
                                                  ("--pairs", "many", "expected a whole number, got 'many'")])
def test_promote_refuses_a_count_it_cannot_use_and_names_the_flag(flag, value, message, capsys):
    from core.cli import main as palate

    with pytest.raises(SystemExit) as exited:
        palate(["promote", "dpo@2", "--alias", "dpo", flag, value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: {message}" in err
