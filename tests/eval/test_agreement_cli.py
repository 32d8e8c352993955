"""`palate eval agreement` on a real vote store and the real base model (transformers + PEFT scorer): people's and
simulated judges' votes apart, each result written as a report and recorded in the registry for /v1/models."""

from __future__ import annotations

import json

from core.votes import VoteStore
from tests.eval.rows import LISTING_ROWS
from tests.eval.test_agreement import battle


def store_votes(url: str) -> None:
    """Two people's votes and one simulated judge's, each for the listing's grounded answer (side A)."""
    store = VoteStore(url)
    for i, (row, ui_version) in enumerate(zip(LISTING_ROWS, ("arena-ui/2", "arena-ui/2", "palate-loop"))):
        record = battle(f"b{i}", row["chosen"][0]["content"], row["rejected"][0]["content"], "A",
                        ui_version=ui_version)
        record.prompt = row["prompt"][0]["content"]
        vote, record.vote = record.vote, None
        store.create_battle(record)
        for side in record.sides.values():
            store.finish_side(record.id, side)
        store.record_vote(record.id, vote.winner, ui_version=ui_version, reasons=["grounded"] if i == 0 else None)
    store.close()


def test_cli_scores_each_source_apart_and_records_it(registry_with_adapters, tmp_path, capsys):
    from core.cli import main

    url = f"sqlite:///{tmp_path / 'votes.db'}"
    store_votes(url)
    registry = registry_with_adapters
    common = ["eval", "agreement", "--model", "dpo@2", "--engine", "hf", "--registry", str(registry.root),
              "--database-url", url]
    assert main([*common, "--out", str(tmp_path / "people.json")]) == 0
    printed = capsys.readouterr().out
    assert "people's votes scored: 2; excluded: {'simulated': 1}" in printed and "dpo@2 vs base" in printed
    assert main([*common, "--votes", "simulated", "--out", str(tmp_path / "sim.json")]) == 0
    assert "simulated judges' votes scored: 1; excluded: {'people': 2}" in capsys.readouterr().out

    people = json.loads((tmp_path / "people.json").read_text())
    simulated = json.loads((tmp_path / "sim.json").read_text())
    assert (people["source"], people["votes"], simulated["source"], simulated["votes"]) == ("people", 2, "simulated", 1)
    assert set(people["versions"][0]["margins"]) == {"b0", "b1"} and set(simulated["versions"][0]["margins"]) == {"b2"}
    records = registry.evaluations("dpo@2", "agreement")
    assert [(r["source"], r["votes"], r["reference"]) for r in records] == [("people", 2, "base"),
                                                                           ("simulated", 1, "base")]
    assert records[0]["overall"] == people["versions"][0]["overall"]
    assert records[0]["by_reason"]["grounded"]["n"] == 1 and records[0]["report"] == str(tmp_path / "people.json")

    assert main([*common, "--no-record", "--out", str(tmp_path / "again.json")]) == 0
    assert len(registry.evaluations()) == 2
