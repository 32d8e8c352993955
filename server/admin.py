"""Admin API for hot-swapping adapters. Off unless an admin token is configured; every call needs the bearer token."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, Request

from core.registry import RegistryError, check_name
from server.errors import APIError
from server.models import ModelManager
from server.protocol import AliasRequest, LoadAdapterRequest

router = APIRouter(prefix="/admin")


def require_admin(request: Request) -> None:
    token = request.app.state.config.server.resolved_admin_token()
    if not token:
        raise APIError(403, "The admin API is disabled: set server.admin_token in the config or PALATE_ADMIN_TOKEN.",
                       code="admin_disabled")
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise APIError(401, "Missing or wrong admin token: send 'Authorization: Bearer <token>'.",
                       code="invalid_admin_token")


def _models(request: Request) -> ModelManager:
    return request.app.state.models


def _alias_name(alias: str) -> str:
    """The registry's name rule, as a 400 naming the field (checked before anything loads or moves)."""
    try:
        return check_name(alias, "alias")
    except RegistryError as exc:
        raise APIError(400, str(exc), param="alias", code="invalid_name") from None


@router.get("/adapters", dependencies=[Depends(require_admin)])
async def list_adapters(request: Request) -> dict:
    models = _models(request)
    return {"loaded": [{"id": s.id, "lora_id": s.handle.lora_id, "inflight": models.inflight(s.id)}
                       for s in models.list() if s.handle],
            "aliases": models.aliases(),
            "registry": [a.ref for a in models.registry.all_versions()]}


@router.post("/adapters", dependencies=[Depends(require_admin)])
async def load_adapter(body: LoadAdapterRequest, request: Request) -> dict:
    models = _models(request)
    if body.alias is not None:  # an empty alias is refused, not skipped
        _alias_name(body.alias)
    served = await models.load(ref=body.ref, path=body.path)
    if body.alias is not None:
        await models.set_alias(body.alias, served.id)
    return {"loaded": served.id, "lora_id": served.handle.lora_id, "aliases": models.aliases()}


@router.delete("/adapters/{ref}", dependencies=[Depends(require_admin)])
async def unload_adapter(ref: str, request: Request) -> dict:
    await _models(request).unload(ref)
    return {"unloaded": ref}


@router.post("/aliases", dependencies=[Depends(require_admin)])
async def set_alias(body: AliasRequest, request: Request) -> dict:
    models = _models(request)
    _alias_name(body.alias)
    if "@" not in body.target:
        raise APIError(400, f"Alias targets are exact versions (name@version), not '{body.target}'.", param="target")
    await models.set_alias(body.alias, body.target)
    return {"aliases": models.aliases()}
