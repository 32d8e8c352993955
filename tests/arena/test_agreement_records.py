"""Agreement results are kept in the registry (format 3, evaluations.jsonl) and shown per version in /v1/models and
in the arena's leaderboard, people's and simulated judges' apart; a format-2 registry opens with everything intact."""

from __future__ import annotations

import json

from core.registry import AdapterRegistry
from eval.agreement import agreement_records
from tests.helpers import write_old_registry
from ui.leaderboard_view import agreement_cell, standings_rows


def rate(n: int, agree: float, low: float, high: float) -> dict:
    return {"n": n, "agree": agree, "rate": agree / n, "wilson95": [low, high]}


def result(source: str, votes: int, agree: int) -> dict:
    """A `compute_agreement` result for dpo@1 (reference sft@1) and sft@1 (reference base)."""
    versions = [{"ref": ref, "reference": reference, "overall": rate(votes, agree, 0.2, 0.9),
                 "by_reason": {"hype": rate(1, 1, 0.2, 1.0)}, "margins": {"b1": 0.5}}
                for ref, reference in (("dpo@1", "sft@1"), ("sft@1", "base"))]
    return {"source": source, "votes": votes, "excluded": {}, "beta": 0.1, "versions": versions}


def test_records_keep_rates_by_source_without_pair_margins():
    (dpo_ref, dpo), (sft_ref, sft) = agreement_records(result("simulated", 5, 4))
    assert (dpo_ref, sft_ref) == ("dpo@1", "sft@1")
    assert dpo == {"source": "simulated", "reference": "sft@1", "beta": 0.1, "votes": 5,
                   "overall": rate(5, 4, 0.2, 0.9), "by_reason": {"hype": rate(1, 1, 0.2, 1.0)}}
    assert sft["reference"] == "base" and "margins" not in sft


def test_models_and_leaderboard_show_the_latest_record_per_source(fake_client):
    registry = fake_client.app.state.models.registry
    for source, votes, agree in (("people", 3, 1), ("people", 3, 2), ("simulated", 8, 6)):
        for ref, record in agreement_records(result(source, votes, agree)):
            if ref == "dpo@1":
                registry.record_evaluation(ref, "agreement", record)
    cards = {c["id"]: c for c in fake_client.get("/v1/models").json()["data"]}
    agreement = cards["dpo@1"]["palate"]["evaluation"]["agreement"]
    assert agreement["people"]["overall"]["agree"] == 2  # the later of the two people's records
    assert agreement["simulated"]["overall"] == rate(8, 6, 0.2, 0.9) and agreement["simulated"]["votes"] == 8
    assert cards["sft@1"]["palate"]["evaluation"]["agreement"] == {"people": None, "simulated": None}
    assert "evaluation" not in (cards["base"]["palate"] or {})

    for source, agree in (("people", 2), ("all", 2), ("simulated", 6)):
        board = fake_client.get("/v1/arena/leaderboard", params={"source": source}).json()
        by = {s["contestant"]: s["agreement"] for s in board["standings"]}
        assert by["dpo@1"]["overall"]["agree"] == agree and by["sft@1"] is None and by["base"] is None
        assert by["dpo@1"]["source"] == ("simulated" if source == "simulated" else "people")
        row = {r[1]: r for r in standings_rows(board)}
        assert row["dpo@1"][-1] == agreement_cell(by["dpo@1"]) and row["base"][-1] == "–"


def test_agreement_cell_says_whose_votes():
    assert agreement_cell({"source": "people", "overall": rate(3, 2, 0.2077, 0.9385)}) == \
        "67% (21–94%, n=3, people's votes)"
    assert agreement_cell({"source": "simulated", "overall": rate(4, 3, 0.3, 0.95)}).endswith("simulated judges' votes)")
    empty = {"n": 0, "agree": 0, "rate": None, "wilson95": [0.0, 1.0]}
    assert agreement_cell(None) == "–" and agreement_cell({"source": "people", "overall": empty}) == "–"


def test_a_format_2_registry_opens_with_every_version_and_promotion(tmp_path):
    """As the previous release wrote it: versions, aliases and promotions.jsonl, no evaluations.jsonl."""
    root = write_old_registry(tmp_path / "adapters")
    promotions = [{"alias": "dpo", "from": None, "to": "dpo@1", "forced": True, "evidence": {"reason": "first"},
                   "time": "2026-11-30T00:00:00Z"},
                  {"alias": "dpo", "from": "dpo@1", "to": "dpo@2", "forced": False,
                   "evidence": {"checks": [{"name": "margins", "passed": True, "detail": "0.93 vs 0.90"}]},
                   "time": "2026-11-30T01:00:00Z"}]
    (root / "promotions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in promotions))
    registry = AdapterRegistry(root)
    assert [v.ref for v in registry.all_versions()] == ["dpo@1", "dpo@2", "sft@1"]
    assert registry.aliases() == {"sft": "sft@1", "dpo": "dpo@2"} and registry.promotions() == promotions
    assert registry.evaluations() == []
    registry.record_evaluation("dpo@2", "agreement", {"source": "people", "votes": 0})
    assert [r["ref"] for r in registry.evaluations(kind="agreement")] == ["dpo@2"]
    assert registry.promotions() == promotions and registry.resolve("dpo").ref == "dpo@2"
