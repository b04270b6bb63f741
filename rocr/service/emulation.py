"""The emulation executor: where the routes' emulation work runs, apart from the event loop.

Every synchronous route of a system (`EmulatedRoute`) first takes its turn on the system in
the event loop (`ServedSystem.turn`: no thread is parked on a busy system) and then runs in a
bounded pool of its own (`emulation_threads`), not anyio's default pool of 40 threads that
FastAPI's own synchronous work (dependencies, the reaper) uses. `/healthz` and the token check
run in the event loop and take no system lock, so a busy machine delays neither.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import re
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from anyio import to_thread
from fastapi import Request
from fastapi.routing import APIRoute, APIRouter
from starlette._utils import get_route_path
from starlette.routing import Match

from rocr.service.systems import WATCH_S, Cancelled, ServedSystem, Watch

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
    of CPU measured on a loaded 2-core machine, against ~0.05 ms for the call).
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


class EmulatedRouter(APIRouter):
    """An APIRouter that turns away, with one regular expression, a path none of its routes
    takes: the app tries its routers in turn, and FastAPI otherwise tries each route of each
    router before the right one (~3-5 us a route, ~70 routes)."""

    _paths: tuple[int, re.Pattern[str] | None] = (-1, None)

    def matches(self, scope: Any) -> tuple[Match, dict[str, Any]]:
        n, paths = self._paths
        if n != len(self.routes) or paths is None:
            # Each route's own pattern, its named groups made plain (names repeat across routes).
            alts = [
                re.sub(r"\(\?P<\w+>", "(?:", r.path_regex.pattern)
                for r in self.routes
                if isinstance(getattr(r, "path_regex", None), re.Pattern)
            ]
            paths = re.compile("|".join(f"(?:{a})" for a in alts) or "(?!)")
            self._paths = (len(self.routes), paths)
        if scope.get("type") == "http" and not paths.match(get_route_path(scope)):
            return Match.NONE, {}
        return super().matches(scope)


class EmulatedRoute(APIRoute):
    """An APIRoute whose synchronous endpoint runs as `emulated` says."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, emulated(endpoint), **kwargs)
