"""The report from stored results: tables name versions and data hashes, plots are written, numbers are the inputs'."""

import json

from eval.report import write_report
from eval.report_tables import headline_table

SHA = "ab" * 32


def _summary(acc, margin, rewards=None):
    return {"n": 2, "chosen_logp": -10.0, "rejected_logp": -12.0, "chosen_logp_per_token": -1.0,
            "rejected_logp_per_token": -1.5, "margin_mean": margin, "margin_median": margin, "accuracy": acc,
            "rewards": rewards}


def _margins():
    rewards = {"chosen": 0.1, "rejected": -0.2, "margins": 0.3, "accuracies": 0.75}
    models = []
    for label, ref, acc, rew in (("base", "base", 0.25, None), ("dpo", "dpo@3", 0.95, rewards)):
        models.append({"label": label, "ref": ref, "kind": "dpo" if rew else "base", "content_sha256": "cd" * 32 if rew else None,
                       "parent": "sft@1" if rew else None, "dataset_sha256": None, "reference": "sft@1" if rew else None,
                       "beta": 0.1 if rew else None,
                       "summary": {"all": _summary(acc, 1.5, rew), "hype": _summary(acc, 2.0, rew)},
                       "pairs": [{"id": "1", "kind": "hype", "margin": -1.0}, {"id": "2", "kind": "hype", "margin": 4.0}]})
    return {"data": {"path": "data/x.jsonl", "sha256": SHA, "n_pairs": 2, "kinds": ["hype"]},
            "scorer": {"name": "vllm", "dtype": "float32"}, "models": models, "created": "2026-11-22T00:00:00Z"}


def _generations():
    verdict = {"score": 0.5, "coverage": 0.5, "covered": [], "missing": [], "invented": [], "hype_terms": [],
               "exclamations": 0, "hedges": [], "words": 30, "length_ok": True}
    summary = {"n": 1, "score": 0.5, "coverage": 0.61, "words": 30, "hype_rate": 0.4, "invented_rate": 0.3,
               "exclamation_rate": 0.0, "hedge_rate": 0.0, "length_off_rate": 0.0}
    return {"data": {"path": "data/p.jsonl", "sha256": "ef" * 32, "n_prompts": 1},
            "sampling": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 200, "seed": 1},
            "models": [{"label": "base", "ref": "base"}, {"label": "dpo", "ref": "dpo@3", "content_sha256": "cd" * 32}],
            "items": [{"verdicts": {"base": verdict, "dpo": dict(verdict, score=0.9)}, "answers": {}}],
            "summary": {"base": summary, "dpo": dict(summary, hype_rate=0.05)},
            "pairwise": {"listing_judge": [{"a": "base", "b": "dpo", "games": 1, "wins": 0, "losses": 1, "ties": 0,
                                            "win_rate": 0.0, "ci_low": 0.0, "ci_high": 0.79}]},
            "created": "2026-11-22T00:00:00Z"}


def test_headline_names_versions_and_hashes():
    table = headline_table(_margins(), _generations())
    assert "dpo → dpo@3" in table and "| base |" in table
    dpo_row = next(line for line in table.splitlines() if line.startswith("| dpo"))
    assert "0.95" in dpo_row and "0.75" in dpo_row and "0.05" in dpo_row  # accuracy, reward accuracy, hype rate
    assert SHA[:12] in table and ("ef" * 6) in table


def test_write_report_writes_markdown_and_plots(tmp_path):
    m, g = tmp_path / "m.json", tmp_path / "g.json"
    m.write_text(json.dumps(_margins()))
    g.write_text(json.dumps(_generations()))
    path = write_report(tmp_path / "out", margins=m, generations=g)
    text = path.read_text()
    for png in ("margins.png", "accuracy_by_kind.png", "judge.png"):
        assert f"]({png})" in text
        assert (tmp_path / "out" / png).stat().st_size > 5000
    assert "near-miss kind" in text and "Pairwise, listing judge" in text
    assert (tmp_path / "out" / "headline.md").read_text().strip() in text
