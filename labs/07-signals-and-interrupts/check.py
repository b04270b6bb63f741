"""Lab 7 check: the student's trace readings against the check's on runs of its own, their
spin-then-sleep wait from the KFD's records (the WAIT_EVENTS ioctls) and the CP's signal
write, and the answers in answers.toml measured on the machine.

python labs/07-signals-and-interrupts/check.py path/to/starter.py
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import rocr
from hw_model.config import system_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _grading import Choice, Number, grade, report  # noqa: E402

LAB = "lab7"
ITERS_PER_US = 34
KEYS = {"who_wakes": "6d99f133ab23ce62", "polling_costs": "7ed7f69b6b8ea2c0"}
WHO = (
    "the-host-polling-the-signal",
    "the-cp-interrupt-through-the-kfd-event",
    "a-timer-in-the-kfd",
    "the-doorbell",
)
COSTS = ("host-cpu-time", "gpu-time", "pcie-bandwidth", "nothing")
TABLE_US = (50, 150, 180, 250, 500, 1000)


def load(path: str):
    spec = importlib.util.spec_from_file_location("student", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(kernel_us: float, interrupt: bool, waiter=None) -> dict:
    """A kernel of ~kernel_us, waited for by `waiter(rt, signal)` (default: hsa_signal_wait);
    what the machine recorded."""
    with rocr.init(spec=system_spec("gfx900", functional=False), trace=True) as rt:
        gpu = rt.gpus[0]
        fma = rt.load_code_object("builtin:fma_loop").kernel("fma_loop")
        out = gpu.pools()[0].allocate(4 * 256)
        q = gpu.create_queue(64)
        sig = rt.create_signal(1, interrupt=interrupt)
        mark = rt.system.tracer.events.total
        args = (out, 256, int(kernel_us * ITERS_PER_US))
        q.dispatch(fma, grid=256, workgroup=64, args=args, completion_signal=sig)
        start = rt.system.host_now
        value = sig.wait(rocr.Condition.LT, 1) if waiter is None else waiter(rt, sig)
        rt.trace("host", "host wakes")
        events = sorted(rt.system.tracer.events.since(mark), key=lambda e: e.ts)
        written = next(
            e.ts
            for e in events
            if e.name == "completion signal" and e.args.get("signal") == hex(sig.handle)
        )
        woke = next(e.ts for e in events if e.name == "host wakes")
        sleeps = [e.ts for e in events if e.name == "AMDKFD_IOC_WAIT_EVENTS" and e.ts >= start]
        waits = [e.ts for e in events if e.name == "hsa_signal_wait_scacquire"]
        first = waits[0] if waits else start
        return {
            "events": events,
            "signal": sig,
            "value": value,
            "final": sig.load(),
            "latency_us": (woke - written) / 1e6,
            "spun_us": ((sleeps[0] if sleeps else woke) - first) / 1e6,
            "slept": bool(sleeps),
            "sleep_after_us": (sleeps[0] - start) / 1e6 if sleeps else None,
        }


def check_readings(mod) -> list[str]:
    problems = []
    for kernel_us, interrupt in ((120, True), (400, True), (300, False)):
        r = run(kernel_us, interrupt)
        what = f"a {kernel_us} us kernel, {'interrupt' if interrupt else 'polling'} signal"
        try:
            lat = mod.wake_latency_us(r["events"], r["signal"])
            if not isinstance(lat, int | float) or abs(lat - r["latency_us"]) > 0.01:
                problems.append(f"wake_latency_us: wrong for {what}")
        except NotImplementedError as e:
            problems.append(f"wake_latency_us: not done yet ({e})")
        try:
            spun, slept = mod.spin_us(r["events"])
            if abs(spun - r["spun_us"]) > 0.01 or bool(slept) != r["slept"]:
                problems.append(f"spin_us: wrong for {what}")
        except NotImplementedError as e:
            problems.append(f"spin_us: not done yet ({e})")
        if any("not done yet" in p for p in problems):
            break
    return problems


def check_my_wait(mod) -> list[str]:
    problems = []
    cases = (
        (400, True, 30, "sleep after ~30 us of spinning"),
        (300, True, 1000, "never sleep: the kernel ends within the spin"),
        (200, False, 20, "keep spinning: a polling signal has no event to sleep on"),
    )
    for kernel_us, interrupt, spin, expect in cases:
        try:
            r = run(kernel_us, interrupt, lambda rt, s, spin=spin: mod.my_wait(rt, s, spin))
        except NotImplementedError as e:
            return [f"my_wait: not done yet ({e})"]
        except rocr.HsaError as e:
            problems.append(f"my_wait: spin {spin} on {kernel_us} us raised {e.status.name}")
            continue
        what = f"my_wait: with spin {spin} us on a {kernel_us} us kernel it should {expect}"
        if r["value"] is None or r["value"] >= 1 or r["final"] >= 1 or r["latency_us"] < 0:
            problems.append(f"{what}, returning the value once it is below 1")
        elif interrupt and spin < kernel_us:
            after = r["sleep_after_us"]
            if after is None or not spin - 1 <= after <= spin + 5:
                problems.append(what)
        elif r["slept"]:
            problems.append(what)
    return problems


def truths() -> dict:
    table = {us: run(us, True) for us in TABLE_US}
    polling = run(1000, False)
    return {
        "rocr_spin_us": table[1000]["spun_us"],
        "wake_latency_sleeping_us": table[1000]["latency_us"],
        "wake_latency_spinning_us": table[50]["latency_us"],
        "longest_kernel_without_sleep": str(max(us for us in TABLE_US if not table[us]["slept"])),
        "host_spin_polling_1000_us": polling["spun_us"],
    }


def questions() -> list:
    t = truths()
    return [
        Number("rocr_spin_us", t["rocr_spin_us"], 0.02),
        Number("wake_latency_sleeping_us", t["wake_latency_sleeping_us"], 0.05, 0.5),
        Number("wake_latency_spinning_us", t["wake_latency_spinning_us"], 0, 0.1),
        Choice(
            "longest_kernel_without_sleep",
            tuple(str(us) for us in TABLE_US),
            truth=t["longest_kernel_without_sleep"],
        ),
        Number("host_spin_polling_1000_us", t["host_spin_polling_1000_us"], 0.05),
        Choice("who_wakes", WHO, key=KEYS["who_wakes"], lab=LAB),
        Choice("polling_costs", COSTS, key=KEYS["polling_costs"], lab=LAB),
    ]


def check(path: str) -> list[str]:
    mod = load(path)
    return check_readings(mod) + check_my_wait(mod) + grade(path, questions())


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).with_name("starter.py"))
    return report("lab 7", check(path), "you read the waits right and wrote ROCr's wait")


if __name__ == "__main__":
    sys.exit(main())
