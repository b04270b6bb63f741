"""HSA signals: `amd_signal_t` in fine-grained system memory, optionally backed by a KFD event.

As ROCR-Runtime's core/runtime/default_signal.cpp and interrupt_signal.cpp: a signal's handle
is the address of its 64-byte `amd_signal_t`; the value lives at offset 8 and the GPU's CP
decrements it there. An interrupt signal also carries an event mailbox and event id, so the
CP can raise its KFD event; a host wait first spins (ROCr: up to 200 us) and then sleeps in
AMDKFD_IOC_WAIT_EVENTS. Host-side modifications of an interrupt signal set the event, to wake
other waiters, as ROCr's InterruptSignal does.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import TYPE_CHECKING

import numpy as np

from hw_model.structs import (
    AMD_SIGNAL_END_TS_OFFSET,
    AMD_SIGNAL_EVENT_ID_OFFSET,
    AMD_SIGNAL_EVENT_MAILBOX_PTR_OFFSET,
    AMD_SIGNAL_KIND_OFFSET,
    AMD_SIGNAL_SIZE,
    AMD_SIGNAL_START_TS_OFFSET,
    AMD_SIGNAL_VALUE_OFFSET,
    AmdSignalKind,
)
from rocr.errors import HsaError
from rocr.status import Status
from rocr.validate import U64_MAX, as_int, as_signal_value, as_u64

if TYPE_CHECKING:
    from rocr.runtime import Runtime
    from roct import HsaEvent

# ROCr InterruptSignal::WaitRelaxed spins this long before sleeping on the event (kMaxElapsed).
SPIN_BEFORE_SLEEP_PS = 200_000_000
INFINITE_MS = 0xFFFFFFFF


class Condition(IntEnum):
    """hsa_signal_condition_t."""

    EQ = 0
    NE = 1
    LT = 2
    GTE = 3

    def test(self, value: int, compare: int) -> bool:
        if self is Condition.EQ:
            return value == compare
        if self is Condition.NE:
            return value != compare
        if self is Condition.LT:
            return value < compare
        return value >= compare


_LT = Condition.LT  # what a dispatch's completion is waited for: `value < 1`


def wait_timeout(timeout_ns: object) -> int | None:
    """A wait's timeout in ns, checked; None: no limit."""
    # hsa_signal_wait_*'s timeout_hint is a uint64_t; UINT64_MAX is "forever" to callers (HIP
    # passes it for an unbounded wait).
    if timeout_ns is None:
        return None
    timeout_ns = as_u64(timeout_ns, "timeout_ns", why="None waits without a limit")
    return None if timeout_ns == U64_MAX else timeout_ns


class WaitState(IntEnum):
    """hsa_wait_state_t."""

    BLOCKED = 0
    ACTIVE = 1


_ACTIVE = WaitState.ACTIVE


def _condition(value: object) -> Condition:
    """An hsa_signal_condition_t, or HsaError(INVALID_ARGUMENT) naming it."""
    if isinstance(value, Condition):
        return value
    try:
        return Condition(as_int(value, "condition"))
    except ValueError:
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            f"condition = {value!r}: one of Condition.EQ (0), NE (1), LT (2), GTE (3)",
        ) from None


class SignalPool:
    """Pages of fine-grained system memory, GPU-mapped, carved into 64-byte amd_signal_t."""

    PAGE = 4096

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._free: list[tuple[object, int]] = []

    def take(self) -> tuple[object, int]:
        if not self._free:
            alloc = self.rt.thunk.alloc_memory(0, self.PAGE, coherent=True)
            self.rt.thunk.map_memory_to_gpu(alloc.address)
            self._free = [
                (alloc.mapping, off)
                for off in range(self.PAGE - AMD_SIGNAL_SIZE, -1, -AMD_SIGNAL_SIZE)
            ]
        return self._free.pop()

    def give(self, mapping: object, offset: int) -> None:
        self._free.append((mapping, offset))


class Signal:
    """hsa_signal_t. `handle` is the address of the signal's amd_signal_t."""

    def __init__(
        self,
        rt: Runtime,
        initial: int,
        event: HsaEvent | None,
        *,
        slot: tuple[object, int] | None = None,
        attach: bool = False,
    ) -> None:
        """`slot` (mapping, offset): an amd_signal_t of its own page instead of the pool's (IPC
        signals); `attach`: it already holds a live signal of another process, keep it."""
        self.rt = rt
        self._pooled = slot is None
        self._map, self._off = rt.signal_pool.take() if slot is None else slot
        self.handle: int = self._map.address + self._off
        self.event = event
        self.ipc = not self._pooled
        m = self._map
        if not attach:
            m.array[self._off : self._off + AMD_SIGNAL_SIZE] = 0
            m.store_i64(self._off + AMD_SIGNAL_KIND_OFFSET, AmdSignalKind.USER)
            m.store_i64(self._off + AMD_SIGNAL_VALUE_OFFSET, initial)
        if event is not None:
            m.store_u64(self._off + AMD_SIGNAL_EVENT_MAILBOX_PTR_OFFSET, event.HWData2)
            m.store_u64(self._off + AMD_SIGNAL_EVENT_ID_OFFSET, event.EventId)
        self.destroyed = False
        # The value as a live int64 view of the CPU mapping: loads are plain memory reads.
        self._value = m.array[self._off + AMD_SIGNAL_VALUE_OFFSET :][:8].view(np.int64)
        # start_ts and end_ts, plain bytes of the same mapping (cleared by _rearm)
        self._stamps = m.array[self._off + AMD_SIGNAL_START_TS_OFFSET :][:16]
        # The value's store (store_i64 at its offset), bound once: a re-arm per dispatch.
        self._store_value = m.store_u64_at(self._off + AMD_SIGNAL_VALUE_OFFSET)

    def __repr__(self) -> str:
        kind = "interrupt" if self.event is not None else "user"
        value = "destroyed" if self.destroyed else f"value={int(self._value[0])}"
        return f"Signal({self.handle:#x}, {kind}, {value})"

    @property
    def address(self) -> int:
        return self.handle

    def _live(self) -> None:
        if self.rt.closed:
            raise HsaError(
                Status.ERROR_NOT_INITIALIZED,
                f"signal {self.handle:#x}: the runtime was shut down",
            )
        if self.destroyed:
            raise HsaError(Status.ERROR_INVALID_SIGNAL, f"signal {self.handle:#x} was destroyed")

    def _changed(self) -> None:
        """After a host-side modification: wake waiters (ROCr calls hsaKmtSetEvent)."""
        self.rt.thunk.host_elapse(self.rt.host_cost("memory_op_ps"))
        if self.event is not None:
            self.rt.thunk.set_event(self.event)

    # -- hsa_signal_load / store / arithmetic ------------------------------------------------
    def load(self) -> int:
        """hsa_signal_load_scacquire."""
        if self.destroyed or self.rt.closed:
            self._live()
        return int(self._value[0])

    # Values are hsa_signal_value_t (int64_t): anything else is INVALID_ARGUMENT; arithmetic
    # wraps in two's complement, as the C atomics do.
    def store(self, value: int) -> None:
        value = as_signal_value(value)
        self._live()
        self._map.store_i64(self._off + AMD_SIGNAL_VALUE_OFFSET, value)
        self._changed()

    def add(self, value: int) -> int:
        value = as_signal_value(value)
        self._live()
        old = self._map.atomic_add_i64(self._off + AMD_SIGNAL_VALUE_OFFSET, value)
        self._changed()
        return old

    def subtract(self, value: int) -> int:
        value = as_signal_value(value)
        self._live()
        old = self._map.atomic_add_i64(self._off + AMD_SIGNAL_VALUE_OFFSET, -value)
        self._changed()
        return old

    def exchange(self, value: int) -> int:
        value = as_signal_value(value)
        self._live()
        old = self._map.atomic_exchange_i64(self._off + AMD_SIGNAL_VALUE_OFFSET, value)
        self._changed()
        return old

    def cas(self, expected: int, value: int) -> int:
        expected = as_signal_value(expected, "expected")
        value = as_signal_value(value)
        self._live()
        old = self._map.atomic_cas_i64(self._off + AMD_SIGNAL_VALUE_OFFSET, expected, value)
        self._changed()
        return old

    def and_(self, value: int) -> int:
        value = as_signal_value(value)
        self._live()
        old = self._map.atomic_and_i64(self._off + AMD_SIGNAL_VALUE_OFFSET, value)
        self._changed()
        return old

    def or_(self, value: int) -> int:
        value = as_signal_value(value)
        self._live()
        old = self._map.atomic_or_i64(self._off + AMD_SIGNAL_VALUE_OFFSET, value)
        self._changed()
        return old

    def xor(self, value: int) -> int:
        value = as_signal_value(value)
        self._live()
        old = self._map.atomic_xor_i64(self._off + AMD_SIGNAL_VALUE_OFFSET, value)
        self._changed()
        return old

    # -- hsa_signal_wait_scacquire -----------------------------------------------------------
    def wait(
        self,
        condition: Condition | int,
        compare_value: int,
        timeout_ns: int | None = None,
        wait_state: WaitState = WaitState.BLOCKED,
    ) -> int:
        """Wait until `value <condition> compare_value`; returns the value observed.

        `timeout_ns` (simulated ns; None or UINT64_MAX: no limit): once it has passed the
        current value is returned, as hsa_signal_wait_* does, whatever the GPU is doing. A wait
        without a timeout that can never be satisfied — nothing the machine has left to do
        can change the value, and no other agent can — raises HsaError(ERROR) with a
        diagnosis instead of hanging.
        """
        self._live()
        cond = _condition(condition)
        compare_value = as_signal_value(compare_value, "compare_value")
        if timeout_ns is not None:
            timeout_ns = wait_timeout(timeout_ns)
        if not isinstance(wait_state, WaitState):
            try:
                wait_state = WaitState(as_int(wait_state, "wait_state"))
            except ValueError:
                raise HsaError(
                    Status.ERROR_INVALID_ARGUMENT,
                    f"wait_state = {wait_state!r}: one of WaitState.BLOCKED (0), ACTIVE (1)",
                ) from None
        return self._wait(cond, compare_value, timeout_ns, wait_state)[0]

    def _wait(
        self,
        cond: Condition,
        compare_value: int,
        timeout_ns: int | None,
        wait_state: WaitState,
        start: int | None = None,
    ) -> tuple[int, bool]:
        """`wait` for checked arguments: the value, and whether the async events poll it
        ended with had anything to look at. Whatever way it returns, that poll came after the
        device last ran: unless it ran callbacks, the caller has nothing new to poll for.
        `start`: the host time a wait began, when its caller spun first without a poll and
        logged the wait's start itself (DispatchHandle.wait): the spin goes on to the same
        end."""
        rt = self.rt
        if self.destroyed or rt.closed:
            self._live()
        th = rt.thunk
        if start is None:
            start = th.host_now()
            tracing = rt._trace_switch.enabled
            if tracing:
                rt._marker(wait_marker, (self.handle, cond.name, compare_value))
        else:
            tracing = rt._trace_switch.enabled
        deadline = None if timeout_ns is None else start + timeout_ns * 1000
        spin_end = start + SPIN_BEFORE_SLEEP_PS
        view = self._value
        lt = cond is _LT
        sleep = self.event is not None and wait_state is not _ACTIVE
        while True:
            value = int(view[0])  # hsa_signal_load_scacquire, as `load` does
            acted = rt._async_pending and rt.poll_async()
            if value < compare_value if lt else cond.test(value, compare_value):
                if tracing:
                    rt._marker(returns_marker, (value, self.handle))
                return value, acted
            now = th.host_now()
            if deadline is None and now < spin_end:
                # The spin of a wait without a deadline (a dispatch's round trip): the general
                # case below with nothing to bound it but the end of the spin.
                limit = spin_end if sleep else None
            else:
                if deadline is None:
                    remaining = INFINITE_MS
                elif now >= deadline:
                    rt.trace("rocr", "wait times out", value=value)
                    return value, acted
                else:
                    # ROCr InterruptSignal::WaitRelaxed sleeps in hsaKmtWaitOnEvent for the
                    # whole milliseconds left (capped below KFD's infinite 0xFFFFFFFF); with
                    # less than 1 ms left it calls it with 0 and polls the value until the
                    # deadline: a spin.
                    remaining = min((deadline - now) // 1_000_000_000, INFINITE_MS - 1)
                if sleep and now >= spin_end and remaining != 0:
                    from roct import HsaKmtError, HsaKmtStatus

                    try:
                        th.wait_on_multiple_events(
                            [self.event, *rt.async_events()], False, remaining
                        )
                    except HsaKmtError as e:
                        if e.status == HsaKmtStatus.WAIT_FAILURE:
                            raise rt.stuck_wait(self, cond, compare_value, self.load()) from None
                        raise
                    if self.destroyed or rt.closed:
                        self._live()
                    continue
                limit = spin_end if sleep and now < spin_end else None
                if deadline is not None:
                    limit = deadline if limit is None else min(limit, deadline)
            if not th.host_step(limit):
                raise rt.stuck_wait(self, cond, compare_value, value)
            # The device ran, and a poll may have run callbacks: either may have ended the
            # signal or the runtime (checked on entry for the first look).
            if self.destroyed or rt.closed:
                self._live()

    # -- profiling ---------------------------------------------------------------------------
    def dispatch_time(self) -> tuple[float, float]:
        """hsa_amd_profiling_get_dispatch_time: (start, end) in ns of the system clock.

        The CP wrote GPU timestamps into start_ts/end_ts; they convert with the GPU timestamp
        frequency and the clock-counter pair from AMDKFD_IOC_GET_CLOCK_COUNTERS.
        """
        self._live()
        start = self._map.load_u64(self._off + AMD_SIGNAL_START_TS_OFFSET)
        end = self._map.load_u64(self._off + AMD_SIGNAL_END_TS_OFFSET)
        if start == 0 and end == 0:
            raise HsaError(
                Status.ERROR_INVALID_SIGNAL,
                "no timestamps: the signal was not a completion signal of a retired packet",
            )
        return self.rt.gpu_ticks_to_ns(start), self.rt.gpu_ticks_to_ns(end)

    def _rearm(self, value: int) -> None:
        """Reuse a retired completion signal: value back to `value`, timestamps cleared. No
        host-side waiter can be parked on a pooled signal, so no event is set."""
        self._store_value(value)
        # Plain stores: nothing watches the timestamps (the CP writes them at retire).
        _TWO_U64.pack_into(self._stamps, 0, 0, 0)

    def destroy(self) -> None:
        if self.destroyed:
            return
        if self.event is not None:
            self.rt.thunk.destroy_event(self.event)
        if self._pooled:  # an IPC signal's page stays mapped until the process exits
            self.rt.signal_pool.give(self._map, self._off)
        self.rt._signals.discard(self)
        self.destroyed = True


_TWO_U64 = struct.Struct("<QQ")
assert AMD_SIGNAL_END_TS_OFFSET == AMD_SIGNAL_START_TS_OFFSET + 8


class DoorbellSignal:
    """The queue's doorbell_signal: an amd_signal_t of kind DOORBELL whose store is an MMIO
    write of the packet index to the doorbell (ROCr's DoorbellSignal)."""

    def __init__(self, rt: Runtime, resource) -> None:
        self.rt = rt
        # The MMIO write of the doorbell word, bound once (the mapping checks it once)
        self._store_db = resource.doorbell.store_u64_at(resource.doorbell_offset)
        self.doorbell_address = resource.Queue_DoorBell
        self._map, self._off = rt.signal_pool.take()
        self.handle = self._map.address + self._off
        m = self._map
        m.array[self._off : self._off + AMD_SIGNAL_SIZE] = 0
        m.store_i64(self._off + AMD_SIGNAL_KIND_OFFSET, AmdSignalKind.DOORBELL)
        # hardware_doorbell_ptr shares the value slot
        m.store_u64(self._off + AMD_SIGNAL_VALUE_OFFSET, self.doorbell_address)
        self.last_value: int | None = None
        self._store_ps = rt.host_cost("doorbell_store_ps")  # fixed per machine
        self._thunk = rt.thunk

    def store(self, value: int) -> None:
        self._thunk.host_elapse(self._store_ps)
        self._store_db(value)
        self.last_value = value

    def release(self) -> None:
        self.rt.signal_pool.give(self._map, self._off)


__all__ = [
    "AMD_SIGNAL_END_TS_OFFSET",
    "Condition",
    "DoorbellSignal",
    "Signal",
    "SignalPool",
    "WaitState",
]


# Trace markers of a wait (rt._marker): (track, name, args) from the values logged.
def wait_marker(handle: int, condition: str, compare: int) -> tuple[str, str, dict]:
    args = {"signal": hex(handle), "condition": condition, "compare": compare}
    return "rocr", "hsa_signal_wait_scacquire", args


def returns_marker(value: int, handle: int) -> tuple[str, str, dict]:
    return "rocr", "wait returns", {"value": value, "signal": hex(handle)}
