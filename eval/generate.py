"""`palate eval generate`: every model answers the same held-out prompts with the same fixed sampling settings.

Two ways to reach the models, one interface (`Generator.complete(model, messages, seed) -> Answer`):

- `ServerGenerator`: any OpenAI-compatible server (a running `palate serve`), through the `openai` client.
- `EngineGenerator`: Palate's serving engine in this process (base + adapters in one vLLM engine), prompts rendered
  with the base model's chat template exactly as the server renders them.

Each prompt gets its own seed (`seed + index`), the same for every model, so two models see the same randomness.
The default sampling is the arena's (`configs/arena.yaml`: temperature, top_p, default_max_tokens), because that is
what a person sees; every answer keeps its finish reason, so an answer cut by the length limit is judged as such.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from eval.judge import JudgeConfig, judge_listing
from eval.pairs import file_sha256


@dataclass(frozen=True)
class SamplingSettings:
    """Fixed for a whole evaluation; recorded with its results."""

    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 192
    seed: int = 1234

    @classmethod
    def from_arena(cls, path: Path | str | None = None, seed: int = 1234) -> "SamplingSettings":
        """The arena's own default sampling (what a person voting in the arena is shown)."""
        from core.arena_config import load_arena_config

        arena = load_arena_config(path)
        return cls(arena.temperature, arena.top_p, arena.default_max_tokens, seed)


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: str | None  # "stop" (ended), "length" (cut by max_tokens), None when the backend did not say


@dataclass(frozen=True)
class EvalPrompt:
    prompt_id: str
    messages: list[dict]
    listing: dict | None
    family: str | None = None  # phrasing family (training/prompts.py), when the file records one


def read_prompts(path: Path | str, limit: int | None = None) -> list[EvalPrompt]:
    """Held-out prompts from an SFT file (messages minus the final assistant turn) or a preference file (prompt).
    One prompt per listing and prompt text, in file order."""
    prompts, seen = [], set()
    with Path(path).open() as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            if "prompt" in row:
                messages = row["prompt"] if isinstance(row["prompt"], list) else [{"role": "user", "content": row["prompt"]}]
            elif "messages" in row:
                messages = [m for m in row["messages"]]
                while messages and messages[-1]["role"] == "assistant":
                    messages.pop()
            else:
                raise ValueError(f"{path}:{line_no}: a prompt row needs 'prompt' or 'messages'")
            listing = row.get("listing")
            key = ((listing or {}).get("id"), json.dumps(messages, sort_keys=True))
            if key in seen:
                continue
            seen.add(key)
            prompts.append(EvalPrompt(str(row.get("id") or (listing or {}).get("id") or f"line{line_no}"), messages,
                                      listing, row.get("family")))
            if limit is not None and len(prompts) >= limit:
                break
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts


class Generator(Protocol):
    async def complete(self, model: str, messages: list[dict], seed: int) -> Answer: ...

    async def resolve(self, model: str) -> dict: ...


class ServerGenerator:
    """Generate through an OpenAI-compatible server. `resolve` reads /v1/models (Palate cards carry the exact version
    an alias points at, under `root`, and the adapter's provenance under `palate`)."""

    # Two requests at a time: a Palate server's default fair share per client (server.admission.per_client_slots).
    def __init__(self, base_url: str, sampling: SamplingSettings, api_key: str = "palate", concurrency: int = 2):
        from openai import AsyncOpenAI

        self.client = AsyncOpenAI(base_url=base_url.rstrip("/") + ("" if base_url.rstrip("/").endswith("/v1") else "/v1"),
                                  api_key=api_key, timeout=600)
        self.sampling = sampling
        self.gate = asyncio.Semaphore(concurrency)

    async def resolve(self, model: str) -> dict:
        cards = {card.id: card for card in (await self.client.models.list()).data}
        if model not in cards:
            raise ValueError(f"the server does not serve {model!r}; it serves {sorted(cards)}")
        card = cards[model].model_dump()
        palate = card.get("palate") or {}
        ref = card.get("root") if palate.get("kind") not in (None, "base") else "base"
        return {"label": model, "ref": ref or model, "kind": palate.get("kind", "base"),
                "content_sha256": palate.get("content_sha256"), "parent": card.get("parent"),
                "dataset_sha256": palate.get("dataset_sha256")}

    async def complete(self, model: str, messages: list[dict], seed: int) -> Answer:
        from openai import RateLimitError

        s = self.sampling
        for attempt in range(30):
            try:
                async with self.gate:
                    response = await self.client.chat.completions.create(
                        model=model, messages=messages, temperature=s.temperature, top_p=s.top_p,
                        max_tokens=s.max_tokens, seed=seed)
                break
            except RateLimitError as exc:  # the server's fair share: wait as long as it says, then ask again
                retry = exc.response.headers.get("retry-after") if exc.response is not None else None
                await asyncio.sleep(min(float(retry or 1), 30.0))
        else:
            raise RuntimeError(f"{model}: the server kept answering 429 (fair share); try a lower concurrency")
        choice = response.choices[0]
        return Answer(choice.message.content or "", choice.finish_reason)


class EngineGenerator:
    """Generate with an in-process engine (Engine protocol). `models` maps a label to (resolved model record,
    adapter handle or None for the base model)."""

    def __init__(self, engine: Any, models: dict[str, tuple[dict, Any]], sampling: SamplingSettings):
        self.engine = engine
        self.models = models
        self.sampling = sampling

    async def resolve(self, model: str) -> dict:
        return self.models[model][0]

    async def complete(self, model: str, messages: list[dict], seed: int) -> Answer:
        from server.engines.base import Sampling

        s = self.sampling
        ids = self.engine.tokenizer().apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                          return_dict=True)["input_ids"]
        sampling = Sampling(max_tokens=s.max_tokens, temperature=s.temperature, top_p=s.top_p, seed=seed)
        parts, finish = [], None
        async for delta in self.engine.generate(list(ids), sampling, self.models[model][1],
                                                f"eval-{uuid.uuid4().hex[:12]}"):
            parts.append(delta.text)
            finish = delta.finish_reason or finish
        return Answer("".join(parts), finish)


@asynccontextmanager
async def engine_generator(registry: Any, labels: list[str], sampling: SamplingSettings, model_dir: Path,
                           vllm_cfg: Any):
    """An EngineGenerator over a started in-process serving engine with every adapter among `labels` loaded; the
    engine shuts down when the block ends."""
    from eval.engine import adapter_handles
    from eval.scoring import resolve_models
    from server.engines.vllm_engine import VllmEngine

    models = resolve_models(registry, labels)
    handles = adapter_handles(models)
    engine = VllmEngine(model_dir, vllm_cfg)
    await engine.start()
    try:
        for handle in handles.values():
            await engine.load_adapter(handle)
        table = {m.label: (m.record(), handles.get(m.ref)) for m in models}
        yield EngineGenerator(engine, table, sampling)
    finally:
        await engine.shutdown()


def summarize_verdicts(verdicts: list[dict]) -> dict:
    """Per-model judge summary: means of score, coverage, words and repetition; rates of answers with hype, with
    anything invented, with an exclamation mark, with a length out of bounds, cut by the length limit; invented and
    garbled claims per answer."""
    n = len(verdicts)
    mean = lambda key: sum(v[key] for v in verdicts) / n  # noqa: E731
    known = [v["truncated"] for v in verdicts if v.get("truncated") is not None]
    return {
        "n": n, "score": mean("score"), "coverage": mean("coverage"), "words": mean("words"),
        "hype_rate": sum(bool(v["hype_terms"]) or v["exclamations"] > 0 for v in verdicts) / n,
        "invented_rate": sum(bool(v["invented"]) for v in verdicts) / n,
        "invented_per_answer": sum(len(v["invented"]) for v in verdicts) / n,
        "garbled_per_answer": (sum(len(v["garbled"]) for v in verdicts) / n
                               if all("garbled" in v for v in verdicts) else None),
        # None when the finish reasons were not recorded (older generation files): unknown, not zero
        "truncated_rate": sum(known) / len(known) if known and len(known) == n else None,
        "exclamation_rate": sum(v["exclamations"] > 0 for v in verdicts) / n,
        "hedge_rate": sum(bool(v["hedges"]) for v in verdicts) / n,
        "length_off_rate": sum(not v["length_ok"] for v in verdicts) / n,
        # None for generations judged before the judge measured repetition: unknown, not zero
        "repetition": mean("repetition") if all("repetition" in v for v in verdicts) else None,
    }


async def generate_all(generator: Generator, labels: list[str], prompts: list[EvalPrompt], sampling: SamplingSettings,
                       data: Path | str, judge: JudgeConfig = JudgeConfig(), progress: Any = print) -> dict:
    """Every model answers every prompt; each answer is judged against its listing. Returns JSON-ready results."""
    models = [await generator.resolve(label) for label in labels]
    outputs: dict[str, list[Answer]] = {}
    for label in labels:
        started = time.perf_counter()
        outputs[label] = list(await asyncio.gather(*(
            generator.complete(label, p.messages, sampling.seed + i) for i, p in enumerate(prompts))))
        progress(f"  {label}: {len(prompts)} answers in {time.perf_counter() - started:.1f}s")
    items = []
    for i, prompt in enumerate(prompts):
        answers = {label: outputs[label][i] for label in labels}
        items.append({"prompt_id": prompt.prompt_id, "family": prompt.family, "messages": prompt.messages,
                      "listing": prompt.listing, "answers": {label: a.text for label, a in answers.items()},
                      "finish_reasons": {label: a.finish_reason for label, a in answers.items()}})
    return {"data": {"path": str(data), "sha256": file_sha256(data), "n_prompts": len(prompts)},
            "sampling": asdict(sampling), "models": models,
            **judge_items(items, labels, judge), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def judge_items(items: list[dict], labels: list[str], judge: JudgeConfig = JudgeConfig()) -> dict:
    """Judge every stored answer (its text, finish reason and the prompt's listing) and summarise per model:
    {"judge", "items" (each with fresh "verdicts"), "summary"}. Used right after generating and by `rejudge`."""
    items = [dict(item, verdicts={label: judge_listing(item["answers"][label], item["listing"], judge,
                                                       (item.get("finish_reasons") or {}).get(label)).to_dict()
                                  for label in labels} if item.get("listing") else {})
             for item in items]
    judged = [item for item in items if item["verdicts"]]
    summary = {label: summarize_verdicts([item["verdicts"][label] for item in judged]) for label in labels} \
        if judged else {}
    return {"judge": asdict(judge), "items": items, "summary": summary}


def rejudge(generations: dict, judge: JudgeConfig = JudgeConfig()) -> dict:
    """A generations result judged again by the listing judge as it is now: the same answers, fresh verdicts,
    summaries and listing-judge pairwise (an LLM judge's pairwise, if any, is kept: the answers did not change)."""
    from eval.pairwise import listing_judge_outcomes, win_rates

    sets = []
    for one in result_sets(generations):
        labels = [m["label"] for m in one["models"]]
        again = dict(one, **judge_items(one["items"], labels, judge))
        again["pairwise"] = dict(one.get("pairwise") or {}, listing_judge=win_rates(
            listing_judge_outcomes(again["items"], labels, judge), labels))
        again["rejudged"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        sets.append(again)
    return dict(generations, sets=sets) if "sets" in generations else sets[0]


async def generate_sets(generator: Generator, labels: list[str], sets: list[tuple[Path, list[EvalPrompt]]],
                        sampling: SamplingSettings, judge: JudgeConfig = JudgeConfig(), progress: Any = print) -> dict:
    """`generate_all` on several prompt files (e.g. held-out phrasings and trained phrasings), each judged and compared
    pairwise apart. Returns {"sets": [per-file result with "name" and "pairwise"], "models", "sampling", "created"}."""
    from eval.pairwise import listing_judge_outcomes, win_rates

    results = []
    for path, prompts in sets:
        progress(f"{Path(path).name}: {len(prompts)} prompts")
        result = await generate_all(generator, labels, prompts, sampling, path, judge, progress)
        result["name"] = Path(path).stem
        result["pairwise"] = {"listing_judge": win_rates(listing_judge_outcomes(result["items"], labels, judge),
                                                         labels)}
        results.append(result)
    return {"sets": results, "models": results[0]["models"], "sampling": asdict(sampling),
            "created": results[0]["created"]}


def result_sets(generations: dict) -> list[dict]:
    """The per-file results of a generations file (files written before prompt sets existed hold one)."""
    return generations["sets"] if "sets" in generations else [dict(generations, name=Path(generations["data"]["path"]).stem)]
