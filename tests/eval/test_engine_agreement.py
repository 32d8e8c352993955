"""The serving engine (vLLM prompt log-probs) and the transformers + PEFT reference agree within 0.05 nats per pair.

One vLLM engine, base + a LoRA adapter, a few pairs: the same token ids go to both (eval.pairs.tokenize_pair)."""

import asyncio

import pytest

from tests.eval.rows import LISTING_ROWS, write_rows
from eval.pairs import read_pairs, tokenize_pair
from eval.scoring import score_pairs

pytestmark = pytest.mark.engine
TOLERANCE_NATS = 0.05


def test_vllm_and_hf_agree_per_pair(base_dir, hf_scorer, random_adapter, tmp_path):
    from core.config import VllmConfig
    from eval.engine import adapter_handles, scoring_engine

    rows = read_pairs(write_rows(tmp_path / "p.jsonl", LISTING_ROWS))
    pairs = [tokenize_pair(hf_scorer.tokenizer(), r) for r in rows]
    reference = {"base": asyncio.run(score_pairs(hf_scorer, pairs, None)),
                 "lora": asyncio.run(score_pairs(hf_scorer, pairs, random_adapter))}

    async def engine_scores():
        engine = scoring_engine(base_dir, VllmConfig(max_model_len=1024, max_num_seqs=8, kv_cache_space_gib=1))
        await engine.start()
        try:
            handle = adapter_handles([random_adapter])[random_adapter.ref]
            await engine.load_adapter(handle)
            # interleave base and adapter requests, as a mixed batch in one engine
            base, lora = await asyncio.gather(score_pairs(engine, pairs, None), score_pairs(engine, pairs, handle))
            return {"base": base, "lora": lora}
        finally:
            await engine.shutdown()

    served = asyncio.run(engine_scores())
    for model in ("base", "lora"):
        for ours, ref in zip(served[model], reference[model]):
            assert abs(ours.chosen_logp - ref.chosen_logp) < TOLERANCE_NATS, (model, ours.pair_id)
            assert abs(ours.rejected_logp - ref.rejected_logp) < TOLERANCE_NATS, (model, ours.pair_id)
            margin_gap = (ours.chosen_logp - ours.rejected_logp) - (ref.chosen_logp - ref.rejected_logp)
            assert abs(margin_gap) < TOLERANCE_NATS, (model, ours.pair_id)
    # and the adapter is really applied in the engine (not silently served as base)
    assert max(abs(a.chosen_logp - b.chosen_logp) for a, b in zip(served["lora"], served["base"])) > 0.1
