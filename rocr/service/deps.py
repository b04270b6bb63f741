"""What every route shares: the bearer-token dependency, error responses, body negotiation.

A system's routes live under `/v1/systems/{system_id}`; the dependency `System` finds the
system and checks the caller's token (or the server's admin token). Binary data travels as
`application/octet-stream`, or as base64 inside JSON; `body_kind` tells which one came in.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from anyio import to_thread
from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from rocr.service.errors import TOO_DEEP, ApiError
from rocr.service.schemas import ErrorBody
from rocr.service.systems import ServedSystem, SystemRegistry
from rocr.status import Status

PREFIX = "/v1/systems/{system_id}"
OCTET = "application/octet-stream"

bearer = HTTPBearer(
    auto_error=False,
    description="the token that POST /v1/systems returned (or the server's admin token)",
)

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "the runtime refused the arguments"},
    401: {"model": ErrorBody, "description": "no bearer token"},
    404: {"model": ErrorBody, "description": "unknown id, or a token that does not own it"},
    409: {"model": ErrorBody, "description": "conflicts with the state (queue error, stuck wait)"},
    413: {
        "model": ErrorBody,
        "description": "the request body is larger than max_body_bytes (the connection closes)",
    },
    422: {"model": ErrorBody, "description": "malformed request, or a value past a limit"},
    429: {"model": ErrorBody, "description": "a server limit (systems, memory, queues, signals)"},
    500: {
        "model": ErrorBody,
        "description": "a fault in the server itself (a bug to report); the connection stays open",
    },
    503: {
        "model": ErrorBody,
        "description": "the server is shutting down: work on the system was stopped",
    },
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds until the limit may let the request through",
        "schema": {"type": "integer", "minimum": 1},
    }
}
# Answers only some routes give, added to theirs with `responses(...)`.
MORE_ERRORS: dict[int, dict[str, Any]] = {
    401: {
        "model": ErrorBody,
        "description": "no API key (X-API-Key) where the server requires one",
    },
    403: {"model": ErrorBody, "description": "the credentials do not allow this"},
    415: {"model": ErrorBody, "description": "a content type this route does not take"},
    429: {
        "model": ErrorBody,
        "description": "a server limit (systems, per-client systems, creation rate, memory, "
        "queues, signals); Retry-After when waiting helps",
        "headers": _RETRY_AFTER,
    },
    507: {"model": ErrorBody, "description": "the emulated machine ran out of memory"},
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for the answers a route gives beyond ERRORS."""
    return {c: MORE_ERRORS[c] for c in codes}


def registry(request: Request) -> SystemRegistry:
    return request.app.state.registry


def _token(creds: HTTPAuthorizationCredentials | None) -> str:
    if creds is None:
        raise ApiError(
            401,
            Status.ERROR,
            "this call needs the system's token: send 'Authorization: Bearer <token>' with "
            "the token POST /v1/systems returned",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return creds.credentials


SystemId = Annotated[str, Path(min_length=1, max_length=64)]


async def served_system(
    request: Request,
    system_id: SystemId,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> ServedSystem:
    """In the event loop (a hash and a lookup): no thread per request for the token check."""
    token = _token(creds)
    reg = registry(request)
    if reg.is_admin(token):
        return reg.get_admin(system_id)
    try:
        served = reg.authorize(system_id, token)
    except ApiError:
        # Refused: `get` answers the same, and shuts an expired system down (off the loop).
        return await to_thread.run_sync(reg.get, system_id, token)
    served.touch()
    return served


async def admin(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    if not registry(request).is_admin(_token(creds)):
        raise ApiError(
            403,
            Status.ERROR,
            "this needs the server's admin token (hsaemu serve --admin-token-file, or "
            "$HSAEMU_ADMIN_TOKEN)",
        )


System = Annotated[ServedSystem, Depends(served_system)]
Admin = Annotated[None, Depends(admin)]


def body_kind(request: Request) -> Literal["json", "octet"]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == OCTET:
        return "octet"
    if ctype == "application/json" or ctype.endswith("+json"):
        return "json"
    raise ApiError(
        415,
        Status.ERROR_INVALID_ARGUMENT,
        f"content type {ctype or '(none)'!r} is not accepted here; send {OCTET} or "
        "application/json",
    )


def wants_octet(request: Request) -> bool:
    return OCTET in request.headers.get("accept", "").lower()


# A JSON body bigger than this is parsed in a worker thread, not in the event loop: a 16 MiB
# body of base64 takes ~50-100 ms to parse and decode, which every other request would wait.
BIG_JSON_BYTES = 256 << 10


async def json_body(request: Request, model: type[BaseModel] | None = None) -> Any:
    """The request's JSON (validated as `model` when given)."""
    raw = await request.body()
    if len(raw) <= BIG_JSON_BYTES:
        return _parse(raw, model)
    return await to_thread.run_sync(_parse, raw, model)


def _parse(raw: bytes, model: type[BaseModel] | None) -> Any:
    doc = _loads(raw)
    return doc if model is None else model.model_validate(doc)


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except RecursionError:
        raise ApiError(422, Status.ERROR_INVALID_ARGUMENT, TOO_DEEP) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(
            422, Status.ERROR_INVALID_ARGUMENT, f"invalid request: body is not JSON: {e}"
        ) from None


def dual_body(json_schema_ref: str, what: str) -> dict[str, Any]:
    """openapi_extra for a body that is raw bytes or a JSON model."""
    return {
        "requestBody": {
            "required": True,
            "description": what,
            "content": {
                OCTET: {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": {"$ref": f"#/components/schemas/{json_schema_ref}"}},
            },
        }
    }


def octet_or(model: type[BaseModel] | str, what: str) -> dict[int | str, dict[str, Any]]:
    """`responses` entry for a 200 that is raw bytes (Accept: octet-stream) or a JSON model."""
    name = model if isinstance(model, str) else model.__name__
    return {
        200: {
            "description": what,
            "content": {
                OCTET: {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}},
            },
        }
    }
