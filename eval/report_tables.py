"""Markdown tables from margins / generations results (pure: dicts in, strings out).

Every table names the exact model versions in its rows and ends with the provenance of its numbers: the data file
and its sha256, the scorer or sampling settings.
"""

from __future__ import annotations

from collections.abc import Sequence


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _f(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def model_name(model: dict) -> str:
    """'dpo → dpo@2' for an alias, 'sft@1' for an exact version, 'base'."""
    label, ref = model.get("label"), model.get("ref")
    return ref if label in (None, ref) else f"{label} → {ref}"


def margins_provenance(result: dict) -> str:
    data, scorer = result["data"], result["scorer"]
    versions = ", ".join(f"{m['ref']}" + (f" (sha {m['content_sha256'][:10]})" if m.get("content_sha256") else "")
                         for m in result["models"])
    return (f"_{data['n_pairs']} held-out pairs from `{data['path']}` (sha256 `{data['sha256'][:12]}`), scored by "
            f"{scorer['name']} in {scorer.get('dtype') or 'default dtype'}; models: {versions}; {result['created']}._")


def margins_table(result: dict) -> str:
    rows = []
    for m in result["models"]:
        s = m["summary"]["all"]
        r = s.get("rewards")
        rows.append([model_name(m), s["n"], _f(s["accuracy"]), _f(s["margin_mean"]), _f(s["margin_median"]),
                     _f(s["chosen_logp_per_token"], 3), _f(s["rejected_logp_per_token"], 3),
                     f"{m['reference']} (β={m['beta']})" if r else "–", _f(r["accuracies"]) if r else "–",
                     _f(r["margins"], 3) if r else "–"])
    header = ["model", "pairs", "pref. accuracy", "margin mean", "margin median", "chosen logp/tok",
              "rejected logp/tok", "DPO reference", "reward accuracy", "reward margin"]
    return _table(header, rows) + "\n\n" + margins_provenance(result)


def kind_table(result: dict, key: str = "accuracy") -> str:
    """Rows: near-miss kinds; columns: models; cells: preference accuracy (or another summary key)."""
    kinds = [k for k in result["models"][0]["summary"] if k != "all"] + ["all"]
    rows = [[kind, result["models"][0]["summary"][kind]["n"]] +
            [_f(m["summary"][kind][key]) for m in result["models"]] for kind in kinds]
    return _table(["near-miss kind", "pairs"] + [model_name(m) for m in result["models"]], rows)


SET_TITLES = {
    "prompts_heldout": "held-out phrasings (families no adapter trained on: shorthand, questions)",
    "sft_eval": "trained phrasings (fact sheets, prose, notes, rewrites, MLS lines) on held-out listings",
    "prompts_handwritten": "prompts written by hand, not by the dataset generator",
}


def set_title(result: dict) -> str:
    name = result.get("name") or ""
    return SET_TITLES.get(name, name)


def generations_provenance(result: dict) -> str:
    data, s = result["data"], result["sampling"]
    versions = ", ".join(m["ref"] + (f" (sha {m['content_sha256'][:10]})" if m.get("content_sha256") else "")
                         for m in result["models"])
    return (f"_{data['n_prompts']} held-out prompts from `{data['path']}` (sha256 `{data['sha256'][:12]}`); sampling "
            f"temperature {s['temperature']}, top_p {s['top_p']}, max_tokens {s['max_tokens']}, seed {s['seed']}+i; "
            f"models: {versions}; {result['created']}._")


def generations_table(result: dict) -> str:
    rows = []
    for m in result["models"]:
        s = result["summary"].get(m["label"])
        if not s:
            continue
        rows.append([model_name(m), s["n"], _f(s["score"]), _f(s["coverage"]), _f(s["hype_rate"]),
                     _f(s["invented_rate"]), _f(s.get("invented_per_answer")), _f(s.get("garbled_per_answer")),
                     _f(s["hedge_rate"]), _f(s.get("repetition")), _f(s.get("truncated_rate")), _f(s["words"], 0)])
    header = ["model", "answers", "judge score", "facts covered", "hype rate", "invented-fact rate",
              "invented per answer", "garbled per answer", "hedge rate", "repeated 3-grams", "cut by length", "words"]
    out = _table(header, rows)
    for name, title in (("listing_judge", "listing judge"), ("llm_judge", "LLM judge (both orders)")):
        pairs = (result.get("pairwise") or {}).get(name)
        if pairs:
            out += f"\n\nPairwise, {title} (ties count half; Wilson 95% interval):\n\n" + pairwise_table(pairs)
    return out + "\n\n" + generations_provenance(result)


def pairwise_table(rows: Sequence[dict]) -> str:
    return _table(["A", "B", "games", "A wins", "B wins", "ties", "A win rate", "95% CI"],
                  [[r["a"], r["b"], r["games"], r["wins"], r["losses"], r["ties"], _f(r["win_rate"]),
                    f"[{_f(r['ci_low'])}, {_f(r['ci_high'])}]"] for r in rows])


def headline_table(margins: dict | None, generations: dict | None) -> str:
    """One row per model: held-out preference accuracy and margin, DPO reward accuracy, judged quality and
    degeneration on the first prompt set of `generations` (a single set's result; see `eval.generate.result_sets`)."""
    labels: list[str] = []
    names: dict[str, str] = {}
    for result in (margins, generations):
        for m in (result or {}).get("models", []):
            if m["label"] not in labels:
                labels.append(m["label"])
                names[m["label"]] = model_name(m)
    by_label = {m["label"]: m for m in (margins or {}).get("models", [])}
    summaries = (generations or {}).get("summary", {})
    rows = []
    for label in labels:
        s = by_label.get(label, {}).get("summary", {}).get("all")
        r = (s or {}).get("rewards")
        g = summaries.get(label)
        rows.append([names[label], _f(s["accuracy"]) if s else "–", _f(s["margin_mean"]) if s else "–",
                     _f(r["accuracies"]) if r else "–", _f(g["score"]) if g else "–",
                     _f(g["coverage"]) if g else "–", _f(g["hype_rate"]) if g else "–",
                     _f(g.get("invented_per_answer")) if g else "–", _f(g.get("repetition")) if g else "–",
                     _f(g.get("truncated_rate")) if g else "–"])
    header = ["model", "held-out pref. accuracy", "margin mean (nats)", "DPO reward accuracy", "judge score",
              "facts covered", "hype rate", "invented per answer", "repeated 3-grams", "cut by length"]
    notes = [p for p in ((margins_provenance(margins) if margins else None),
                         (generations_provenance(generations) if generations else None)) if p]
    return _table(header, rows) + "\n\n" + "\n".join(notes)


def _quote(text: str, limit: int = 600) -> str:
    text = " ".join(text.split())
    return (text[:limit] + " […]") if len(text) > limit else text


def samples_section(result: dict, count: int = 3) -> str:
    """A few prompts with every model's answer beside each other (same prompt, same seed), so a reader sees what the
    numbers summarise. Picks prompts spread over the file, not the best ones."""
    items = [item for item in result["items"] if item.get("verdicts")]
    if not items:
        return ""
    step = max(1, len(items) // count)
    chosen = items[::step][:count]
    labels = [m["label"] for m in result["models"]]
    names = {m["label"]: model_name(m) for m in result["models"]}
    out = []
    for item in chosen:
        prompt = (item.get("messages") or [{"content": "(prompt not recorded)"}])[-1]["content"]
        out.append(f"**Prompt** ({item.get('family') or 'unknown family'}, `{item.get('prompt_id', '?')}`): {_quote(prompt, 400)}")
        out.append("")
        for label in labels:
            v = item["verdicts"].get(label)
            if v is None:
                continue
            finish = (item.get("finish_reasons") or {}).get(label)
            flags = [f"score {v['score']:.2f}", f"coverage {v['coverage']:.2f}",
                     f"invented {len(v['invented'])}", f"repeated 3-grams {v.get('repetition', 0):.2f}"]
            if finish == "length":
                flags.append("cut by the length limit")
            out.append(f"- **{names[label]}** ({', '.join(flags)}): {_quote(item.get('answers', {}).get(label, ''))}")
        out.append("")
    return "\n".join(out)
