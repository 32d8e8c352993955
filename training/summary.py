"""`palate adapters show NAME@V`: one adapter version's training summary, as text, from its palate.json.

    adapter_summary(registry, adapter) -> str

Says what it is (kind, parent, base model, aliases), how it was trained (profile, steps, learning rate, DPO beta and
loss, world size and the batch arithmetic), on what (rows used, held-out rows scored), what came out (final train
values, held-out eval metrics; for DPO the first and last chosen log-probs and entropy, so likelihood displacement is
visible without opening the plot), and where the curves are: metrics.png, metrics.json and the trackers' logs/.
"""

from __future__ import annotations

from core.registry import AdapterRegistry, AdapterVersion

TRACKER_HINTS = {
    "tensorboard": "tensorboard --logdir {path}",
    "trackio": "TRACKIO_DIR={path} trackio show --project palate",
}


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _trend(history: list[dict], key: str) -> str | None:
    points = [e[key] for e in history if key in e and "loss" in e]
    return f"{_fmt(points[0])} -> {_fmt(points[-1])} over {len(points)} logged steps" if points else None


def adapter_summary(registry: AdapterRegistry, adapter: AdapterVersion) -> str:
    """The text `palate adapters show` prints for `adapter` (see the module docstring)."""
    meta = adapter.meta
    aliases = sorted(alias for alias, target in registry.aliases().items() if target == adapter.ref)
    lines = [f"{adapter.ref}  ({meta.get('kind', 'external')})  {adapter.path}",
             f"  parent:      {meta.get('parent') or '-'}",
             f"  base model:  {(meta.get('base_model') or {}).get('id', '-')}",
             f"  aliases:     {', '.join(aliases) or '-'}",
             f"  created:     {meta.get('created', '-')}"]
    return "\n".join(lines + _run_lines(meta) + _result_lines(adapter))


def _run_lines(meta: dict) -> list[str]:
    """How the adapter was trained: recipe, processes, data, held-out evaluation, timing."""
    trl = (meta.get("config") or {}).get("trl") or {}
    palate = (meta.get("config") or {}).get("palate") or {}
    lines = []
    if trl:
        recipe = [f"profile {palate.get('profile', '-')}", f"max_steps {trl.get('max_steps')}",
                  f"lr {_fmt(trl.get('learning_rate'))}"]
        if meta.get("kind") == "dpo":
            recipe += [f"beta {_fmt(trl.get('beta'))}", f"loss_type {trl.get('loss_type')}"]
        lines.append(f"  recipe:      {', '.join(recipe)}")
    world = meta.get("distributed")
    if world:
        lines.append(f"  processes:   world size {world['world_size']} x per-device batch "
                     f"{world['per_device_train_batch_size']} x gradient accumulation "
                     f"{world['gradient_accumulation_steps']} = effective batch {world['effective_batch_size']}"
                     + (f" ({world['backend']})" if world.get("backend") else ""))
    dataset = meta.get("dataset") or {}
    if dataset.get("train"):
        lines.append(f"  train data:  {dataset['train'].get('rows_used')} rows used ({dataset['train'].get('path')})")
    evaluation = meta.get("evaluation")
    if evaluation:
        lines.append(f"  held-out:    {evaluation['rows']} rows, each scored "
                     f"{'once' if evaluation['repeats'] == 1 else str(evaluation['repeats']) + ' times'} "
                     f"across {evaluation['world_size']} process(es)")
    timing = meta.get("timing") or {}
    if timing:
        lines.append(f"  timing:      {timing.get('train_seconds')} s training, {timing.get('eval_seconds')} s eval, "
                     f"{timing.get('global_step')} steps" + (f", resumed from {timing['resumed_from']}"
                                                             if timing.get("resumed_from") else ""))
    return lines


def _result_lines(adapter: AdapterVersion) -> list[str]:
    """What training measured (final metrics, trends of the logged history) and where its curves are."""
    import json

    lines = []
    metrics = adapter.meta.get("metrics") or {}
    for part in ("train", "eval"):
        values = metrics.get(part) or {}
        if values:
            shown = ", ".join(f"{key}={_fmt(value)}" for key, value in sorted(values.items())
                              if not key.endswith(("runtime", "per_second")))
            lines.append(f"  {part + ':':12s} {shown}")
    history_path = adapter.path / "metrics.json"
    if history_path.is_file():
        history = json.loads(history_path.read_text())
        for key in ("loss", "logps/chosen", "entropy"):
            trend = _trend(history, key)
            if trend:
                lines.append(f"  {key + ':':12s} {trend}")
    lines.append("  curves:")
    for file_name in ("metrics.png", "metrics.json"):
        if (adapter.path / file_name).is_file():
            lines.append(f"    {adapter.path / file_name}")
    logs = adapter.path / "logs"
    for tracker, hint in TRACKER_HINTS.items():
        if (logs / tracker).is_dir():
            lines.append(f"    {tracker}: {hint.format(path=logs / tracker)}")
    return lines
