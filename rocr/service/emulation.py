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
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from anyio import to_thread
from fastapi import Request
from fastapi.routing import APIRoute

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


def emulated(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A synchronous endpoint as a coroutine that runs it in its system's turn (the argument
    that is a ServedSystem) in the emulation executor; coroutines are returned as they are."""
    if inspect.iscoroutinefunction(fn):
        return fn
    sig = inspect.signature(fn, eval_str=True)

    @functools.wraps(fn)
    async def endpoint(**kwargs: Any) -> Any:
        call = functools.partial(fn, **kwargs)
        s = next((v for v in kwargs.values() if isinstance(v, ServedSystem)), None)
        if s is None:
            return await run(call)
        return await in_turn(s, call)

    endpoint.__signature__ = sig  # type: ignore[attr-defined]
    return endpoint


class EmulatedRoute(APIRoute):
    """An APIRoute whose synchronous endpoint runs as `emulated` says."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, emulated(endpoint), **kwargs)
