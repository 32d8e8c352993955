"""Which models the server answers for, and safe hot-swapping of adapter versions.

Names a client can send as `model`: `base`, every loaded adapter version `name@version`, and every alias (`sft`,
`dpo`, ...) pointing at a loaded version. Rules that keep hot-swap safe:
- a new version always gets a new LoRA id (vLLM caches by id; reloading in place would serve stale weights);
- an alias moves only to a version that loaded cleanly, in one assignment (requests see old or new, never neither);
- unloading first makes the version unroutable, then waits for its in-flight requests, then frees it in the engine.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from core.registry import AdapterRegistry, AdapterVersion, RegistryError
from server.engines.base import AdapterHandle, Engine, EngineError
from server.errors import APIError
from server.preflight import BaseModelFacts, PreflightError, check_adapter

log = logging.getLogger("palate.models")
BASE = "base"


@dataclass(frozen=True)
class ServedModel:
    id: str  # "base" or "name@version"
    handle: AdapterHandle | None
    adapter: AdapterVersion | None
    loaded_at: float = 0.0

    @property
    def content_hash(self) -> str | None:
        return self.adapter.meta.get("content_sha256") if self.adapter else None


class ModelManager:
    def __init__(self, engine: Engine, registry: AdapterRegistry, base: BaseModelFacts, max_lora_rank: int,
                 metrics=None):
        self.engine = engine
        self.registry = registry
        self.base_facts = base
        self.max_lora_rank = max_lora_rank
        self.metrics = metrics
        self._base = ServedModel(BASE, None, None, time.time())
        self._versions: dict[str, ServedModel] = {}
        self._aliases: dict[str, str] = {}
        self._inflight: Counter[str] = Counter()
        self._idle = asyncio.Condition()
        self._lora_ids = itertools.count(1)
        self._admin_lock = asyncio.Lock()  # one load/unload/alias change at a time
        self._rejected: dict[str, str] = {}  # registry versions that failed to load, so the watcher warns once

    # ---- routing --------------------------------------------------------------------------------------------------
    def available(self) -> list[str]:
        return [BASE, *sorted(self._versions), *sorted(self._aliases)]

    def resolve(self, name: str) -> ServedModel:
        if name == BASE:
            return self._base
        target = self._aliases.get(name, name)
        served = self._versions.get(target)
        if served is None:
            hint = ""
            try:
                self.registry.resolve(name)
                hint = " It is in the registry but not loaded: load it with POST /admin/adapters."
            except RegistryError:
                pass
            raise APIError(404, f"The model '{name}' does not exist.{hint} Available models: "
                                f"{', '.join(self.available())}.", param="model", code="model_not_found")
        return served

    @asynccontextmanager
    async def use(self, name: str) -> AsyncIterator[ServedModel]:
        """Resolve `name` and hold the version for the duration of one request (hot-swap drains on this)."""
        served = self.resolve(name)
        self._inflight[served.id] += 1
        try:
            yield served
        finally:
            self._inflight[served.id] -= 1
            async with self._idle:
                self._idle.notify_all()

    def list(self) -> list[ServedModel]:
        return [self._base, *(self._versions[k] for k in sorted(self._versions))]

    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    def inflight(self, ref: str) -> int:
        return self._inflight[ref]

    # ---- admin ----------------------------------------------------------------------------------------------------
    def _resolve_source(self, ref: str | None, path: str | None) -> AdapterVersion:
        if path:
            root = self.registry.root.resolve()
            target = (root / path).resolve() if not Path(path).is_absolute() else Path(path).resolve()
            if not target.is_relative_to(root):
                raise APIError(400, f"Adapter path '{path}' resolves outside the adapter root; only directories "
                                    "inside the registry can be loaded.", param="path", code="path_outside_root")
            rel = target.relative_to(root).parts
            if len(rel) != 2 or not rel[1].isdigit():
                raise APIError(400, f"'{path}' is not a registry version directory (<name>/<version>); register the "
                                    "adapter with `palate adapters add` first.", param="path")
            ref = f"{rel[0]}@{rel[1]}"
        if not ref:
            raise APIError(400, "Give 'ref' (name@version or an alias) or 'path'.", param="ref")
        try:
            return self.registry.resolve(ref)
        except RegistryError as exc:
            raise APIError(404, str(exc), param="ref", code="adapter_not_found") from None

    async def load(self, ref: str | None = None, path: str | None = None) -> ServedModel:
        """Preflight and load one registry version under a fresh LoRA id. Loading a loaded version is a no-op."""
        async with self._admin_lock:
            adapter = self._resolve_source(ref, path)
            if adapter.ref in self._versions:
                return self._versions[adapter.ref]
            try:
                await asyncio.to_thread(check_adapter, adapter.path, self.base_facts, self.max_lora_rank)
            except PreflightError as exc:
                raise APIError(400, f"{adapter.ref}: {exc}", param="ref", code=f"preflight_{exc.check}") from None
            handle = AdapterHandle(adapter.ref, next(self._lora_ids), adapter.path)
            started = time.perf_counter()
            try:
                await self.engine.load_adapter(handle)
            except EngineError as exc:
                raise APIError(400, str(exc), param="ref", code="engine_rejected") from None
            if self.metrics:
                self.metrics.adapter_loaded(adapter.ref, time.perf_counter() - started)
            served = ServedModel(adapter.ref, handle, adapter, time.time())
            self._versions[adapter.ref] = served
            log.info("loaded %s as LoRA id %d", adapter.ref, handle.lora_id)
            return served

    async def set_alias(self, alias: str, target: str, persist: bool = True) -> None:
        """Point `alias` at a loaded version, atomically for routing; also record it in the registry."""
        if alias == BASE or "@" in alias:
            raise APIError(400, f"'{alias}' cannot be an alias: aliases are plain names other than 'base'.", param="alias")
        if target not in self._versions:
            raise APIError(404, f"'{target}' is not loaded; load it first (POST /admin/adapters). Loaded: "
                                f"{', '.join(sorted(self._versions)) or 'none'}.", param="target")
        self._aliases[alias] = target
        if persist:
            latest = self.registry.promotion_of(target, alias)
            if latest is not None and self.registry.aliases().get(alias) == target:
                return  # already promoted to it on evidence (e.g. by `palate loop`): nothing new to record
            # An operator moving an alias by hand overrides the evidence rule: recorded as forced.
            self.registry.promote(alias, target, {"reason": "moved through the admin API"}, forced=True)

    async def unload(self, ref: str, drain_timeout_s: float = 120.0) -> None:
        """Stop routing to `ref`, wait for its in-flight requests to finish, then free it in the engine."""
        async with self._admin_lock:
            served = self._versions.get(ref)
            if served is None:
                raise APIError(404, f"'{ref}' is not loaded. Loaded: {', '.join(sorted(self._versions)) or 'none'}.",
                               param="ref")
            pointing = sorted(a for a, t in self._aliases.items() if t == ref)
            if pointing:
                raise APIError(409, f"{ref} is the target of alias(es) {pointing}; move them first "
                                    "(POST /admin/aliases).", param="ref", code="alias_target")
            del self._versions[ref]
            deadline = time.monotonic() + drain_timeout_s
            async with self._idle:
                while self._inflight[ref] > 0 and time.monotonic() < deadline:
                    try:
                        await asyncio.wait_for(self._idle.wait(), timeout=1.0)
                    except asyncio.TimeoutError:
                        pass
            await self.engine.unload_adapter(served.handle)
            if self.metrics:
                self.metrics.adapter_unloaded(ref)
            log.info("unloaded %s", ref)

    async def sync_from_registry(self) -> list[str]:
        """Make the served aliases follow the registry's: load new targets, move aliases that loaded cleanly, and
        unload versions no alias points at any more. Returns what changed (for logs)."""
        changes = []
        records = bool(self.registry.promotions())
        for alias, target in sorted(self.registry.aliases().items()):
            if self._aliases.get(alias) == target or target in self._rejected:
                continue
            if records and self._aliases.get(alias) and self.registry.promotion_of(target, alias) is None:
                # The same rule as `palate promote`: an alias moves on evidence (or a recorded --force), not because
                # aliases.json was edited. Registries from before promotion records keep the old behaviour.
                self._rejected[target] = "no promotion record"
                log.warning("registry alias %s -> %s has no promotion record, alias stays at %s: run `palate promote "
                            "%s --alias %s` (or --force)", alias, target, self._aliases.get(alias), target, alias)
                continue
            try:
                await self.load(ref=target)
            except APIError as exc:
                self._rejected[target] = exc.message
                log.warning("registry alias %s -> %s not loaded, alias stays at %s: %s", alias, target,
                            self._aliases.get(alias), exc.message)
                continue
            old = self._aliases.get(alias)
            await self.set_alias(alias, target, persist=False)
            changes.append(f"{alias} -> {target}")
            if old and old not in self._aliases.values():
                await self.unload(old)
                changes.append(f"unloaded {old}")
        return changes
