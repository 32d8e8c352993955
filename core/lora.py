"""What a LoRA adapter must be for Palate's vLLM server to serve it - the one home of these rules.

Training checks its LoRA settings against them before a run starts (`training.config.check_lora`), `palate adapters
add` checks an adapter trained elsewhere (`training.external.check_adapter`), and the server checks every adapter
again before it reaches the engine (`server.preflight.check_adapter`). Each caller words the error for its user
(a config field, a directory, an API error) around the message `lora_rule_problem` returns.
"""

from __future__ import annotations

from collections.abc import Mapping

# Llama-family projection layers, as PEFT names them in adapter_config.json: everything but embeddings and lm_head.
SERVABLE_TARGET_MODULES = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
# The layers vLLM may wrap for LoRA: the servable modules plus vLLM's packed names (qkv_proj, gate_up_proj) that
# q/k/v and gate/up adapters load into. Not lm_head: vLLM 0.32's CPU LoRA logits layer crashes the engine core on a
# prompt-logprobs request (vllm#16668, #29955).
ENGINE_LORA_LAYERS = ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "gate_proj", "up_proj", "gate_up_proj",
                      "down_proj")
# The largest rank Palate's training produces, and the engine's limit while the registry is empty.
MAX_TRAINED_LORA_RANK = 32


def target_list(targets: object) -> list[str]:
    """PEFT's target_modules as a list: it may be one module name, a list, or missing."""
    return [targets] if isinstance(targets, str) else list(targets or [])


def lora_rule_problem(config: Mapping, max_rank: int, limit_name: str = "the server's limit") -> tuple[str, str] | None:
    """The first serving rule a PEFT LoRA config (adapter_config.json's keys) breaks, as (check, message), or None.
    Checks: every rank (`r` and `rank_pattern`) at most `max_rank`, target modules among SERVABLE_TARGET_MODULES,
    no `modules_to_save`. `limit_name` says where `max_rank` comes from, in the message."""
    ranks = [int(config.get("r") or 0), *(int(r) for r in (config.get("rank_pattern") or {}).values())]
    if max(ranks) > max_rank:
        return "rank", f"LoRA rank {max(ranks)} is above {limit_name} {max_rank}; use rank <= {max_rank}"
    unsupported = sorted(set(target_list(config.get("target_modules"))) - SERVABLE_TARGET_MODULES)
    if unsupported:
        return "target_modules", (f"target modules {unsupported} cannot be served; use a subset of "
                                  f"{sorted(SERVABLE_TARGET_MODULES)}")
    if config.get("modules_to_save"):
        return "modules_to_save", (f"modules_to_save={config['modules_to_save']} trains full modules, which vLLM "
                                   "cannot serve as LoRA; train without modules_to_save")
    return None
