"""On-policy rejections (training/onpolicy.py): the parent's own wrong answers become DPO's rejected answers."""

from __future__ import annotations

import json

import pytest

from core.config import ConfigError
from core.text import repetition
from training.config import resolve_job
from training.onpolicy import MAX_REPETITION, ON_POLICY_FILE, is_wrong, pick_pair, why_rejected

FACTS = {"property_type": "townhouse", "beds": 2, "baths": 2.0, "area_sqft": 1030, "neighbourhood": "Stonebridge",
         "transit": "a 17-minute walk to the King Street streetcar", "transit_minutes": 17, "monthly_fee": 550,
         "year_built": 1979, "condition": None, "features": ["gas range"], "unstated": []}
GROUNDED = ("2-bed, 2-bath townhouse in Stonebridge, 1,030 sq ft, a 17-minute walk to the King Street streetcar. "
            "Built in 1979, with a gas range. Fees are $550 a month.")
# as the quick dpo adapter wrote it: the facts again, after the answer had ended
RESTATED = GROUNDED + " A 2-bed, 2-bath townhouse in Stonebridge, 1,030 sq ft, built in 1979, with a gas range."


def test_a_grounded_complete_answer_has_nothing_wrong():
    assert why_rejected(GROUNDED, FACTS, cut=False) == []


def test_fused_numbers_missing_facts_and_cut_answers_are_rejected():
    fused = GROUNDED.replace("2-bed", "17-bed")  # the minutes in the beds' role, as the quick adapters wrote
    assert any("beds" in r for r in why_rejected(fused, FACTS, cut=False))
    short = "2-bed, 2-bath townhouse in Stonebridge."
    assert "missing feature: gas range" in why_rejected(short, FACTS, cut=False)
    assert why_rejected(GROUNDED, FACTS, cut=True) == ["cut by the length limit"]
    assert why_rejected(short, None, cut=True) == []  # no facts to judge by: the row keeps its written pair


def test_an_answer_that_restates_itself_is_wrong_even_when_every_fact_is_right():
    reasons = why_rejected(RESTATED, FACTS, cut=False)
    assert reasons == ["repeats itself: 0.29 of its word 3-grams"] and is_wrong(reasons)
    # one repeated phrase is not a restatement
    once = GROUNDED + " It has a gas range too."
    assert 0 < repetition(once) < MAX_REPETITION and why_rejected(once, FACTS, cut=False) == []


def test_on_policy_rows_is_refused_where_it_would_do_nothing():
    with pytest.raises(ConfigError, match="on_policy_rows=8 is a DPO setting"):
        resolve_job("sft", overrides={"on_policy_rows": 8})
    with pytest.raises(ConfigError, match="on_policy_rows=-1"):
        resolve_job("dpo", overrides={"on_policy_rows": -1})
    with pytest.raises(ConfigError, match="on_policy_chosen='sample' needs on_policy_samples >= 2"):
        resolve_job("dpo", overrides={"on_policy_rows": 8, "on_policy_samples": 1, "on_policy_chosen": "sample"})
    with pytest.raises(ConfigError, match="on_policy_chosen='best'"):
        resolve_job("dpo", overrides={"on_policy_rows": 8, "on_policy_chosen": "best"})
    with pytest.raises(ConfigError, match="on_policy_keep_kinds: unknown kind.s. omits; the dataset's kinds are"):
        resolve_job("dpo", overrides={"on_policy_rows": 8, "on_policy_keep_kinds": ["omits", "drops_a_fact"]})
    with pytest.raises(ConfigError, match="on_policy_complete pairs two sampled answers; it needs on_policy_chosen"):
        resolve_job("dpo", overrides={"on_policy_rows": 8, "on_policy_chosen": "dataset", "on_policy_complete": True})
    with pytest.raises(ConfigError, match="on_policy_samples=0"):
        resolve_job("dpo", overrides={"on_policy_rows": 8, "on_policy_samples": 0})
    # the quick profile samples; on_policy_rows 0 switches it off without touching the other two keys
    assert resolve_job("dpo", profile="quick", overrides={"on_policy_rows": 0}).palate.on_policy_rows == 0


def _sample(text: str, cut: bool = False) -> dict:
    return {"answer": text, "cut": cut, "reasons": why_rejected(text, FACTS, cut)}


def test_leaving_a_fact_out_is_less_complete_not_wrong():
    assert not is_wrong(why_rejected("2-bed, 2-bath townhouse in Stonebridge.", FACTS, cut=False))
    assert is_wrong(why_rejected(GROUNDED.replace("2-bed", "17-bed"), FACTS, cut=False))
    assert is_wrong(why_rejected(GROUNDED, FACTS, cut=True))


def test_a_sampled_pair_is_a_right_answer_over_a_wrong_one():
    short = _sample("2-bed, 2-bath townhouse in Stonebridge.")  # right, but leaves facts out
    fused = _sample(GROUNDED.replace("2-bed", "17-bed"))  # complete, one number in the wrong role
    worse = _sample(GROUNDED.replace("2-bed", "17-bed").replace("$550", "$5,500"))  # two wrong
    complete = _sample(GROUNDED)
    # chosen: the right answer leaving the fewest facts out; rejected: the wrong one with the most reasons
    assert pick_pair([short, fused, complete, worse], "sample") == (2, 3)
    # a wrong answer that states more than the right one is not paired with it (that would teach "say less") ...
    assert pick_pair([fused, short], "sample") == (None, None)
    # ... one that leaves out as much is
    short_fused = _sample("3-bed, 2-bath townhouse in Stonebridge.")
    assert pick_pair([short_fused, short], "sample") == (1, 0)
    # no right answer or no wrong one: nothing to pair, the row keeps its written pair
    assert pick_pair([fused, worse], "sample") == (None, None)
    assert pick_pair([short, complete], "sample") == (None, None)
    # on_policy_complete: two right answers, one leaving facts out: the more complete over the less complete ...
    assert pick_pair([short, complete], "sample", complete=True) == (1, 0)
    # ... but only where there is no right-over-wrong pair, and only between answers that differ in what they cover
    assert pick_pair([short, complete, worse], "sample", complete=True) == (1, 2)
    assert pick_pair([complete, _sample(GROUNDED.replace("Built", "It was built"))], "sample", complete=True) \
        == (None, None)
    # SPIN: the dataset's chosen answer stays; rejected = the answer with the most reasons, leaving facts out counts
    assert pick_pair([complete, short], "dataset") == (None, 1)
    assert pick_pair([complete], "dataset") == (None, None)


def test_sampled_pairs_replace_both_answers_and_only_where_there_is_a_pair(small_dataset, tmp_path, monkeypatch):
    """Two answers per prompt, scripted (a fake sampler): row 0 gets a right and a wrong one, row 1 two wrong ones,
    row 2 has no listing facts to check an answer against and is not sampled."""
    import training.onpolicy as onpolicy
    from training.inputs import prepare_data
    from training.onpolicy import Sampling, with_on_policy_rejections

    data = prepare_data("dpo", small_dataset["prefs_train"])
    facts = [FACTS, FACTS, None] + data.listings[3:]  # row 2 without facts (an exported vote): not sampled
    scripted = {0: [(GROUNDED, False), (GROUNDED.replace("2-bed", "17-bed"), False)],
                100_003: [(GROUNDED.replace("$550", "$5,500"), False), (GROUNDED, True)]}
    def fake_sampler(model, tokenizer, prompts, sampling, seed):
        assert prompts == [data.rows[0]["prompt"], data.rows[1]["prompt"]]
        return scripted[seed]

    monkeypatch.setattr(onpolicy, "sample_answers", fake_sampler)
    rows, summary = with_on_policy_rejections(None, None, data.rows, facts, 3, Sampling(0.7, 0.95, 24), 0,
                                              tmp_path / ON_POLICY_FILE, log=lambda *_: None, samples=2,
                                              chosen_from="sample")
    assert rows[0]["chosen"] == [{"role": "assistant", "content": GROUNDED}]
    assert rows[0]["rejected"] == [{"role": "assistant", "content": GROUNDED.replace("$550", "$5,500")}]
    assert rows[1] == data.rows[1] and rows[2:] == data.rows[2:]
    assert (summary["sampled"], summary["rows"], summary["replaced"], summary["kept_written"]) == (4, 2, 1, 1)
    assert summary["wrong"] == 3 and summary["cut_by_length"] == 1
    assert summary["completeness_pairs"] == 0 and summary["complete"] is False
    records = [json.loads(line) for line in (tmp_path / ON_POLICY_FILE).read_text().splitlines()]
    assert [(r["row"], r["sample"]) for r in records] == [(0, 0), (1, 0), (0, 1), (1, 1)]


def test_rows_of_the_kinds_to_keep_are_not_sampled(small_dataset, tmp_path, monkeypatch):
    """on_policy_keep_kinds: a row of a kept kind keeps its written pair and costs no sampling."""
    import training.onpolicy as onpolicy
    from training.inputs import prepare_data
    from training.onpolicy import Sampling, with_on_policy_rejections

    data = prepare_data("dpo", small_dataset["prefs_train"])
    assert len(data.kinds) == len(data.rows) and data.kinds[0] and data.kinds[1]
    keep = [data.kinds[0]]
    sampled_rows = [i for i in range(3) if data.kinds[i] not in keep]
    assert 0 < len(sampled_rows) < 3  # near-miss kinds rotate: the first rows are of different kinds
    def fake_sampler(model, tokenizer, prompts, sampling, seed):
        assert prompts == [data.rows[i]["prompt"] for i in sampled_rows]
        return [(GROUNDED, False), (GROUNDED.replace("2-bed", "17-bed"), False)][seed % 2:][:1] * len(prompts)

    monkeypatch.setattr(onpolicy, "sample_answers", fake_sampler)
    rows, summary = with_on_policy_rejections(None, None, data.rows, [FACTS] * len(data.rows), 3,
                                              Sampling(0.7, 0.95, 24), 0, tmp_path / ON_POLICY_FILE,
                                              log=lambda *_: None, samples=2, chosen_from="sample",
                                              kinds=data.kinds, keep_kinds=keep)
    records = [json.loads(line) for line in (tmp_path / ON_POLICY_FILE).read_text().splitlines()]
    assert sorted({r["row"] for r in records}) == sampled_rows and summary["keep_kinds"] == keep
    for i in range(3):
        assert (rows[i] == data.rows[i]) == (i not in sampled_rows), i  # kept kinds: the written pair


def test_the_first_rows_reject_the_models_own_wrong_answers_and_a_resume_reuses_them(tiny_model_dir, small_dataset,
                                                                                      tmp_path, tiny_overrides):
    from training.inputs import prepare_data
    from training.jobs import load_model
    from training.onpolicy import Sampling, with_on_policy_rejections

    spec = resolve_job("dpo", overrides={**tiny_overrides, "output_dir": str(tmp_path / "out")})
    model, tokenizer = load_model(spec, tiny_model_dir, None)
    data = prepare_data("dpo", small_dataset["prefs_train"])
    cache = tmp_path / ON_POLICY_FILE
    sampling = Sampling(temperature=0.7, top_p=0.95, max_tokens=24)
    rows, summary = with_on_policy_rejections(model, tokenizer, data.rows, data.listings, 3, sampling, 0, cache,
                                              log=lambda *_: None)
    records = [json.loads(line) for line in cache.read_text().splitlines()]
    assert [r["row"] for r in records] == [0, 1, 2] and summary["sampled"] == 3
    # a 2-layer random model writes nothing grounded (and never ends within 24 tokens): every answer is wrong
    assert summary["replaced"] == 3 and all("cut by the length limit" in r["reasons"] for r in records)
    for record in records:
        row = rows[record["row"]]
        assert row["rejected"] == [{"role": "assistant", "content": record["answer"]}]
        assert row["chosen"] == data.rows[record["row"]]["chosen"] and row["prompt"] == data.rows[record["row"]]["prompt"]
    assert rows[3:] == data.rows[3:]  # the rest keep their written near-misses

    class NoSampling:  # a resumed job must read the cache, not sample again
        def __getattr__(self, name):
            raise AssertionError(f"sampled again ({name})")

    again, _ = with_on_policy_rejections(NoSampling(), tokenizer, data.rows, data.listings, 3, sampling, 0, cache,
                                         log=lambda *_: None)
    assert again == rows


def test_answers_read_back_are_judged_by_todays_check(small_dataset, tmp_path):
    """A resumed job (or one that reuses an earlier run's answers) checks them again: a reason recorded by an
    older check is not trusted."""
    from training.inputs import prepare_data
    from training.onpolicy import Sampling, with_on_policy_rejections

    data = prepare_data("dpo", small_dataset["prefs_train"])
    cache = tmp_path / ON_POLICY_FILE
    cache.write_text("".join(json.dumps({"row": 0, "sample": k, "answer": text, "cut": False, "reasons": []}) + "\n"
                             for k, text in enumerate([GROUNDED, RESTATED])))
    rows, summary = with_on_policy_rejections(None, None, data.rows, [FACTS] * len(data.rows), 1,
                                              Sampling(0.7, 0.95, 24), 0, cache, log=lambda *_: None, samples=2,
                                              chosen_from="sample")
    assert summary["replaced"] == 1 and summary["reasons"] == {"repeats": 1}
    assert rows[0]["chosen"][0]["content"] == GROUNDED and rows[0]["rejected"][0]["content"] == RESTATED


def test_dpo_job_records_what_it_pushed_down(trained, tiny_model_dir, small_dataset, tmp_path, tiny_overrides):
    """The real job: the registered version keeps the sampled answers (a file covered by its content hash) and a
    summary with the sampling used - the arena's."""
    from core.registry import AdapterRegistry
    from training.jobs import train_dpo

    root, sft, _ = trained
    adapter = train_dpo(model_dir=tiny_model_dir, data=small_dataset["prefs_train"], registry_root=root,
                        name="dpo_onpolicy", parent=sft.ref, log=lambda *_: None,
                        overrides={**tiny_overrides, "on_policy_rows": 2, "on_policy_samples": 1,
                                   "on_policy_chosen": "dataset", "run_root": str(tmp_path / "runs")})
    summary = adapter.meta["on_policy"]
    records = [json.loads(line) for line in (adapter.path / ON_POLICY_FILE).read_text().splitlines()]
    assert summary["sampled"] == len(records) == 2 and summary["replaced"] == 2
    assert summary["sampling"] == {"temperature": 0.7, "top_p": 0.95, "max_tokens": 192}  # configs/arena.yaml
    assert adapter.meta["config"]["palate"]["on_policy_rows"] == 2
    assert AdapterRegistry(root).verify(adapter) is None


def test_dpo_job_samples_several_answers_per_prompt_from_the_parent(trained, tiny_model_dir, small_dataset, tmp_path,
                                                                     tiny_overrides):
    """The real job with the quick profile's sampled pairs (on_policy_rows 96): only the rows the job trains are
    sampled (3 steps x 2 rows), every answer is kept, and as the 2-layer random parent writes nothing right, no row
    has a pair to train on and every row keeps its written one (said in the summary)."""
    from training.jobs import train_dpo

    root, sft, _ = trained
    adapter = train_dpo(model_dir=tiny_model_dir, data=small_dataset["prefs_train"], registry_root=root,
                        name="dpo_sampled", parent=sft.ref, log=lambda *_: None,
                        overrides={**tiny_overrides, "on_policy_samples": 2, "run_root": str(tmp_path / "runs")})
    summary = adapter.meta["on_policy"]
    assert adapter.meta["config"]["palate"]["on_policy_rows"] == 96  # configs/train/dpo.yaml, quick
    records = [json.loads(line) for line in (adapter.path / ON_POLICY_FILE).read_text().splitlines()]
    assert sorted((r["row"], r["sample"]) for r in records) == [(row, k) for row in range(6) for k in (0, 1)]
    assert summary["chosen_from"] == "sample" and summary["samples_per_row"] == 2 and summary["rows"] == 6
    assert summary["wrong"] == 12 and summary["replaced"] == 0 and summary["kept_written"] == 6


def test_nucleus_keeps_the_smallest_set_of_likely_tokens_that_reaches_top_p():
    """As the arena's engine samples: the most likely tokens until their mass reaches top_p, nothing past them."""
    import torch

    from training.onpolicy import _nucleus

    torch.manual_seed(0)
    probs = torch.tensor([[0.05, 0.5, 0.3, 0.15]]).repeat(2000, 1)
    assert set(_nucleus(probs, 0.7).tolist()) == {1, 2}  # 0.5 + 0.3 reaches 0.7
    assert set(_nucleus(probs, 0.5).tolist()) == {1}  # the top token alone reaches 0.5
    assert set(_nucleus(probs, 1.0).tolist()) == {0, 1, 2, 3}


def test_the_sampler_drops_an_ended_answer_and_writes_what_each_prompt_alone_would(base_model_dir):
    """Chat prompts of different lengths in one left-padded batch, near-greedy, on the real base model: each answer
    is, token for token, the greedy answer `model.generate` writes for its prompt alone; an answer that ends (here
    the first, at its fourth token: that token stands in for end-of-turn) ends there, and the others go on without it
    to the length limit."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.onpolicy import Sampling, _sample_batch

    model = AutoModelForCausalLM.from_pretrained(base_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    tokenizer.padding_side = "left"
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": request}], tokenize=False,
                                           add_generation_prompt=True)
             for request in ("Describe a 2-bed condo in Riverside.",
                             "Listing copy pls: townhouse, 3bd / 2ba, Stonebridge, 1030 sf")]
    alone = [tokenizer(t, return_tensors="pt", add_special_tokens=False) for t in texts]
    greedy = [model.generate(**ids, do_sample=False, max_new_tokens=12,
                             pad_token_id=tokenizer.pad_token_id)[0, ids["input_ids"].shape[1]:].tolist()
              for ids in alone]
    assert all(len(g) == 12 for g in greedy), "the base model ended an answer early: pick other prompts"
    end = greedy[0][3]
    assert end not in greedy[0][:3] and end not in greedy[1], "pick another stand-in token"
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    assert batch["attention_mask"][0].sum() != batch["attention_mask"][1].sum()  # padded: lengths differ
    with torch.no_grad():
        answers = _sample_batch(model, batch["input_ids"], batch["attention_mask"],
                                Sampling(temperature=1e-4, top_p=1.0, max_tokens=12), end)
    assert answers == [(greedy[0][:3], True), (greedy[1], False)]
