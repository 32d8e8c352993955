"""The OpenAI-compatible routes. Thin: parse, hand to the serving layer, return."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from server import tokenization
from server.admission import admitted
from server.errors import engine_dead
from server.models import ModelManager, ServedModel
from server.protocol import (ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, CompletionRequest,
                             CompletionResponse, DetokenizeRequest, DetokenizeResponse, ErrorResponse, ModelCard,
                             ModelList, TokenizeChatRequest, TokenizeCompletionRequest, TokenizeResponse)

router = APIRouter()

# Every route answers errors in OpenAI's shape; saying so in the OpenAPI schema lets clients (and the fuzz test)
# hold the server to it.
ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 404, 422, 429, 500, 503)}


def _generated(body: type, chunk: type) -> dict:
    """The 200 of a generation route: a JSON body, or with stream=true server-sent events of `chunk` objects."""
    return {200: {"model": body, "description": f"A {body.__name__} (JSON), or with stream=true server-sent events "
                  f"(`data: <{chunk.__name__}>` lines, then `data: [DONE]`).",
                  "content": {"text/event-stream": {"schema": {"type": "string"}}}}, **ERRORS}


@router.get("/health")
async def health(request: Request) -> dict:
    """200 while the engine can serve; 503 (OpenAI error body) once it died, so a supervisor restarts the server."""
    engine = request.app.state.engine
    if dead := engine.dead():
        raise engine_dead(dead)
    models: ModelManager = request.app.state.models
    return {"status": "ok", "engine": engine.name, "models": models.available()}


@router.get("/v1/models", response_model=ModelList, response_model_exclude_none=True, responses=ERRORS)
async def list_models(request: Request) -> ModelList:
    models: ModelManager = request.app.state.models
    config = request.app.state.config
    agreements = models.registry.latest_agreements()  # read once for every card
    cards = [_card(served, served.id, models, config, agreements) for served in models.list()]
    cards += [_card(models.resolve(alias), alias, models, config, agreements) for alias in sorted(models.aliases())]
    return ModelList(data=cards)


@router.post("/v1/chat/completions", responses=_generated(ChatCompletionResponse, ChatCompletionChunk))
async def chat_completions(body: ChatCompletionRequest, request: Request):
    serving = request.app.state.serving
    model = request.app.state.models.resolve(body.model).id  # 404 first
    prepared = serving.prepare_chat(body)  # a bad request is refused before it waits for a turn
    return await admitted(request, lambda: serving.respond(prepared), endpoint="chat", cost=body.n, model=model)


@router.post("/v1/completions", responses=_generated(CompletionResponse, CompletionResponse))
async def completions(body: CompletionRequest, request: Request):
    serving = request.app.state.serving
    model = request.app.state.models.resolve(body.model).id
    prepared = serving.prepare_completion(body)
    return await admitted(request, lambda: serving.respond(prepared), endpoint="completion", cost=body.n,
                          model=model)


@router.post("/tokenize", response_model=TokenizeResponse, response_model_exclude_none=True, responses=ERRORS)
async def tokenize(body: TokenizeCompletionRequest | TokenizeChatRequest, request: Request) -> TokenizeResponse:
    state = request.app.state
    return tokenization.tokenize(state.engine, state.models, body, state.config.server.unknown_fields)


@router.post("/detokenize", response_model=DetokenizeResponse, responses=ERRORS)
async def detokenize(body: DetokenizeRequest, request: Request) -> DetokenizeResponse:
    state = request.app.state
    return tokenization.detokenize(state.engine, state.models, body, state.config.server.unknown_fields)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4")


def _card(served: ServedModel, name: str, models: ModelManager, config, agreements: dict) -> ModelCard:
    if served.adapter is None:
        return ModelCard(id=name, created=int(served.loaded_at), root=config.model.id,
                         palate={"kind": "base", "model": config.model.id,
                                 "weights_sha256": models.base_facts.weights_sha256})
    meta = served.adapter.meta
    lora_config = served.adapter.adapter_config()
    return ModelCard(
        id=name, created=int(served.loaded_at), root=served.id, parent=meta.get("parent") or "base",
        palate={
            "kind": meta.get("kind"),
            "version": served.id,
            "rank": lora_config.get("r"),
            "target_modules": sorted(lora_config.get("target_modules") or []),
            "content_sha256": meta.get("content_sha256"),
            "dataset_sha256": meta.get("dataset_sha256"),
            "metrics": _headline(meta.get("metrics") or {}),
            "created": meta.get("created"),
            "lineage": _lineage(models, served),
            "promotion": _promotion(models, served),
            "evaluation": _evaluation(served, agreements),
        },
    )


def _evaluation(served: ServedModel, agreements: dict) -> dict:
    """The latest recorded agreement of this version's implicit reward with each vote source (`palate eval
    agreement`), people's and simulated judges' apart; None for a source never evaluated."""
    keys = ("reference", "beta", "votes", "overall", "by_reason", "time")
    return {"agreement": {source: {k: record.get(k) for k in keys} if (record := agreements.get((served.id, source)))
                          else None for source in ("people", "simulated")}}


def _promotion(models: ModelManager, served: ServedModel) -> dict | None:
    """Why an alias points at this version: the latest promotion record (the checks and their numbers, or that it
    was forced), None when it was never promoted (or the registry predates promotion records)."""
    record = models.registry.promotion_of(served.id)
    if record is None:
        return None
    evidence = record.get("evidence") or {}
    return {"alias": record.get("alias"), "from": record.get("from"), "forced": record.get("forced", False),
            "time": record.get("time"), "reason": evidence.get("reason"), "incumbent": evidence.get("incumbent"),
            "checks": [{"name": c.get("name"), "passed": c.get("passed"), "detail": c.get("detail")}
                       for c in evidence.get("checks", [])]}


def _headline(metrics: dict) -> dict:
    """A few numbers worth showing in a model list; the full metrics stay in palate.json."""
    flat = {}
    for section in ("eval", "train"):
        values = metrics.get(section, {}) if isinstance(metrics.get(section), dict) else {}
        for key, value in values.items():
            if any(word in key for word in ("loss", "accuracies", "margins")) and isinstance(value, (int, float)):
                flat[f"{section}/{key}"] = round(float(value), 4)
    if not flat:
        flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    return flat


def _lineage(models: ModelManager, served: ServedModel) -> list[dict]:
    """The chain of adapters this version descends from, newest first, each with its dataset hash."""
    chain, adapter, seen = [], served.adapter, set()
    while adapter is not None and adapter.ref not in seen:
        seen.add(adapter.ref)
        chain.append({"ref": adapter.ref, "kind": adapter.kind, "dataset_sha256": adapter.meta.get("dataset_sha256"),
                      "dataset": adapter.meta.get("dataset_path") or adapter.meta.get("dataset")})
        parent = adapter.parent
        try:
            adapter = models.registry.resolve(parent) if parent and parent != "base" else None
        except Exception:
            chain.append({"ref": parent, "missing": True})
            adapter = None
    chain.append({"ref": "base"})
    return chain
