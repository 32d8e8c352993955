"""The serving engine, set up for scoring: Palate's `VllmEngine` with two settings that honest margins need, and
one that makes it fast on CPU.

1. float32 arithmetic. The weights are bf16 values, exactly representable in float32, so float32 gives the log-probs
   of the stored model. In bf16 the same engine drifts 0.3-0.5 nats per ~60-token answer from that (measured on
   SmolLM2-135M; README, "Evaluation", *Precision*) - as large as the margins DPO moves on a quick run. With float32 the
   vLLM engine and the transformers + PEFT reference agree to 1e-3 nats.
2. LoRA restricted to the projection layers (`lora_target_modules`). With `enable_lora`, vLLM 0.32 also wraps the
   tied lm_head in `LogitsProcessorWithLoRA`, whose CPU kernel indexes the LoRA slots per *request* while prompt
   log-probs arrive per *token*: the engine core dies on the first `prompt_logprobs` request (einsum shape error;
   vllm-project/vllm#16668, #29955). PEFT adapters trained by Palate never touch lm_head, so leaving it unwrapped
   changes nothing they compute.
3. On CPU, the worker on every core. vLLM pins its worker to one core and reserves the rest for the scheduler and an
   API process; a scoring engine has no API process, and on 2 cores the default left an adapter's margin scoring at
   0.76x of transformers + PEFT, against 1.43x with the worker on both (benchmarks/RESULTS.md, 2026-12-03).

The dtype is the caller's choice (float32 by default, whatever the server config says); the LoRA target list is
`VllmEngine`'s own (`core.lora.ENGINE_LORA_LAYERS`), so the server's engine is safe to score with too.
`with_scorer` runs a scoring job on either scorer, the engine (started and shut down around it) or the
transformers + PEFT reference.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any


def scoring_engine(model_dir: Path | str, vllm_cfg: Any, dtype: str = "float32") -> Any:
    """A `server.engines.vllm_engine.VllmEngine` (not started) that scores in `dtype` with a LoRA-safe logits
    layer. Call `await engine.start()`; load adapters with `engine.load_adapter(AdapterHandle(...))`."""
    from server.engines.vllm_engine import VllmEngine

    # VllmEngine already restricts LoRA to the projection layers, which keeps prompt log-probs safe with LoRA on.
    engine = VllmEngine(Path(model_dir), vllm_cfg.model_copy(update={"dtype": dtype}))
    engine.dtype = dtype
    engine.worker_on_every_core = True  # no API process beside it: the worker may have every core (point 3)
    return engine


def adapter_handles(models: list[Any], first_lora_id: int = 1) -> dict[str, Any]:
    """An AdapterHandle per adapter among `models` (objects with .ref and .path; the base model has path None)."""
    from server.engines.base import AdapterHandle

    handles = {}
    for model in models:
        if model.path is not None and model.ref not in handles:
            handles[model.ref] = AdapterHandle(model.ref, first_lora_id + len(handles), Path(model.path))
    return handles


async def with_scorer(kind: str, cfg: Any, registry: Any, labels: list[str],
                      job: Callable[[Any, dict[str, Any] | None], Awaitable[Any]], dtype: str = "float32") -> Any:
    """`await job(scorer, handles)` on scorer `kind` - "hf" (transformers + PEFT; handles None: it loads adapters
    from their paths) or "vllm" (a scoring engine with a handle for each of `labels`, their references and the
    references' own, started for the job and shut down after it). `cfg` is the server config (`core.config`)."""
    if kind == "hf":
        from eval.logprobs_hf import HfScorer

        return await job(HfScorer(cfg.model.resolved_dir(), dtype=dtype), None)
    from eval.scoring import resolve_models, with_references

    engine = scoring_engine(cfg.model.resolved_dir(), cfg.server.vllm, dtype=dtype)
    await engine.start()
    try:
        models = with_references(registry, with_references(registry, resolve_models(registry, labels)))
        return await job(engine, adapter_handles(models))
    finally:
        await engine.shutdown()
