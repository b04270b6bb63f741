"""Lab 7 starter: how the host learns that the GPU is done — polling, interrupts, and ROCr's
spin-then-sleep wait."""

from __future__ import annotations

import sys

import rocr
from hw_model.config import system_spec

ITERS_PER_US = 34  # fma_loop iterations per microsecond of kernel on gfx900 (measured)


def machine() -> rocr.Runtime:
    return rocr.init(spec=system_spec("gfx900", functional=False), trace=True)


def launch(rt: rocr.Runtime, kernel_us: float, interrupt: bool = True):
    """A kernel of about `kernel_us` and its completion signal (an interrupt signal, backed by
    a KFD event, or a plain polling signal). Returns (signal, trace mark)."""
    gpu = rt.gpus[0]
    fma = rt.load_code_object("builtin:fma_loop").kernel("fma_loop")
    out = gpu.pools()[0].allocate(4 * 256)
    q = gpu.create_queue(64)
    sig = rt.create_signal(1, interrupt=interrupt)
    mark = rt.system.tracer.events.total
    q.dispatch(
        fma,
        grid=256,
        workgroup=64,
        args=(out, 256, int(kernel_us * ITERS_PER_US)),
        completion_signal=sig,
    )
    return sig, mark


# -- task A ------------------------------------------------------------------------------------
def wake_latency_us(events: list, signal) -> float:
    """From the trace: how long after the CP wrote the signal's new value (the "completion
    signal" event whose args["signal"] is hex(signal.handle)) did the waiting host thread run
    again (the "host wakes" event measure() records when the wait returned)? In
    microseconds (event.ts is in picoseconds)."""
    # TODO (task A)
    raise NotImplementedError("task A: the wake-up latency from the trace")


# -- task B ------------------------------------------------------------------------------------
def spin_us(events: list) -> tuple[float, bool]:
    """(how long the host spun, whether it went to sleep): from the "hsa_signal_wait_scacquire"
    event to the first "AMDKFD_IOC_WAIT_EVENTS" ioctl on the "kfd" track if there is one (the
    wait went to sleep in the KFD), else to "host wakes". In microseconds."""
    # TODO (task B)
    raise NotImplementedError("task B: spin time and sleep from the trace")


# -- task C ------------------------------------------------------------------------------------
def my_wait(rt: rocr.Runtime, signal, spin: float) -> int:
    """ROCr's InterruptSignal::WaitRelaxed for `value < 1`, written yourself: spin for up to
    `spin` microseconds (`signal.wait(rocr.Condition.LT, 1, timeout_ns=...,
    wait_state=rocr.signal.WaitState.ACTIVE)` spins and returns the value when the time is up),
    then, if the signal has an event (`signal.event`), sleep in the KFD
    (`rt.thunk.wait_on_event(signal.event, timeout_ms)`, hsaKmtWaitOnEvent) until the value
    is below 1. Without an event there is nothing to sleep on: keep spinning. Returns the
    value."""
    # TODO (task C)
    raise NotImplementedError("task C: spin, then sleep on the signal's event")


def measure(kernel_us: float, interrupt: bool, waiter=None) -> tuple[float, float, bool]:
    with machine() as rt:
        sig, mark = launch(rt, kernel_us, interrupt)
        if waiter is None:
            sig.wait(rocr.Condition.LT, 1)
        else:
            waiter(rt, sig)
        rt.trace("host", "host wakes")  # the waiting thread runs again
        events = rt.system.tracer.events.since(mark)
        spun, slept = spin_us(events)
        return wake_latency_us(events, sig), spun, slept


def main(argv: list[str]) -> int:
    print("kernel us  signal     wake-up us  spun us  slept")
    for interrupt in (True, False):
        for kernel_us in (50, 150, 180, 250, 500, 1000):
            lat, spun, slept = measure(kernel_us, interrupt)
            kind = "interrupt" if interrupt else "polling"
            print(f"{kernel_us:9}  {kind:<9} {lat:11.2f} {spun:8.1f}  {slept}")
    print("\nmy_wait on a 500 us kernel:")
    for spin in (0, 50, 200, 1000):
        lat, spun, slept = measure(500, True, lambda rt, s, spin=spin: my_wait(rt, s, spin))
        print(f"  spin {spin:5} us: wake-up {lat:6.2f} us, spun {spun:6.1f} us, slept {slept}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
