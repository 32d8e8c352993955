"""generate_all with a stand-in generator: same prompts and seeds for every model, judged against each listing."""

import asyncio
import json

import pytest

from eval.generate import Answer, SamplingSettings, generate_all, read_prompts

FACTS = {"id": "T-1", "property_type": "condo", "beds": 2, "baths": 1.0, "area_sqft": 800, "neighbourhood": "Elm Hill",
         "transit": "a 4-minute walk to the Green Line", "transit_minutes": 4, "features": ["heat pump"],
         "monthly_fee": None, "year_built": 2001, "condition": "well maintained"}
GOOD = ("Well maintained 2-bed, 1-bath condo in Elm Hill: 800 sq ft, built in 2001, with a heat pump. "
        "A 4-minute walk to the Green Line.")


class Scripted:
    def __init__(self):
        self.calls = []

    async def resolve(self, model):
        return {"label": model, "ref": {"base": "base", "dpo": "dpo@2"}[model]}

    async def complete(self, model, messages, seed):
        self.calls.append((model, messages[-1]["content"], seed))
        if model == "dpo":
            return Answer(GOOD, "stop")
        return Answer("STUNNING condo in Elm Hill with a rooftop terrace!!", "length")


def test_generate_all_judges_every_answer(tmp_path):
    rows = [{"listing": dict(FACTS, id=f"T-{i}"), "messages": [{"role": "user", "content": f"Describe {i}"},
                                                                {"role": "assistant", "content": "x"}]}
            for i in range(3)]
    rows.append(rows[0])  # duplicate prompt: read once
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompts = read_prompts(path)
    assert len(prompts) == 3 and prompts[0].messages == [{"role": "user", "content": "Describe 0"}]
    generator = Scripted()
    result = asyncio.run(generate_all(generator, ["base", "dpo"], prompts, SamplingSettings(seed=10), path,
                                      progress=lambda _: None))
    # same prompt -> same seed for both models
    seeds = {(m, p): s for m, p, s in generator.calls}
    assert seeds[("base", "Describe 2")] == seeds[("dpo", "Describe 2")] == 12
    base, dpo = result["summary"]["base"], result["summary"]["dpo"]
    assert base["hype_rate"] == 1.0 and base["invented_rate"] == 1.0 and dpo["hype_rate"] == 0.0
    assert dpo["invented_rate"] == 0.0 and dpo["coverage"] == pytest.approx(1.0)
    assert [m["ref"] for m in result["models"]] == ["base", "dpo@2"] and len(result["data"]["sha256"]) == 64
    # finish reasons are kept and judged: base's answers were all cut by the length limit
    assert base["truncated_rate"] == 1.0 and dpo["truncated_rate"] == 0.0
    assert result["items"][0]["finish_reasons"] == {"base": "length", "dpo": "stop"}
    assert result["items"][0]["verdicts"]["base"]["truncated"] is True


def test_default_sampling_is_the_arenas(tmp_path):
    arena = tmp_path / "arena.yaml"
    arena.write_text("temperature: 0.4\ntop_p: 0.8\ndefault_max_tokens: 77\n")
    assert SamplingSettings.from_arena(arena, seed=5) == SamplingSettings(0.4, 0.8, 77, 5)
    from core.arena_config import load_arena_config

    shipped = load_arena_config()
    s = SamplingSettings.from_arena()
    assert (s.temperature, s.top_p, s.max_tokens) == (shipped.temperature, shipped.top_p, shipped.default_max_tokens)


def test_rejudge_scores_the_stored_answers_again_and_keeps_them(tmp_path, capsys):
    """`palate eval rejudge`: a generations file whose verdicts came from an older judge (here: planted, as if that
    judge missed a garbled number) gets fresh verdicts, summaries and pairwise from the same answers; the answers,
    seeds and models stay; a file that is not a generations file is refused with exit 2."""
    from eval.generate import generate_sets
    from core.cli import main as palate

    rows = [{"listing": dict(FACTS, id=f"T-{i}"), "messages": [{"role": "user", "content": f"Describe {i}"}]}
            for i in range(2)]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = asyncio.run(generate_sets(Scripted(), ["base", "dpo"], [(path, read_prompts(path))],
                                       SamplingSettings(seed=10), progress=lambda _: None))
    one = result["sets"][0]
    one["items"][0]["answers"]["dpo"] = GOOD + " Across 4 days a month."  # a fact's number under a foreign unit
    stale = dict(one["items"][0]["verdicts"]["dpo"])  # what the older judge said: nothing invented
    assert stale["invented"] == [] and one["summary"]["dpo"]["invented_rate"] == 0.0
    written = tmp_path / "generations.json"
    written.write_text(json.dumps(result))

    out = tmp_path / "rejudged.json"
    assert palate(["eval", "rejudge", str(written), "--out", str(out)]) == 0
    again = json.loads(out.read_text())["sets"][0]
    verdict = again["items"][0]["verdicts"]["dpo"]
    assert verdict["garbled"] == ["unit:4 days"] and verdict["score"] < stale["score"]
    assert again["summary"]["dpo"]["invented_rate"] == 0.5 and "rejudged" in again
    assert [i["answers"] for i in again["items"]] == [i["answers"] for i in one["items"]]
    assert again["sampling"] == one["sampling"] and again["models"] == one["models"]
    assert again["pairwise"]["listing_judge"] and "dpo" in capsys.readouterr().out

    assert palate(["eval", "rejudge", str(path)]) == 2  # a prompts file, not generations
    assert "is not a generations file" in capsys.readouterr().err
