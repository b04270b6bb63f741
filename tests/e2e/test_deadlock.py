"""Deadlocks under every scheduler policy: a wait that can never return says so at once, even
when the HW scheduler keeps swapping queues that cannot run (round-robin's quantum timer),
and a rotation that only changes the mapping is no progress.

Two safety bounds keep a regression from hanging the suite: `bounded_rotation` makes any HW
scheduler raise after `MAX_QUANTA` quanta (deterministic, and it works in the server's worker
thread too), and `hang_guard` fails a wait in the main thread after a generous real-time
bound. Nothing here asserts wall-clock time."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

import pytest

import rocr
from hw_model import aql
from hw_model.config import system_spec
from hw_model.scheduler import HwScheduler
from rocr.service.schemas import ServerLimits
from rocr.service.testing import in_process_client

POLICIES = ("round_robin", "gem5_round_robin", "priority", "ready_first")
US = 1_000_000  # ps
MAX_QUANTA = 2_000  # 200 ms of 100 us quanta: far beyond any wait here


@pytest.fixture(autouse=True)
def bounded_rotation(monkeypatch):
    """A scheduler that keeps rotating past MAX_QUANTA raises instead of spinning forever."""
    quantum = HwScheduler._quantum

    def bounded(self):
        if self.quanta >= MAX_QUANTA:
            raise RuntimeError(f"{self.quanta} quanta: the HWS rotates forever, the wait hangs")
        quantum(self)

    monkeypatch.setattr(HwScheduler, "_quantum", bounded)


@contextlib.contextmanager
def hang_guard(seconds: float = 30.0) -> Iterator[None]:
    """Fail (not hang) if the block runs for more than `seconds` of real time."""

    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: the wait hangs")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def barrier_and(*deps, completion=None) -> rocr.BarrierAndPacket:
    return rocr.BarrierAndPacket(
        header=aql.make_header(aql.PacketType.BARRIER_AND),
        dep_signal=[d.handle for d in deps] + [0] * (5 - len(deps)),
        completion_signal=0 if completion is None else completion.handle,
    )


def three_blocked_queues(rt):
    """Three queues on a two-HQD GPU, each blocked on a barrier-AND on `never` (value 1),
    which nothing will ever set to 0."""
    gpu = rt.gpus[0]
    queues = [gpu.create_queue(64) for _ in range(3)]
    never = rt.create_signal(1)
    dones = [rt.create_signal(1) for _ in queues]
    for q, d in zip(queues, dones, strict=True):
        q.submit(barrier_and(never, completion=d))
    return queues, never, dones


def make_rt(policy: str):
    return rocr.init(spec=system_spec("teaching", scheduler_policy=policy))


@pytest.mark.parametrize("policy", POLICIES)
def test_blocked_queues_rotating_through_two_hqds_are_a_deadlock(policy):
    with make_rt(policy) as rt:
        queues, never, dones = three_blocked_queues(rt)
        t0 = rt.system.host_now
        with hang_guard(), pytest.raises(rocr.HsaError) as info:
            dones[0].wait(rocr.Condition.LT, 1)
        err = info.value
        assert err.status == rocr.Status.ERROR
        assert "can never return" in err.message
        for q in queues:
            assert f"queue {q.id}: write_index 1, read_dispatch_id 0" in err.message
            assert f"pasid 0x8000 queue {q.queue_id}" in err.message  # the HWS side
        assert err.message.count(f"{never.handle:#x}=1") >= 3  # the barrier's signal, per queue
        # Said at once: within a few quanta of simulated time, not after a long rotation.
        quantum = rt.system.spec.gpu.quantum_ps
        assert rt.system.host_now - t0 < 5 * quantum
        sched = rt.system.gpus[0].scheduler
        if sched.context_switches:  # the policy rotated: the report says it was pointless
            assert "none of them can run" in err.message


@pytest.mark.parametrize("policy", ["round_robin", "gem5_round_robin"])
def test_a_timed_wait_on_the_rotation_returns_at_its_deadline_and_work_resumes(policy):
    with make_rt(policy) as rt:
        queues, never, dones = three_blocked_queues(rt)
        sched = rt.system.gpus[0].scheduler
        t0 = rt.system.host_now
        with hang_guard():
            assert dones[0].wait(rocr.Condition.LT, 1, timeout_ns=1_000_000) == 1
        assert rt.system.host_now == t0 + 1_000 * US
        swaps = sched.context_switches
        assert swaps >= 5  # the HWS kept rotating, as gem5's would (100 us quantum)
        # The host acts: every queue gets its turn and completes (legitimate oversubscription).
        never.store(0)
        with hang_guard():
            for d in dones:
                assert d.wait(rocr.Condition.LT, 1) == 0
        assert sched.context_switches > swaps


def test_a_queue_runnable_only_once_swapped_in_is_not_a_deadlock():
    """Two queues blocked on barriers hold both HQDs; the producer they wait for is unmapped.
    Only the rotation gets it an HQD: the wait must not be called a deadlock."""
    with make_rt("round_robin") as rt:
        gpu = rt.gpus[0]
        k = rt.load_code_object("builtin:empty").kernel("empty")
        qa, qb, qc = (gpu.create_queue(64) for _ in range(3))
        produced, done_a, done_b = (rt.create_signal(1) for _ in range(3))
        qa.submit(barrier_and(produced, completion=done_a))
        qb.submit(barrier_and(produced, completion=done_b))
        rt.system.run_for(20 * US)
        qc.dispatch(k, grid=64, workgroup=64, completion_signal=produced)
        with hang_guard():
            assert done_a.wait(rocr.Condition.LT, 1) == 0
            assert done_b.wait(rocr.Condition.LT, 1) == 0


def test_run_until_idle_stops_when_only_the_rotation_is_left():
    with make_rt("gem5_round_robin") as rt:
        three_blocked_queues(rt)
        with hang_guard():
            rt.system.run_until_idle()
        assert rt.system.stalled()
        assert rt.system.gpus[0].scheduler.describe()["timer_armed"]


def test_the_rotation_deadlock_over_http_answers_instead_of_spinning():
    with in_process_client(limits=ServerLimits(max_wait_ms=5000)) as http:
        rt = rocr.connect(
            "http://testserver",
            preset="teaching",
            spec={"scheduler_policy": "round_robin"},
            client=http,
        )
        try:
            queues, never, dones = three_blocked_queues(rt)
            with hang_guard(), pytest.raises(rocr.HsaError) as info:
                dones[0].wait(rocr.Condition.LT, 1)
            assert info.value.status == rocr.Status.ERROR
            assert "can never return" in info.value.message
            assert f"{never.handle:#x}=1" in info.value.message
        finally:
            rt.shutdown()
