"""The blind arena inside the server: `install(app, config)` adds the /v1/arena API, the vote store and the UI.

`server.app.create_app` calls `install` after setting app.state.config, .engine and .models. It is cheap and
robust: a vote store that cannot be opened leaves the arena answering 503 (the OpenAI API keeps serving), and a UI
that cannot be built is logged and skipped. Gradio is imported only when the UI is mounted.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

from core.arena_config import load_arena_config
from core.config import PROJECT_ROOT, PalateConfig
from core.votes import VoteStore, safe_url

log = logging.getLogger("palate.arena")
ARENA_PATH = "/arena"


def install(app: FastAPI, config: PalateConfig) -> None:
    """Include the arena router, open the vote store (app.state.votes), create the service (app.state.arena) and
    mount the Gradio UI at /arena when `config.server.mount_arena`."""
    from server.arena.router import router
    from server.arena.service import ArenaService

    arena_config = load_arena_config()  # a bad arena.yaml is a ConfigError at start-up, naming the key
    store, store_error = None, None
    try:
        store = VoteStore(config.server.database_url, root=PROJECT_ROOT)
        log.info("arena vote store: %s", safe_url(store.url))
    except Exception as exc:  # noqa: BLE001 - the rest of the server must keep serving
        store_error = f"{type(exc).__name__} opening {safe_url(config.server.database_url)}"
        log.error("arena disabled: %s: %s", store_error, exc)
    app.state.votes = store
    app.state.arena = ArenaService(models=app.state.models, engine=app.state.engine, server_config=config.server,
                                   arena_config=arena_config, base_model_id=config.model.id, store=store,
                                   store_error=store_error, metrics=getattr(app.state, "metrics", None))
    app.include_router(router)
    if config.server.mount_arena:
        try:
            import gradio as gr

            from ui.app import build_arena_ui
            from ui.context import CSS

            keys = getattr(app.state, "api_keys", None)  # with API keys on, the page calls the API with its own key
            ui = build_arena_ui(server_url=None, arena_config=arena_config, api_key=keys.ui_key if keys else None)
            gr.mount_gradio_app(app, ui, path=ARENA_PATH,
                                css=CSS)
        except Exception:  # noqa: BLE001
            log.exception("the arena UI could not be mounted at %s; the API keeps serving", ARENA_PATH)
