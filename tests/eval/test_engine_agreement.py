"""The serving engine (vLLM prompt log-probs) against the transformers + PEFT reference, on one engine:

1. per pair, the two agree within 0.05 nats (the same token ids go to both: eval.pairs.tokenize_pair);
2. agreement with people, scored by the engine: a small vote table whose outcome is fixed by hand - the winner of
   two votes is the answer the reference's implicit reward prefers, of the third the one it does not - comes out
   at 2 of 3 with the hand-worked Wilson interval, margins equal to the reference's, and excluded votes
   (simulated, tie, identity leak) that would all disagree change nothing.
"""

import asyncio

import pytest

from core.registry import AdapterRegistry
from eval.agreement import compute_agreement, reward_margins
from eval.pairs import read_pairs, tokenize_pair
from eval.scoring import resolve_models, score_pairs, with_references
from tests.eval.rows import LISTING_ROWS, write_rows
from tests.eval.test_agreement import battle

pytestmark = pytest.mark.engine
TOLERANCE_NATS = 0.05
BETA = 0.2
TAGS = (["grounded"], ["hype"], [])


def vote_table(rows, hf_margins: dict[str, float]) -> tuple[list, list]:
    """(people's votes, excluded votes): pair i shown as A = chosen, B = rejected; the people's winner agrees with
    the reference reward on the first two pairs and disagrees on the third; every excluded vote disagrees."""
    people, excluded = [], []
    for i, row in enumerate(rows):
        reward_prefers = "A" if hf_margins[row.pair_id] > 0 else "B"
        other = "B" if reward_prefers == "A" else "A"
        texts = (row.chosen[0]["content"], row.rejected[0]["content"])
        people.append(battle(row.pair_id, *texts, reward_prefers if i < 2 else other, TAGS[i]))
        people[-1].prompt = row.prompt[-1]["content"]
        for bid, kwargs in ((f"sim-{i}", {"ui_version": "palate-loop"}), (f"leak-{i}", {"flags_a": ["identity_leak"]})):
            excluded.append(battle(bid, *texts, other, **kwargs))
            excluded[-1].prompt = row.prompt[-1]["content"]
        excluded.append(battle(f"tie-{i}", *texts, "tie"))
    return people, excluded


@pytest.fixture(scope="module")
def scored(base_dir, hf_scorer, random_adapter, tmp_path_factory):
    """Everything the tests read, from one engine: per-pair log-probs (base, LoRA) and two agreement runs."""
    from core.config import VllmConfig
    from eval.engine import adapter_handles, scoring_engine

    tmp = tmp_path_factory.mktemp("engine_agreement")
    rows = read_pairs(write_rows(tmp / "p.jsonl", LISTING_ROWS))
    pairs = [tokenize_pair(hf_scorer.tokenizer(), r) for r in rows]
    reference = {"base": asyncio.run(score_pairs(hf_scorer, pairs, None)),
                 "lora": asyncio.run(score_pairs(hf_scorer, pairs, random_adapter))}
    hf_margins = reward_margins(reference["lora"], reference["base"], BETA)
    people, excluded = vote_table(rows, hf_margins)
    registry = AdapterRegistry(tmp / "adapters")  # the random adapter as a DPO version whose reference is base
    registry.add("dpo", random_adapter.path, {"kind": "dpo", "config": {"trl": {"beta": BETA}}})

    async def run():
        engine = scoring_engine(base_dir, VllmConfig(max_model_len=1024, max_num_seqs=8, kv_cache_space_gib=1))
        await engine.start()
        try:
            handle = adapter_handles([random_adapter])[random_adapter.ref]
            await engine.load_adapter(handle)
            # interleave base and adapter requests, as a mixed batch in one engine
            base, lora = await asyncio.gather(score_pairs(engine, pairs, None), score_pairs(engine, pairs, handle))
            handles = adapter_handles(with_references(registry, resolve_models(registry, ["dpo"])), first_lora_id=5)
            agreement = {name: await compute_agreement(engine, registry, "dpo", votes, ["palate-loop"], handles=handles)
                         for name, votes in (("people", people), ("with_excluded", people + excluded))}
            return {"base": base, "lora": lora, **agreement}
        finally:
            await engine.shutdown()

    return {"reference": reference, "hf_margins": hf_margins, "served": asyncio.run(run())}


def test_vllm_and_hf_agree_per_pair(scored):
    served, reference = scored["served"], scored["reference"]
    for model in ("base", "lora"):
        for ours, ref in zip(served[model], reference[model]):
            assert abs(ours.chosen_logp - ref.chosen_logp) < TOLERANCE_NATS, (model, ours.pair_id)
            assert abs(ours.rejected_logp - ref.rejected_logp) < TOLERANCE_NATS, (model, ours.pair_id)
            margin_gap = (ours.chosen_logp - ours.rejected_logp) - (ref.chosen_logp - ref.rejected_logp)
            assert abs(margin_gap) < TOLERANCE_NATS, (model, ours.pair_id)
    # and the adapter is really applied in the engine (not silently served as base)
    assert max(abs(a.chosen_logp - b.chosen_logp) for a, b in zip(served["lora"], served["base"])) > 0.1


def test_agreement_scored_by_the_engine_matches_the_hand_worked_table(scored):
    hf_margins = scored["hf_margins"]
    # The table's outcome is fixed only if no reference margin is within the engine's error of zero.
    assert min(abs(m) for m in hf_margins.values()) > 0.02, hf_margins
    result = scored["served"]["people"]
    assert (result["source"], result["votes"], result["beta"]) == ("people", 3, BETA)
    (version,) = result["versions"]
    assert (version["ref"], version["reference"]) == ("dpo@1", "base")
    # The people's winner is A (chosen) where the reward prefers A, so the engine's margin of the winner over the
    # loser is +|m| on the two agreeing votes and -|m| on the third.
    expected = {pid: (abs(m) if i < 2 else -abs(m)) for i, (pid, m) in enumerate(hf_margins.items())}
    assert version["margins"] == pytest.approx(expected, abs=0.01)
    overall = version["overall"]
    assert (overall["n"], overall["agree"]) == (3, 2)
    # Wilson 95% for 2/3 (worked out in tests/eval/test_agreement.py): [0.2077, 0.9385].
    assert overall["wilson95"] == pytest.approx([0.2077, 0.9385], abs=1e-3)
    assert {t: (r["n"], r["agree"]) for t, r in version["by_reason"].items()} == {
        "grounded": (1, 1), "hype": (1, 1), "untagged": (1, 0)}


def test_excluded_votes_change_nothing_on_the_engine(scored):
    alone, with_excluded = scored["served"]["people"], scored["served"]["with_excluded"]
    assert with_excluded["excluded"] == {"simulated": 3, "identity_leak": 3, "tie": 3}
    (a,), (b,) = alone["versions"], with_excluded["versions"]
    assert (a["overall"], a["by_reason"]) == (b["overall"], b["by_reason"])
    assert b["margins"] == pytest.approx(a["margins"], abs=1e-4)
