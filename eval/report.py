"""`palate eval report`: one Markdown page plus PNG plots in `reports/<time>/` from stored results.

Inputs are the JSON files `palate eval margins` and `palate eval generate` wrote (nothing is rescored), the vote store
(arena leaderboard with bootstrap intervals, `core.ratings`), and each adapter's training history (metrics.json
in its registry directory). Every table names model versions and the data hash it came from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eval.generate import result_sets
from eval.report_tables import (generations_table, headline_table, kind_table, margins_table, model_name,
                                pairwise_table, samples_section, set_title)


def latest(directory: Path, pattern: str) -> Path | None:
    files = sorted(Path(directory).glob(pattern), key=lambda p: p.stat().st_mtime)
    return files[-1] if files else None


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_margins(margins: dict, path: Path) -> Path:
    """Histogram of per-pair margins log π(chosen) − log π(rejected), one outline per model."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    values = [[p["margin"] for p in m["pairs"]] for m in margins["models"]]
    lo, hi = min(min(v) for v in values), max(max(v) for v in values)
    bins = [lo + (hi - lo) * i / 40 for i in range(41)] if hi > lo else 10
    for m, v in zip(margins["models"], values):
        ax.hist(v, bins=bins, histtype="step", linewidth=1.8, label=f"{model_name(m)} (acc {m['summary']['all']['accuracy']:.2f})")
    ax.axvline(0, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("margin: log π(chosen) − log π(rejected)  [nats, summed over tokens]")
    ax.set_ylabel("held-out pairs")
    ax.set_title(f"Margin distribution ({margins['data']['n_pairs']} pairs, data {margins['data']['sha256'][:8]})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_accuracy_by_kind(margins: dict, path: Path) -> Path:
    plt = _plt()
    kinds = [k for k in margins["models"][0]["summary"] if k != "all"]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(margins["models"])
    for i, m in enumerate(margins["models"]):
        xs = [k + i * width for k in range(len(kinds))]
        ax.bar(xs, [m["summary"][k]["accuracy"] for k in kinds], width=width, label=model_name(m))
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(kinds))], kinds, rotation=15)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("preference accuracy (margin > 0)")
    ax.set_title("Held-out preference accuracy by near-miss kind")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_judge(generations: dict, path: Path) -> Path:
    plt = _plt()
    models = [m for m in generations["models"] if m["label"] in generations["summary"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    scores = [[item["verdicts"][m["label"]]["score"] for item in generations["items"] if item["verdicts"]]
              for m in models]
    left.boxplot(scores, tick_labels=[model_name(m) for m in models])
    left.set_ylabel("listing-judge score")
    left.set_title("Judge score per answer")
    rates = ["coverage", "hype_rate", "invented_rate"]
    width = 0.8 / len(models)
    for i, m in enumerate(models):
        s = generations["summary"][m["label"]]
        right.bar([k + i * width for k in range(len(rates))], [s[r] for r in rates], width=width, label=model_name(m))
    right.set_xticks([k + 0.4 - width / 2 for k in range(len(rates))], ["facts covered", "hype rate", "invented rate"])
    right.set_ylim(0, 1.05)
    right.legend(fontsize=8)
    right.set_title(f"{generations['data']['n_prompts']} held-out prompts")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_training(curves: dict[str, list[dict]], path: Path) -> Path | None:
    """Loss (and DPO reward accuracy, where logged) against step, one line per adapter version."""
    if not curves:
        return None
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for ref, history in curves.items():
        steps = [h for h in history if "loss" in h and "step" in h]
        left.plot([h["step"] for h in steps], [h["loss"] for h in steps], label=ref)
        acc = [h for h in history if "rewards/accuracies" in h and "step" in h and "eval_loss" not in h]
        if acc:
            right.plot([h["step"] for h in acc], [h["rewards/accuracies"] for h in acc], label=ref)
    left.set_xlabel("step"), left.set_ylabel("training loss"), left.legend(fontsize=8)
    right.set_xlabel("step"), right.set_ylabel("rewards/accuracies (train batches)"), right.set_ylim(0, 1.05)
    right.legend(fontsize=8)
    fig.suptitle("Training curves (from each adapter's metrics.json)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def training_curves(registry: Any, refs: list[str]) -> dict[str, list[dict]]:
    curves = {}
    for ref in refs:
        if ref == "base":
            continue
        try:
            version = registry.resolve(ref)
        except Exception:
            continue
        metrics = version.path / "metrics.json"
        if metrics.is_file():
            curves[version.ref] = json.loads(metrics.read_text())
    return curves


def arena_leaderboard(database_url: str | None) -> dict | None:
    if not database_url:
        return None
    try:
        from core.config import PROJECT_ROOT
        from core.votes import VoteStore
        from core.leaderboard import build_leaderboard
        from core.ratings import Outcome

        store = VoteStore(database_url, root=PROJECT_ROOT)
        try:
            outcomes = [Outcome(a, b, w) for a, b, w in store.outcomes()]
        finally:
            store.close()
    except Exception as exc:  # a missing or foreign database must not sink the whole report
        return {"error": str(exc)}
    if not outcomes:
        return None
    return build_leaderboard(outcomes).to_dict()


def leaderboard_table(board: dict) -> str:
    rows = [f"| {s['rank']} | {s['contestant']} | {s['rating']:.0f} | [{s['ci_low']:.0f}, {s['ci_high']:.0f}] | "
            f"{s['votes']} | {s['wins']}/{s['losses']}/{s['ties']} |{' provisional' if s['provisional'] else ''}"
            for s in board["standings"]]
    return "\n".join(["| rank | model | rating (BT) | 95% bootstrap CI | votes | W/L/T |", "|---|---|---|---|---|---|",
                      *rows]) + f"\n\n_{board['total_votes']} arena votes, {board['bootstrap_rounds']} bootstrap rounds._"


def write_report(out_dir: Path, *, margins: Path | None, generations: Path | None, registry: Any = None,
                 database_url: str | None = None, agreement: Path | list[Path] | None = None) -> Path:
    """Write `out_dir/report.md` and its plots; returns the Markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    m = json.loads(Path(margins).read_text()) if margins else None
    g_all = json.loads(Path(generations).read_text()) if generations else None
    sets = result_sets(g_all) if g_all else []
    g = sets[0] if sets else None  # the headline is the first set: held-out phrasings by default
    headline = headline_table(m, g)
    if g:
        headline = f"Generations: {set_title(g)}.\n\n" + headline
    sections = ["# Palate evaluation report", "", "## Headline", "", headline, ""]
    if m:
        plot_margins(m, out_dir / "margins.png")
        plot_accuracy_by_kind(m, out_dir / "accuracy_by_kind.png")
        sections += ["## Margins on held-out pairs", "", margins_table(m), "", "![margins](margins.png)", "",
                     "### Preference accuracy by near-miss kind", "", kind_table(m), "",
                     "![accuracy by kind](accuracy_by_kind.png)", ""]
    for index, one in enumerate(sets):
        plot = "judge.png" if index == 0 else f"judge-{one.get('name') or index}.png"
        plot_judge(one, out_dir / plot)
        sections += [f"## Generations: {set_title(one)}", "", generations_table(one), "", f"![judge]({plot})", "",
                     "### What the answers look like", "", samples_section(one), ""]
    board = arena_leaderboard(database_url)
    if board and "error" not in board:
        sections += ["## Arena leaderboard", "", leaderboard_table(board), ""]
        pairs = [{"a": board["contestants"][i], "b": board["contestants"][j], "games": c["games"],
                  "wins": None, "losses": None, "ties": None, "win_rate": c["win_rate"], "ci_low": c["ci_low"],
                  "ci_high": c["ci_high"]}
                 for i, row in enumerate(board["matrix"]) for j, c in enumerate(row) if j > i and c["games"]]
        if pairs:
            sections += ["Pairwise arena win rates:", "", pairwise_table(pairs).replace("None", "–"), ""]
    elif board:
        sections += ["## Arena leaderboard", "", f"_Vote store unreadable: {board['error']}_", ""]
    agreement = [agreement] if isinstance(agreement, (str, Path)) else list(agreement or [])
    for path in agreement:
        from eval.agreement import agreement_table  # (it imports the server's vote rules: only when needed)

        a = json.loads(Path(path).read_text())
        whose = {"people": "people's", "simulated": "simulated judges' (`palate loop`)"}[a.get("source", "people")]
        title = "## Agreement with people" if a.get("source", "people") == "people" else \
            "## Agreement with simulated judges (not people)"
        sections += [title, "", f"Does the implicit reward prefer the winner? {a['votes']} {whose} votes "
                     f"(excluded: {a['excluded']}); rate with Wilson 95 %.", "", agreement_table(a), ""]
    refs = [x["ref"] for x in (m or g or {}).get("models", [])]
    if registry is not None and plot_training(training_curves(registry, refs), out_dir / "training.png"):
        sections += ["## Training curves", "", "![training](training.png)", ""]
    sources = [f"- margins: `{margins}`" if margins else None, f"- generations: `{generations}`" if generations else None,
               f"- votes: `{database_url}`" if board else None, *[f"- agreement: `{p}`" for p in agreement]]
    sections += ["## Sources", "", *[s for s in sources if s]]
    path = out_dir / "report.md"
    path.write_text("\n".join(sections) + "\n")
    (out_dir / "headline.md").write_text(headline + "\n")
    return path
