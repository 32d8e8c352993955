"""Errors in OpenAI's error format: {"error": {"message", "type", "param", "code"}} with a matching HTTP status.

Raise `APIError` anywhere in a request; the handler installed by `install_error_handlers` renders it. FastAPI's own
422 schema errors and unexpected exceptions are rendered in the same shape, so every client sees one format. Text
from the client that goes back in a message passes through `printable`, so an error can always be encoded.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("palate.server")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 409: "conflict_error", 422: "invalid_request_error", 429: "rate_limit_error",
          500: "internal_server_error", 503: "service_unavailable_error"}


class APIError(Exception):
    """An error the client should see: status, a message that says what is wrong and how to fix it."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(status, "invalid_request_error")


def printable(text: str, ascii_only: bool = False) -> str:
    """`text` made safe to encode: lone surrogates (and, with `ascii_only`, all non-ASCII) as backslash escapes."""
    return text.encode("ascii" if ascii_only else "utf-8", "backslashreplace").decode("ascii" if ascii_only
                                                                                   else "utf-8")


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None,
               type: str | None = None) -> dict:
    return {"error": {"message": printable(message), "type": type or _TYPES.get(status, "invalid_request_error"),
                      "param": printable(param) if param else param, "code": code}}


def error_response(exc: APIError) -> JSONResponse:
    return JSONResponse(error_body(exc.status, exc.message, param=exc.param, code=exc.code, type=exc.type),
                        status_code=exc.status)


def engine_dead(reason: str) -> APIError:
    """The engine process is gone for good (see `Engine.dead`): 503, so a supervisor restarts the server."""
    return APIError(503, f"The engine is gone: {reason}.", code="engine_dead")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p != "body"]
            problems.append(f"{'.'.join(loc) or 'body'}: {err.get('msg')}")
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        return JSONResponse(error_body(422, "Invalid request: " + "; ".join(problems), param=param,
                                       code="invalid_schema"), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error (request %s)", getattr(request.state, "request_id", "-"))
        engine = getattr(request.app.state, "engine", None)
        if engine is not None and (dead := engine.dead()):
            return error_response(engine_dead(dead))
        return JSONResponse(error_body(500, f"Internal error ({type(exc).__name__}); the server keeps serving."),
                            status_code=500)
