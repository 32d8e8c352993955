"""Build the FastAPI app around an engine: OpenAI routes, admin routes, the arena, metrics, hot-swap watcher."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from core.config import PalateConfig
from core.registry import AdapterRegistry
from server import admin, arena, routes
from server.admission import Admission
from server.auth import ApiKeys
from server.engines import lifeline
from server.engines.base import Engine
from server.errors import install_error_handlers
from server.metrics import Metrics
from server.middleware import ApiKeyGuard, RequestContext, UnicodeGuard
from server.models import ModelManager
from server.preflight import BaseModelFacts
from server.serving import Serving

log = logging.getLogger("palate.server")


def base_model_facts(config: PalateConfig) -> BaseModelFacts:
    model_dir = config.model.resolved_dir()
    manifest_path = model_dir / "palate_model.json"
    weights_sha = json.loads(manifest_path.read_text())["weights_sha256"] if manifest_path.is_file() else "unknown"
    return BaseModelFacts.from_model_dir(model_dir, config.model.id, weights_sha)


def adapter_root(config: PalateConfig) -> Path:
    return config.server.registry_root()


async def _watch_registry(models: ModelManager, interval_s: float) -> None:
    """Poll the registry; when training writes a new version and moves an alias, hot-load it and move ours."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            for change in await models.sync_from_registry():
                log.info("registry watch: %s", change)
        except Exception:  # the watcher must never take the server down
            log.exception("registry watch failed; retrying")


def create_app(config: PalateConfig, engine: Engine, base_facts: BaseModelFacts | None = None) -> FastAPI:
    metrics = Metrics()
    registry = AdapterRegistry(adapter_root(config))
    models = ModelManager(engine, registry, base_facts or base_model_facts(config), config.server.vllm.max_lora_rank,
                          metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        engine_tag = str(registry.root.resolve())  # engine processes serving this registry carry it
        lifeline.warn_if_stale(engine_tag)
        lifeline.claim_engine(engine_tag)
        await engine.start()
        watcher = None
        try:
            if config.server.load_adapters:
                for change in await models.sync_from_registry():
                    log.info("start-up: %s", change)
            if config.server.watch_adapters:
                watcher = asyncio.create_task(_watch_registry(models, config.server.watch_interval_s))
            yield
        finally:
            if watcher:
                watcher.cancel()
            await engine.shutdown()

    app = FastAPI(title="Palate", version="0.1.0", lifespan=lifespan, docs_url=None,  # /docs: server/docs.py
                  description="OpenAI-compatible multi-LoRA server with a blind arena.")
    from server.docs import install_offline_docs

    install_offline_docs(app)  # Swagger UI from an installed package, not a CDN
    app.state.config = config
    app.state.engine = engine
    app.state.models = models
    app.state.metrics = metrics
    app.state.serving = Serving(engine, models, config.server, metrics)
    admission = config.server.admission
    app.state.admission = Admission(admission, metrics) if admission.enabled else None
    install_error_handlers(app)
    app.state.api_keys = ApiKeys(config.server)  # the arena's install() hands its ui_key to the mounted UI
    # Added innermost first: request id and the last-resort error answer wrap everything, then keys, then the body.
    app.add_middleware(UnicodeGuard)
    app.add_middleware(ApiKeyGuard, keys=app.state.api_keys)
    app.add_middleware(RequestContext)
    app.include_router(routes.router)
    app.include_router(admin.router)
    arena.install(app, config)  # the arena's routes, vote store and UI

    @app.get("/", include_in_schema=False)
    async def root():
        """A person who opens the server in a browser lands in the arena; a program gets a map of the API."""
        if config.server.mount_arena:
            return RedirectResponse("/arena/")
        return {"name": "palate", "openai_api": "/v1", "models": "/v1/models", "metrics": "/metrics",
                "docs": "/docs"}

    return app


def build_engine(config: PalateConfig) -> Engine:
    """The engine named in the config: 'vllm' (default), 'hf' (reference) or 'remote'."""
    kind = config.server.engine
    if kind == "vllm":
        from server.engines.vllm_engine import VllmEngine

        return VllmEngine(config.model.resolved_dir(), config.server.vllm)
    if kind == "hf":
        from server.engines.hf_engine import HfEngine

        return HfEngine(config.model.resolved_dir(), config.server.vllm.max_model_len, config.server.vllm.dtype)
    from server.engines.remote_engine import RemoteEngine

    if not config.server.remote_url:
        from core.config import ConfigError

        raise ConfigError("server.engine is 'remote' but server.remote_url is not set.")
    return RemoteEngine(config.server.remote_url, config.model.resolved_dir(), config.server.vllm.max_model_len)
