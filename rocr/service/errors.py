"""Failures as HTTP: each becomes a status code and a body naming the real hsa_status_t.

Every error body is `{status: "HSA_STATUS_ERROR_...", code: 4097, message: "..."}` (plus
`limit` when a server limit was hit, `detail` for request validation errors). The HTTP code
follows REST usage: 400 for arguments the runtime refuses, 401/404 for ownership (another
system's token learns nothing: it gets the same 404 as an unknown id), 409 for state conflicts
(a queue stopped by an error, a wait that can never finish, a busy system), 413/422/429 for
limits, 507 when the emulated machine itself runs out. Nothing a client sends may produce a 5xx;
an unexpected exception is a 500 with its message, on a connection that stays open, and the
server goes on serving.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from rocr.errors import HsaError
from rocr.status import Status, status_c_name
from roct import HsaKmtError, HsaKmtStatus

log = logging.getLogger("hsaemu.service")

_NOT_FOUND = {
    Status.ERROR_INVALID_SIGNAL,
    Status.ERROR_INVALID_QUEUE,
    Status.ERROR_INVALID_SYMBOL_NAME,
    Status.ERROR_INVALID_MEMORY_POOL,
    Status.ERROR_INVALID_EXECUTABLE,
    Status.ERROR_INVALID_EXECUTABLE_SYMBOL,
    Status.ERROR_INVALID_CODE_SYMBOL,
    Status.ERROR_NOT_INITIALIZED,
}
_CONFLICT = {
    Status.ERROR,  # a wait that can never finish, a dispatch that timed out
    Status.ERROR_MEMORY_APERTURE_VIOLATION,
    Status.ERROR_MEMORY_FAULT,
    Status.ERROR_ILLEGAL_INSTRUCTION,
    Status.ERROR_EXCEPTION,
    Status.ERROR_FATAL,
    Status.ERROR_INVALID_RUNTIME_STATE,
}


def http_status_for(status: Status) -> int:
    """The HTTP code of an HsaError raised by the runtime."""
    if status in _NOT_FOUND:
        return 404
    if status in _CONFLICT:
        return 409
    if status == Status.ERROR_OUT_OF_RESOURCES:
        return 507
    return 400


class ApiError(Exception):
    """An error the service raises itself, with its HTTP code chosen where it is known."""

    def __init__(
        self,
        http_status: int,
        status: Status,
        message: str,
        *,
        limit: tuple[str, int | float] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.status = status
        self.message = message
        self.limit = limit
        self.headers = headers

    @classmethod
    def from_hsa(cls, e: HsaError, http_status: int | None = None) -> ApiError:
        return cls(http_status or http_status_for(e.status), e.status, e.message)


def limit_error(
    http_status: int,
    name: str,
    value: int | float,
    message: str,
    *,
    retry_after_s: float | None = None,
) -> ApiError:
    """A limit refusal; with `retry_after_s`, a `Retry-After` header (whole seconds, >= 1)."""
    headers = None
    if retry_after_s is not None:
        headers = {"Retry-After": str(max(1, math.ceil(retry_after_s)))}
    return ApiError(
        http_status,
        Status.ERROR_OUT_OF_RESOURCES,
        f"{message} (server limit {name} = {value})",
        limit=(name, value),
        headers=headers,
    )


class BodyTooLarge(StarletteHTTPException):
    """A request body that grew past max_body_bytes while a route read it. An HTTPException,
    so FastAPI's own body parsing passes it on instead of calling it a parse error."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, "request body too large")
        self.max_bytes = max_bytes


def body_too_large(max_bytes: int) -> dict[str, Any]:
    return error_body(
        Status.ERROR_OUT_OF_RESOURCES,
        f"the request body is larger than {max_bytes} bytes (server limit "
        f"max_body_bytes = {max_bytes}); send it in pieces",
        limit=("max_body_bytes", max_bytes),
    )


TOO_DEEP = (
    "invalid request: the body's JSON is nested too deeply to be read (nothing this API "
    "takes is nested more than a few levels)"
)


def not_found(status: Status, message: str) -> ApiError:
    return ApiError(404, status, message)


def error_body(
    status: Status,
    message: str,
    *,
    limit: tuple[str, int | float] | None = None,
    detail: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": status_c_name(status),
        "code": int(status),
        "message": message,
    }
    if limit is not None:
        body["limit"] = {"name": limit[0], "value": limit[1]}
    if detail is not None:
        body["detail"] = detail
    return body


def _json(
    http_status: int, status: Status, message: str, headers: dict[str, str] | None = None, **kw
) -> JSONResponse:
    return JSONResponse(error_body(status, message, **kw), status_code=http_status, headers=headers)


def _safe_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for err in errors[:20]:
        e = {k: v for k, v in err.items() if k not in ("input", "ctx", "url")}
        if "ctx" in err:
            e["ctx"] = {k: str(v) for k, v in err["ctx"].items()}
        inp = err.get("input")
        if isinstance(inp, str | int | float | bool) or inp is None:
            e["input"] = inp if not isinstance(inp, str) else inp[:200]
        out.append(jsonable_encoder(e))
    return out


def _summary(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors[:3]:
        if err.get("type") == "json_invalid":
            why = (err.get("ctx") or {}).get("error", "")
            parts.append(f"the body is not valid JSON ({why})" if why else "the body is not JSON")
            continue
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "request"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "invalid request: " + "; ".join(parts) + more


def allowed_methods(request: Request) -> str:
    """The Allow header of a 405 (RFC 9110 15.5.6): every method some route of the path
    takes. FastAPI makes one route per method, and Starlette's 405 names only the first."""
    methods: set[str] = set()
    for route in _leaf_routes(request.app.router.routes):
        match, _ = route.matches(dict(request.scope))
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


def _leaf_routes(routes: Any) -> Any:
    """Every endpoint route, through included routers (FastAPI wraps each one)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is None and not hasattr(route, "methods"):
            inner = route if hasattr(route, "routes") else None
        if inner is not None:
            yield from _leaf_routes(inner.routes)
        else:
            yield route


def install(app: FastAPI) -> None:
    """Register the handlers that give every failure the ErrorBody shape."""

    @app.exception_handler(ApiError)
    async def _api(_: Request, e: ApiError) -> JSONResponse:
        return _json(e.http_status, e.status, e.message, e.headers, limit=e.limit)

    @app.exception_handler(HsaError)
    async def _hsa(_: Request, e: HsaError) -> JSONResponse:
        return _json(http_status_for(e.status), e.status, e.message)

    @app.exception_handler(HsaKmtError)
    async def _kmt(_: Request, e: HsaKmtError) -> JSONResponse:
        if e.status in (HsaKmtStatus.NO_MEMORY, HsaKmtStatus.OUT_OF_RESOURCES):
            return _json(507, Status.ERROR_OUT_OF_RESOURCES, f"the KFD refused: {e}")
        return _json(400, Status.ERROR_INVALID_ARGUMENT, f"the KFD refused: {e}")

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, e: RequestValidationError) -> JSONResponse:
        errors = list(e.errors())
        return _json(
            422,
            Status.ERROR_INVALID_ARGUMENT,
            _summary(errors),
            detail=_safe_errors(errors),
        )

    @app.exception_handler(ValidationError)
    async def _model(_: Request, e: ValidationError) -> JSONResponse:
        errors = list(e.errors())
        return _json(
            422, Status.ERROR_INVALID_ARGUMENT, _summary(errors), detail=_safe_errors(errors)
        )

    @app.exception_handler(ValueError)
    async def _value(_: Request, e: ValueError) -> JSONResponse:
        return _json(400, Status.ERROR_INVALID_ARGUMENT, str(e) or type(e).__name__)

    @app.exception_handler(ArithmeticError)
    async def _arithmetic(_: Request, e: ArithmeticError) -> JSONResponse:
        # Overflow, or a zero in a spec a client chose (a clock, a granule).
        return _json(400, Status.ERROR_INVALID_ARGUMENT, f"{type(e).__name__}: {e}")

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_: Request, e: BodyTooLarge) -> JSONResponse:
        # The rest of the body was not read: the connection cannot carry another request.
        return JSONResponse(
            body_too_large(e.max_bytes), status_code=413, headers={"Connection": "close"}
        )

    @app.exception_handler(RecursionError)
    async def _too_deep(_: Request, e: RecursionError) -> JSONResponse:
        # Only input nested past the interpreter's recursion limit gets here (JSON, spec
        # overrides, code-object metadata): the request's shape, not a server fault.
        return _json(422, Status.ERROR_INVALID_ARGUMENT, TOO_DEEP)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        if isinstance(e.__cause__, RecursionError):  # FastAPI's own JSON parsing
            return _json(422, Status.ERROR_INVALID_ARGUMENT, TOO_DEEP)
        status = Status.ERROR_INVALID_ARGUMENT if e.status_code < 500 else Status.ERROR
        headers = getattr(e, "headers", None)
        if e.status_code == 405:
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
        return _json(e.status_code, status, str(e.detail), headers)

    @app.exception_handler(Exception)
    async def _internal(_: Request, e: Exception) -> JSONResponse:
        log.exception("internal error")
        return _json(500, Status.ERROR, f"internal error: {type(e).__name__}: {e}")
