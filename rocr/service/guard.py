"""What a request meets before a route: credentials first, then a bounded body, then a net
under every route.

- `Gate` checks a system's bearer token (routes under `/v1/systems/{id}`) and the admission of
  a new system (`POST /v1/systems`: API key, systems per client, creation rate) from the
  headers alone. A refused request is answered without reading one byte of its body, and the
  connection is closed when a body was announced (it was not drained), so an unauthenticated
  client cannot make the server buffer anything.
- `BodyLimit` counts body bytes as a route reads them: past `max_body_bytes` the read fails
  with 413. A body is read only by a route that takes one, so routes without a body never
  buffer what a client sends them.
- `SafetyNet` turns an exception no handler knows into a 500 `{status, code, message}` sent
  like any other answer, so the connection stays open for the next request.
"""

from __future__ import annotations

import logging
import re

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rocr.service import errors
from rocr.service.errors import ApiError, BodyTooLarge
from rocr.service.systems import SystemRegistry
from rocr.status import Status

log = logging.getLogger("hsaemu.service")

API_KEY_HEADER = "x-api-key"
CLIENT_STATE_KEY = "hsaemu_client"  # scope["state"] key: who is creating a system
SYSTEM_STATE_KEY = "hsaemu_system"  # scope["state"] key: (the system, by the admin token?)
_SYSTEM_PATH = re.compile(r"^/v1/systems/([^/]+)(?:/.*)?$")


def bearer_token(headers: Headers) -> str | None:
    """The credentials of 'Authorization: Bearer <token>' (as fastapi.security.HTTPBearer
    reads them), or None."""
    value = headers.get("authorization", "")
    scheme, _, credentials = value.partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        return None
    return credentials


def announces_body(headers: Headers) -> bool:
    if "transfer-encoding" in headers:
        return True
    try:
        return int(headers.get("content-length", "0")) > 0
    except ValueError:
        return True


async def _no_receive() -> Message:  # pragma: no cover - a response never reads
    return {"type": "http.disconnect"}


async def send_error(scope: Scope, send: Send, e: ApiError, *, close: bool) -> None:
    headers = dict(e.headers or {})
    if close:
        headers["Connection"] = "close"
    resp = JSONResponse(
        errors.error_body(e.status, e.message, limit=e.limit),
        status_code=e.http_status,
        headers=headers,
    )
    await resp(scope, _no_receive, send)


class Gate:
    """Authenticates from the headers before any route (or FastAPI's body parsing) runs."""

    def __init__(self, app: ASGIApp, registry: SystemRegistry) -> None:
        self.app = app
        self.registry = registry

    def _check(self, scope: Scope, headers: Headers) -> None:
        path = scope.get("path", "")
        m = _SYSTEM_PATH.match(path)
        reg = self.registry
        if m is not None:
            token = bearer_token(headers)
            if token is None:
                raise ApiError(
                    401,
                    Status.ERROR,
                    "this call needs the system's token: send 'Authorization: Bearer <token>' "
                    "with the token POST /v1/systems returned",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            if reg.is_admin(token):
                served, admin = reg.get_admin(m.group(1)), True
            else:
                served, admin = reg.authorize(m.group(1), token), False
            # The routes take the system from here (emulation.EmulatedRoute): checked once.
            scope.setdefault("state", {})[SYSTEM_STATE_KEY] = (served, admin)
        elif path == "/v1/systems" and scope.get("method") == "POST":
            client = scope.get("client")
            client_id = reg.admit(
                api_key=headers.get(API_KEY_HEADER),
                token=bearer_token(headers),
                address=client[0] if client else None,
            )
            scope.setdefault("state", {})[CLIENT_STATE_KEY] = client_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            self._check(scope, headers)
        except ApiError as e:
            await send_error(scope, send, e, close=announces_body(headers))
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuses request bodies larger than `max_bytes` with 413: at once when Content-Length
    says so, else when a route's read passes the limit (a chunked body has no length)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            resp = JSONResponse(
                errors.body_too_large(self.max_bytes),
                status_code=413,
                headers={"Connection": "close"},
            )
            await resp(scope, _no_receive, send)
            return
        size = 0

        async def counted() -> Message:
            nonlocal size
            msg = await receive()
            if msg["type"] == "http.request":
                size += len(msg.get("body", b""))
                if size > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return msg

        await self.app(scope, counted, send)


class SafetyNet:
    """An exception no handler took becomes a 500 ErrorBody. Starlette's ServerErrorMiddleware
    would answer too, but then re-raise, and uvicorn closes the connection of a request whose
    application raised; here the exception ends with the answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, receive, tracked)
        except Exception as e:
            if started:  # too late to answer: let the server end the connection
                raise
            log.exception("internal error in %s %s", scope.get("method"), scope.get("path"))
            resp = JSONResponse(
                errors.error_body(Status.ERROR, f"internal error: {type(e).__name__}: {e}"),
                status_code=500,
            )
            await resp(scope, _no_receive, send)
