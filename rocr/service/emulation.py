"""The emulation executor: where the routes' emulation work runs, apart from the event loop.

Every synchronous route of a system (`EmulatedRoute`) first takes its turn on the system in
the event loop (`ServedSystem.turn`: no thread is parked on a busy system) and then runs in a
bounded pool of its own (`emulation_threads`), not anyio's default pool of 40 threads that
FastAPI's own synchronous work (dependencies, the reaper) uses — or, for work known to be
bounded (`light`), in the event loop itself. `/healthz` and the token check run in the event
loop and take no system lock, so a busy machine delays neither.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import re
import weakref
from collections.abc import Callable
from typing import Annotated, Any, TypeVar, get_args, get_origin

import anyio
from anyio import to_thread
from fastapi import Request
from fastapi.routing import APIRoute, APIRouter
from starlette._utils import get_route_path
from starlette.routing import Match

from rocr.service.deps import System, SystemId, bearer, served_system
from rocr.service.errors import ApiError
from rocr.service.guard import SYSTEM_STATE_KEY
from rocr.service.systems import WATCH_S, Cancelled, ServedSystem, Watch
from rocr.status import Status

T = TypeVar("T")

# One limiter per event loop (a test makes several apps, each with its loop).
_limiters: weakref.WeakKeyDictionary[Any, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()
_threads = 8  # ServerLimits.emulation_threads sets it when an app starts


def configure(threads: int) -> None:
    global _threads
    _threads = threads


def limiter() -> anyio.CapacityLimiter:
    loop = asyncio.get_running_loop()
    lim = _limiters.get(loop)
    if lim is None:
        lim = _limiters[loop] = anyio.CapacityLimiter(_threads)
    elif lim.total_tokens != _threads:
        lim.total_tokens = _threads
    return lim


async def run(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in the emulation executor."""
    return await to_thread.run_sync(fn, *args, limiter=limiter())


async def in_turn(s: ServedSystem, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in `s`'s turn, in the emulation executor; a system cancelled meanwhile
    answers as gone (or 503 when the server is shutting down)."""
    async with s.turn():
        try:
            return await run(fn, *args)
        except Cancelled:
            raise s.stopped_error() from None


async def in_turn_inline(s: ServedSystem, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in `s`'s turn, in the event loop: for work `fn` itself bounds."""
    async with s.turn():
        try:
            return fn(*args)
        except Cancelled:
            raise s.stopped_error() from None


async def watched(s: ServedSystem, request: Request, fn: Callable[..., T], *args: Any) -> T:
    """`in_turn(s, fn, watch, *args)` while the event loop watches the request's client: when
    it hangs up, `watch.abandoned` ends the section's slice (`ServedSystem.sliced(watch)`)."""
    watch = Watch()

    async def watcher() -> None:
        while not watch.abandoned:
            await anyio.sleep(WATCH_S)
            if await request.is_disconnected():
                watch.abandoned = True

    failed: Exception | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(watcher)
        try:
            result = await in_turn(s, fn, watch, *args)
        except Exception as e:  # raised below, not wrapped in the task group's ExceptionGroup
            failed = e
        finally:
            tg.cancel_scope.cancel()
    if failed is not None:
        raise failed
    return result


def light(fn: Callable[..., T] | None = None, *, when: Callable[..., bool] | None = None) -> Any:
    """Mark an endpoint as bookkeeping that never waits on the device (allocate, map, create
    a queue or a signal, read state): `emulated` runs it in the event loop when its system's
    device has no work pending (`ServedSystem.quiet`), as the device cannot then do anything
    during it. A hop to the emulation executor and back costs more than such a call (~0.6 ms
    of CPU measured on a loaded 2-core machine, against ~0.05 ms for the call), and a
    bounded call of a millisecond or two holds the event loop no longer there than in a
    thread: Python code in an emulation thread holds the GIL, which the loop gets back only
    every 5 ms (sys.getswitchinterval) while the thread runs.
    `@light(when=pred)`: only when `pred(**endpoint_arguments)` (e.g. for small sizes)."""

    def mark(f: Callable[..., T]) -> Callable[..., T]:
        f.__hsaemu_light__ = True  # type: ignore[attr-defined]
        f.light_when = when  # type: ignore[attr-defined]
        return f

    return mark if fn is None else mark(fn)


async def in_turn_light(s: ServedSystem, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in `s`'s turn: in the event loop when the device is quiet, else as
    `in_turn` (in the emulation executor)."""
    async with s.turn():
        try:
            if s.quiet():
                return fn(*args)
            return await run(fn, *args)
        except Cancelled:
            raise s.stopped_error() from None


def emulated(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A synchronous endpoint as a coroutine that runs it in its system's turn (the argument
    that is a ServedSystem) in the emulation executor (or, marked `light`, maybe in the event
    loop); coroutines are returned as they are."""
    if inspect.iscoroutinefunction(fn):
        return fn
    sig = inspect.signature(fn, eval_str=True)
    is_light = getattr(fn, "__hsaemu_light__", False)
    light_when = getattr(fn, "light_when", None)

    @functools.wraps(fn)
    async def endpoint(**kwargs: Any) -> Any:
        call = functools.partial(fn, **kwargs)
        s = next((v for v in kwargs.values() if isinstance(v, ServedSystem)), None)
        if s is None:
            return await run(call)
        if is_light and (light_when is None or light_when(**kwargs)):
            return await in_turn_light(s, call)
        return await in_turn(s, call)

    endpoint.__signature__ = sig  # type: ignore[attr-defined]
    return endpoint


def _union(routes: list[Any]) -> re.Pattern[str]:
    """One pattern matching what any of `routes` matches (their named groups made plain:
    names repeat across routes)."""
    alts = [re.sub(r"\(\?P<\w+>", "(?:", r.path_regex.pattern) for r in routes]
    return re.compile("|".join(f"(?:{a})" for a in alts) or "(?!)")


class EmulatedRouter(APIRouter):
    """An APIRouter that turns away, with one regular expression, a path none of its routes
    takes: the app tries its routers in turn, and FastAPI otherwise tries each route of each
    router before the right one (~3-5 us a route, ~70 routes). A path and method one of its
    routes takes is a full match at once (FastAPI looks for the route again to handle it);
    only a path taken with another method goes through every route (a 405 names them)."""

    _paths: tuple[int, re.Pattern[str] | None, dict[str, re.Pattern[str]]] = (-1, None, {})

    def prepare(self) -> tuple[re.Pattern[str], dict[str, re.Pattern[str]]]:
        """The patterns, compiled on first use (~1 ms a router; `app.warm_up` calls it)."""
        n, paths, by_method = self._paths
        if n != len(self.routes) or paths is None:
            routes = [
                r for r in self.routes if isinstance(getattr(r, "path_regex", None), re.Pattern)
            ]
            methods = {m for r in routes for m in getattr(r, "methods", None) or ()}
            by_method = {
                m: _union([r for r in routes if m in (getattr(r, "methods", None) or ())])
                for m in methods
            }
            paths = _union(routes)
            self._paths = (len(self.routes), paths, by_method)
        return paths, by_method

    def matches(self, scope: Any) -> tuple[Match, dict[str, Any]]:
        paths, by_method = self.prepare()
        if scope.get("type") == "http":
            path = get_route_path(scope)
            if not paths.match(path):
                return Match.NONE, {}
            full = by_method.get(scope.get("method", ""))
            if full is not None and full.match(path):
                # What the app's own pass would find (its child scope is dropped: FastAPI's
                # included routers match again when they handle the request).
                return Match.FULL, {}
        return super().matches(scope)


def _query_names(dependant: Any) -> set[str]:
    """The query parameters a route's dependant (and its sub-dependencies) declare."""
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def check_query(request: Request, known: set[str]) -> None:
    """Refuse query parameters the route does not take, as bodies refuse unknown fields: a
    typo (`?sise=`) is an error, not a silently ignored no-op."""
    unknown = sorted(set(request.query_params.keys()) - known)
    if unknown:
        takes = ", ".join(sorted(known)) or "none"
        raise ApiError(
            422,
            Status.ERROR_INVALID_ARGUMENT,
            f"unknown query parameter(s) {', '.join(repr(u) for u in unknown)}; "
            f"this route takes: {takes}",
        )


class CheckedRoute(APIRoute):
    """An APIRoute that refuses query parameters it does not take (`check_query`), before
    FastAPI reads the body or solves a dependency. (As an app-wide dependency the check cost
    every request a dependency solved: ~30 us, for an empty query string mostly.)"""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()
        known = _query_names(self.dependant)

        async def checked(request: Request) -> Any:
            if request.scope.get("query_string"):
                check_query(request, known)
            return await handler(request)

        return checked


def _is_system(annotation: Any) -> bool:
    return annotation is System or (
        get_origin(annotation) is Annotated and get_args(annotation) == get_args(System)
    )


def with_system(fn: Callable[..., Any]) -> tuple[Callable[..., Any], bool]:
    """`fn` taking its system (a `System` parameter) from what the Gate middleware found for
    the request's token, not from a FastAPI dependency: the Gate checked the token already,
    and FastAPI solves each dependency at a cost (~40 us for `System` and the HTTPBearer
    under it, ~20 % of a light call). The signature FastAPI sees keeps the path's
    `system_id`, so the OpenAPI document does not change; the route adds the bearer
    security requirement itself. True when `fn` takes a system."""
    sig = inspect.signature(fn, eval_str=True)
    name = next((n for n, p in sig.parameters.items() if _is_system(p.annotation)), None)
    if name is None:
        return fn, False
    params = [p for n, p in sig.parameters.items() if n != name]
    req = next((p.name for p in params if p.annotation is Request), None)
    added: list[str] = []
    if "system_id" not in sig.parameters:
        params.append(inspect.Parameter("system_id", _KW, annotation=SystemId))
        added.append("system_id")
    if req is None:
        req = "hsaemu_request"
        params.append(inspect.Parameter(req, _KW, annotation=Request))
        added.append(req)

    @functools.wraps(fn)
    async def endpoint(**kwargs: Any) -> Any:
        request: Request = kwargs[req]
        sid = kwargs["system_id"]
        for a in added:
            del kwargs[a]
        found = request.scope.get("state", {}).get(SYSTEM_STATE_KEY)
        if found is not None and found[0].id == sid:
            served, admin = found
            if not admin:
                served.touch()
        else:  # an app without the Gate: the dependency's own check
            served = await served_system(request, sid, await bearer(request))
        kwargs[name] = served
        out = fn(**kwargs)
        return await out if inspect.isawaitable(out) else out

    endpoint.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=sorted(params, key=lambda p: p.kind)
    )
    return endpoint, True


_KW = inspect.Parameter.KEYWORD_ONLY
_BEARER = [{bearer.scheme_name: []}]  # the security requirement HTTPBearer gives a route


class EmulatedRoute(CheckedRoute):
    """An APIRoute whose synchronous endpoint runs as `emulated` says, and which takes its
    system as `with_system` says."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        endpoint, takes_system = with_system(emulated(endpoint))
        if takes_system:
            extra = dict(kwargs.get("openapi_extra") or {})
            extra.setdefault("security", _BEARER)
            kwargs["openapi_extra"] = extra
        super().__init__(path, endpoint, **kwargs)
