"""Signals: hsa_signal_create/destroy, load, store, the atomics, and hsa_signal_wait_scacquire.

A wait runs `rocr.Signal.wait` on the system, under its lock, exactly as a local program would,
so the trace is the same. The emulated machine is single-threaded: the wait returns when the
condition holds or its simulated timeout passes, or fails when the machine has nothing left to
do. On a served machine another client may still act (ring a doorbell, store to the signal), so
with `wall_timeout_ms` such a wait releases the lock and blocks in real time, retrying once
another request has changed something, until that bound; with 0 it fails at once with the
diagnosis, like the local runtime.

A long wait runs in slices (`ServedSystem.sliced`): as soon as another request on the system
is queued it gives up its turn and resumes in the next one, with the host clock at the
device's; a client that hangs up ends it at the next slice, and a system deleted, expired or
shut down stops it (it answers as such).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import anyio
from fastapi import Request, Response

import rocr
from rocr.errors import HsaError
from rocr.service import emulation
from rocr.service.deps import ERRORS, PREFIX, System, responses
from rocr.service.emulation import EmulatedRoute, EmulatedRouter, light
from rocr.service.errors import ApiError, limit_error
from rocr.service.routes.queues import queue_error
from rocr.service.schemas import (
    DispatchTime,
    QueueErrorEntry,
    SignalCas,
    SignalCreate,
    SignalInfo,
    SignalOld,
    SignalValue,
    SignalWait,
    SignalWaitResult,
)
from rocr.service.systems import ServedSystem, SliceEnd, Watch
from rocr.signal import Condition, WaitState
from rocr.status import Status

router = EmulatedRouter(
    prefix=PREFIX, tags=["signals"], responses=ERRORS, route_class=EmulatedRoute
)

POLL_S = 0.01  # real-time poll for other clients' activity while a wait blocks


def signal_info(sig: rocr.Signal) -> SignalInfo:
    ev = sig.event
    return SignalInfo(
        handle=sig.handle,
        value=sig.load(),
        interrupt=ev is not None,
        event_id=None if ev is None else int(ev.EventId),
    )


@router.post("/signals", status_code=201, responses=responses(507))
@light
def create_signal(body: SignalCreate, s: System) -> SignalInfo:
    """hsa_signal_create (an interrupt signal by default, as ROCr's)."""
    with s.use() as rt:
        s.check_signal_room(body.interrupt)
        sig = rt.create_signal(body.initial, interrupt=body.interrupt)
        s.add_signal(sig)
        return signal_info(sig)


@router.get("/signals")
@light
def list_signals(s: System) -> list[SignalInfo]:
    with s.use(counts=False):
        return [signal_info(x) for x in s.signals.values()]


@router.get("/signals/{handle}")
@light
def load(handle: int, s: System) -> SignalInfo:
    """hsa_signal_load_scacquire (in `value`)."""
    with s.use(counts=False):
        return signal_info(s.signal(handle))


@router.delete("/signals/{handle}", status_code=204)
@light
def destroy(handle: int, s: System) -> Response:
    """hsa_signal_destroy."""
    with s.use():
        s.signal(handle).destroy()
        s.remove_signal(handle)
    return Response(status_code=204)


@router.put("/signals/{handle}/value")
def store(handle: int, body: SignalValue, s: System) -> SignalInfo:
    """hsa_signal_store_screlease."""
    with s.use():
        sig = s.signal(handle)
        sig.store(body.value)
        return signal_info(sig)


def _atomic(op: str, doc: str):
    def route(handle: int, body: SignalValue, s: System) -> SignalOld:
        with s.use():
            return SignalOld(old=getattr(s.signal(handle), op)(body.value))

    route.__name__ = f"signal_{op.rstrip('_')}"
    route.__doc__ = doc
    return route


for _op, _path, _doc in (
    ("add", "add", "hsa_signal_add_scacq_screl: returns the old value."),
    ("subtract", "subtract", "hsa_signal_subtract_scacq_screl: returns the old value."),
    ("exchange", "exchange", "hsa_signal_exchange_scacq_screl: returns the old value."),
    ("and_", "and", "hsa_signal_and_scacq_screl: returns the old value."),
    ("or_", "or", "hsa_signal_or_scacq_screl: returns the old value."),
    ("xor", "xor", "hsa_signal_xor_scacq_screl: returns the old value."),
):
    router.post(f"/signals/{{handle}}/{_path}")(_atomic(_op, _doc))


@router.post("/signals/{handle}/cas")
def cas(handle: int, body: SignalCas, s: System) -> SignalOld:
    """hsa_signal_cas_scacq_screl: returns the value observed."""
    with s.use():
        return SignalOld(old=s.signal(handle).cas(body.expected, body.value))


@router.get("/signals/{handle}/dispatch-time")
def dispatch_time(handle: int, s: System) -> DispatchTime:
    """hsa_amd_profiling_get_dispatch_time: when the packet ran, in system-clock ns."""
    with s.use():
        try:
            start, end = s.signal(handle).dispatch_time()
        except HsaError as e:
            raise ApiError.from_hsa(e, 409) from None
        return DispatchTime(start_ns=start, end_ns=end)


# -- wait ------------------------------------------------------------------------------------


@dataclass
class _WaitState:
    deadline_ps: int | None = None
    stuck: HsaError | None = None
    stuck_value: int | None = None
    attempts: int = 0
    resuming: bool = False  # the last try ended its slice: the same attempt goes on


_SLICED = object()  # `_attempt`'s answer when its slice ended first


def _queue_errors(s: ServedSystem) -> list[QueueErrorEntry]:
    out = []
    for q in s.queues.values():
        err = queue_error(q)
        if err is not None:
            out.append(QueueErrorEntry(queue=q.id, **err.model_dump()))
    return out


def _attempt(
    watch: Watch, s: ServedSystem, handle: int, body: SignalWait, st: _WaitState
) -> object:
    """One try (or the next slice of one) in the system's turn: a SignalWaitResult, None
    when the machine has nothing left to do, _SLICED when the slice ended first."""
    cond = Condition[body.condition]
    with s.use(counts=False) as rt:
        sig = s.signal(handle)
        now = rt.system.host_now if rt.system is not None else round(rt.now_ns * 1000)
        if st.deadline_ps is None and body.timeout_ns is not None:
            st.deadline_ps = now + body.timeout_ns * 1000
        value = sig.load()
        engine = rt.system.engine if rt.system is not None else None
        if st.stuck is not None and value == st.stuck_value and engine is not None and engine.idle:
            return None  # nothing changed since the last try: waiting again cannot help
        timeout = None if st.deadline_ps is None else max(0, st.deadline_ps - now) // 1000
        if not st.resuming:
            st.attempts += 1
        st.resuming = False
        try:
            with s.sliced(watch):
                value = sig.wait(cond, body.compare_value, timeout, WaitState[body.wait_state])
        except SliceEnd:
            st.resuming = True
            return _SLICED
        except HsaError as e:
            if e.status == Status.ERROR_INVALID_SIGNAL:
                raise
            st.stuck, st.stuck_value = e, sig.load()
            return None
        return SignalWaitResult(
            value=value,
            satisfied=cond.test(value, body.compare_value),
            host_ns=rt.now_ns,
            attempts=st.attempts,
            queue_errors=_queue_errors(s),
        )


_NOT_BRIEF = object()  # `_attempt_brief`'s answer when something happened since the dispatch


def _attempt_brief(s: ServedSystem, handle: int, body: SignalWait, st: _WaitState) -> object:
    """The first try of a wait for a small dispatch made on a quiet device with nothing done
    on the system since (routes.queues.dispatch records it), in the event loop: its work is
    bounded, and a hop to an emulation thread and back would cost more (~0.3-0.6 ms of CPU
    and a wait for the thread and the GIL on a loaded machine). A whole slice bounds it
    still: past one the wait goes on in the emulation executor. The same `Signal.wait` call
    either way, so the machine does the same."""
    if s.brief_wait != (handle, s.activity):
        return _NOT_BRIEF
    s.brief_wait = None
    s.fresh_slice()
    return _attempt(Watch(inline=True), s, handle, body, st)


@router.post("/signals/{handle}/wait")
async def wait(handle: int, body: SignalWait, s: System, request: Request) -> SignalWaitResult:
    """hsa_signal_wait_scacquire: until `value <condition> compare_value`, or `timeout_ns` of
    simulated time. A wait that can never finish fails with HSA_STATUS_ERROR (409) and a
    diagnosis; with `wall_timeout_ms` it first blocks, holding no lock, for other clients."""
    lim = s.limits.max_wait_ms
    if body.wall_timeout_ms > lim:
        raise limit_error(
            422,
            "max_wait_ms",
            lim,
            f"wall_timeout_ms {body.wall_timeout_ms} is longer than a request may block",
        )
    until = time.monotonic() + body.wall_timeout_ms / 1000
    st = _WaitState()
    s.waiters += 1
    brief = s.brief_wait == (handle, s.activity)
    try:
        while True:
            seen = s.activity
            result = _NOT_BRIEF
            if brief:
                brief = False
                result = await emulation.in_turn_inline(s, _attempt_brief, s, handle, body, st)
            if result is _NOT_BRIEF:
                result = await emulation.watched(s, request, _attempt, s, handle, body, st)
            if result is _SLICED:
                if await request.is_disconnected():
                    raise ApiError(409, Status.ERROR, "the client went away during the wait")
                continue
            if result is not None:
                assert isinstance(result, SignalWaitResult)
                return result
            while s.activity == seen and time.monotonic() < until and s.cancelled is None:
                if await request.is_disconnected():
                    raise ApiError(409, Status.ERROR, "the client went away during the wait")
                await anyio.sleep(POLL_S)
            if s.cancelled is not None:
                raise s.stopped_error()
            if time.monotonic() >= until:
                break
    finally:
        s.waiters -= 1
    err = st.stuck
    assert err is not None
    extra = ""
    if body.wall_timeout_ms:
        extra = (
            f"\n(This wait also blocked {body.wall_timeout_ms} ms of real time for another "
            "client of this system to act; none changed anything it waits on.)"
        )
    raise ApiError(409, err.status, err.message + extra)
