"""Pair reading and TRL-identical tokenization on the real base model's tokenizer and chat template."""

import json
import pytest

from eval.pairs import common_prefix_length, read_pairs, tokenize_pair


@pytest.fixture(scope="module")
def tokenizer(base_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(base_model_dir))


def _write(tmp_path, rows):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROW = {
    "prompt": [{"role": "user", "content": "Describe listing 7."}],
    "chosen": [{"role": "assistant", "content": "Bright 2-bed condo."}],
    "rejected": [{"role": "assistant", "content": "AMAZING!!!"}],
    "kind": "hype",
    "listing": {"id": "L7"},
}


def test_read_pairs_kinds_limit_and_ids(tmp_path):
    rows = [ROW, dict(ROW, kind="vague", id="v1"), dict(ROW, kind="hype")]
    path = _write(tmp_path, rows)
    pairs = read_pairs(path)
    assert [p.kind for p in pairs] == ["hype", "vague", "hype"]
    assert pairs[0].pair_id == "pairs:1" and pairs[1].pair_id == "v1"
    assert [p.pair_id for p in read_pairs(path, kinds={"hype"})] == ["pairs:1", "pairs:3"]
    assert len(read_pairs(path, limit=2)) == 2
    with pytest.raises(ValueError, match="no preference pairs"):
        read_pairs(path, kinds={"wrong_number"})


def test_implicit_prompt_rows_are_split(tmp_path):
    implicit = {"chosen": ROW["prompt"] + ROW["chosen"], "rejected": ROW["prompt"] + ROW["rejected"]}
    pair = read_pairs(_write(tmp_path, [implicit]))[0]
    assert pair.prompt == ROW["prompt"] and pair.chosen == ROW["chosen"]


def test_common_prefix_length():
    assert common_prefix_length([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix_length([], [1]) == 0


def test_tokenize_pair_matches_trl_split(tokenizer, tmp_path):
    pair = tokenize_pair(tokenizer, read_pairs(_write(tmp_path, [ROW]))[0])
    # prompt = the template with the generation prompt; completion = content + end of turn, as the template renders
    prompt_text = tokenizer.apply_chat_template(ROW["prompt"], tokenize=False, add_generation_prompt=True)
    assert tokenizer.decode(pair.prompt_ids) == prompt_text
    assert tokenizer.decode(pair.chosen_ids) == "Bright 2-bed condo.<|im_end|>\n"
    assert tokenizer.decode(pair.rejected_ids) == "AMAZING!!!<|im_end|>\n"
    full = tokenizer.apply_chat_template(ROW["prompt"] + ROW["chosen"], tokenize=True, return_dict=True)["input_ids"]
    assert pair.prompt_ids + pair.chosen_ids == list(full)


def test_tokenize_plain_text_appends_eos(tokenizer, tmp_path):
    row = {"prompt": "Q: ", "chosen": "yes", "rejected": "no"}
    pair = tokenize_pair(tokenizer, read_pairs(_write(tmp_path, [row]))[0])
    assert pair.chosen_ids[-1] == tokenizer.eos_token_id and pair.rejected_ids[-1] == tokenizer.eos_token_id


def test_tokenization_equals_trl_dpo_trainer(tokenizer, tmp_path):
    """Cross-check against TRL's own preprocessing (trl is pinned; `_prepare_dataset` needs only these fields)."""
    from types import SimpleNamespace

    from datasets import Dataset
    from trl import DPOTrainer

    rows = [ROW,
            dict(ROW, prompt=[{"role": "system", "content": "Be factual."}, {"role": "user", "content": "Listing 9?"}],
                 chosen=[{"role": "assistant", "content": "A 3-bed house, 1,520 sq ft.\nNear the Blue Line."}]),
            {"prompt": "Describe: ", "chosen": "Two beds.", "rejected": "Wow!"}]
    ours = [tokenize_pair(tokenizer, p) for p in read_pairs(_write(tmp_path, rows))]
    args = SimpleNamespace(dataset_num_proc=None, max_length=None, truncation_mode="keep_start")
    for row, pair in zip(rows, ours):
        theirs = DPOTrainer._prepare_dataset(SimpleNamespace(_tokenizer=tokenizer), Dataset.from_list([row]),
                                             tokenizer, args, "eval")[0]
        assert (pair.prompt_ids, pair.chosen_ids, pair.rejected_ids) == (
            theirs["prompt_ids"], theirs["chosen_ids"], theirs["rejected_ids"])
