"""Random 64-byte AQL packets written into a queue with write_packet + ring_doorbell.

Every outcome is a normal completion, a stall (a barrier on a signal nobody sets, an INVALID
header), or a queue error with a real hsa_status_t through the error callback or an HsaError —
never a Python exception of another type. A healthy queue of the same process, and one of
another process on the same machine, run vector_add correctly after every case. (A GPU memory
fault stops every queue of the faulting process, as amdkfd's kfd_dqm_evict_pasid does: then the
same-process check may fail with the fault's status and the process is started afresh; the
other process must never notice.)

Raw random bytes hit mostly unknown packet types; structured packets draw a header of every
type (barrier bit, fence scopes, reserved bits) and fields from values that matter: real kernel
objects and kernargs, signals at 0 and 1, buffers, unmapped and non-canonical addresses, field
limits. HSAEMU_FUZZ_EXAMPLES=N runs N examples of each instead of the default.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import rocr
from hw_model import aql
from hw_model.aql import PacketType

EXAMPLES = int(os.environ.get("HSAEMU_FUZZ_EXAMPLES", "0"))
RAW_EXAMPLES = EXAMPLES or 500
STRUCTURED_EXAMPLES = EXAMPLES or 1000
# Simulated time a case gets before it counts as a stall: a small packet retires in a few us.
RUN_PS = 50_000_000
N = 64
# 24 HQDs: every queue stays mapped, so a packet that is not processed in RUN_PS is stalled,
# not waiting for the HW scheduler's next quantum.
PRESET = "gfx900"
FAULTS = {rocr.Status.ERROR_MEMORY_FAULT, rocr.Status.ERROR_MEMORY_APERTURE_VIOLATION}
U64 = (1 << 64) - 1


class Process:
    """A process on the machine with a healthy queue that must keep computing c = a + b."""

    def __init__(self, system=None) -> None:
        self.rt = rocr.init(preset=PRESET) if system is None else rocr.init(system=system)
        self.k = self.rt.load_code_object("builtin:vector_add").kernel("vector_add")
        pool = self.rt.cpu.pools(fine_grained=True, kernarg=False)[0]
        self.a, self.b, self.c = (pool.allocate(4 * N) for _ in range(3))
        for buf in (self.a, self.b, self.c):
            self.rt.allow_access(self.rt.gpus, buf)
        self.q = self.rt.gpus[0].create_queue(64)
        self.round = 0

    def check(self) -> None:
        self.round += 1
        self.a.view(np.float32)[:] = np.arange(N)
        self.b.view(np.float32)[:] = self.round
        self.c.view(np.float32)[:] = -1
        self.q.dispatch(self.k, N, 64, (self.a, self.b, self.c, N)).wait()
        assert self.c.view(np.float32).tolist() == (np.arange(N) + self.round).tolist()


class Fuzzer:
    """The fuzzed process: a queue for the random packets and what its fields may point at."""

    def __init__(self, system=None) -> None:
        self.p = Process(system)
        rt = self.p.rt
        self.errors: list[tuple[rocr.HsaError, object]] = []
        pool = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
        self.bufs = [pool.allocate(4 * N) for _ in range(3)]
        for buf in self.bufs:
            rt.allow_access(rt.gpus, buf)
        self.sig0 = rt.create_signal(0)
        self.sig1 = rt.create_signal(1)
        empty = rt.load_code_object("builtin:empty").kernel("empty")
        kernarg = rt.dispatch_packet(self.p.k, N, 64, (*self.bufs, N)).kernarg_address
        self.addresses = {
            "kernel": self.p.k.kernel_object,
            "empty_kernel": empty.kernel_object,
            "kernarg": kernarg,
            "sig0": self.sig0.handle,
            "sig1": self.sig1.handle,
            "buf": self.bufs[0].address,
            "zero": 0,
            "misaligned": self.p.k.kernel_object + 4,
            "unmapped": 0x7000_0000_0000,  # in the GPUVM aperture, in no allocation
            "noncanonical": 1 << 60,  # beyond the 48-bit GPU VA
        }
        self.q = self._queue()

    def _queue(self):
        return self.p.rt.gpus[0].create_queue(64, callback=lambda e, q: self.errors.append((e, q)))

    def address(self, v) -> int:
        return self.addresses[v] if isinstance(v, str) else v

    def run(self, raw: bytes) -> tuple[str, set]:
        """Write and ring one packet; the outcome and the statuses of any errors."""
        self.sig0.store(0)
        self.sig1.store(1)
        q, seen = self.q, len(self.errors)
        statuses: set = set()
        index = None
        try:
            index = q.add_write_index(1)
            q.write_packet(index, raw)
            q.ring_doorbell(index)
            self.p.rt.system.run_for(RUN_PS)
            self.p.rt.poll_async()
        except rocr.HsaError as e:
            statuses.add(_real(e))
        for err, where in self.errors[seen:]:
            assert where is q, "the error callback named another queue"
            statuses.add(_real(err))
        if statuses or q.error is not None:
            if q.error is not None:
                statuses.add(_real(q.error))
            outcome = "error"
        elif index is not None and q.load_read_index() > index:
            outcome = "done"
        else:
            outcome = "stall"  # e.g. a barrier on a signal nobody sets: abandon the queue
        if outcome != "done":
            q.destroy()
            self.q = self._queue()
        return outcome, statuses


def _real(e: rocr.HsaError) -> rocr.Status:
    assert isinstance(e, rocr.HsaError)
    assert isinstance(e.status, rocr.Status) and e.status != rocr.Status.SUCCESS
    assert e.message
    return e.status


class Machine:
    def __init__(self) -> None:
        self.fuzz = Fuzzer()
        self.other = Process(self.fuzz.p.rt.system)  # another process on the same GPU

    def case(self, raw: bytes) -> None:
        outcome, statuses = self.fuzz.run(raw)
        event(outcome if not statuses else f"{outcome}: {min(statuses).name}")
        try:
            self.fuzz.p.check()
        except rocr.HsaError as e:
            # A memory fault stops every queue of the process (kfd_dqm_evict_pasid).
            assert e.status in FAULTS, f"the healthy queue of the fuzzed process failed: {e}"
            self.fuzz.p.rt.shutdown()
            self.fuzz = Fuzzer(self.other.rt.system)
        self.other.check()


@pytest.fixture(scope="module")
def machine():
    m = Machine()
    yield m
    m.fuzz.p.rt.shutdown()
    m.other.rt.shutdown()


FUZZ_SETTINGS = dict(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@settings(max_examples=RAW_EXAMPLES, **FUZZ_SETTINGS)
@given(raw=st.binary(min_size=64, max_size=64))
def test_random_bytes(machine, raw):
    machine.case(raw)


# -- structured packets ------------------------------------------------------------------------
# Few draws per packet (each draw costs Hypothesis more than running the case): fields pick
# from short lists of values that matter, weighted by repetition, or any value of their width.

_TOKENS = ["kernel", "empty_kernel", "kernarg", "sig0", "sig1", "buf", "zero", "misaligned"]
_TOKENS += ["unmapped", "noncanonical"]
_addr = st.one_of(st.sampled_from(_TOKENS), st.integers(0, U64))
_kernel = st.one_of(st.sampled_from(["kernel", "empty_kernel"] * 4 + _TOKENS), st.integers(0, U64))
_kernarg = st.one_of(st.sampled_from(["kernarg"] * 8 + _TOKENS), st.integers(0, U64))
_signal = st.one_of(
    st.sampled_from(["sig0", "sig1", "zero", "zero", "unmapped", "noncanonical", "buf"]),
    st.integers(0, U64),
)
_dep = st.one_of(st.sampled_from(["zero"] * 6 + ["sig0"] * 3 + ["sig1", "unmapped"]), _signal)
_u16 = st.one_of(st.sampled_from([0, 1, 2, 3, 4, 64, 1024, 1025, 0xFFFF]), st.integers(0, 0xFFFF))
_u32 = st.one_of(st.sampled_from([0, 1, 64, 65536, 65540, 0xFFFFFFFF]), st.integers(0, 0xFFFF_FFFF))
_i64 = st.one_of(
    st.sampled_from([0, 1, -1, -(1 << 63), (1 << 63) - 1]), st.integers(-(1 << 63), (1 << 63) - 1)
)
# barrier bit, acquire and release scopes (3 is reserved), reserved bits 13-15
_header_bits = st.tuples(st.booleans(), st.integers(0, 3), st.integers(0, 3), st.integers(0, 7))


def _header(ptype: int, bits: tuple) -> int:
    barrier, acquire, release, reserved = bits
    return (
        ptype
        | barrier << aql.HSA_PACKET_HEADER_BARRIER
        | acquire << aql.HSA_PACKET_HEADER_ACQUIRE_FENCE_SCOPE
        | release << aql.HSA_PACKET_HEADER_RELEASE_FENCE_SCOPE
        | (reserved if reserved < 2 else 0) << 13  # mostly 0
    )


@st.composite
def _kernel_dispatch(draw):
    kernel = draw(_kernel)
    real = kernel in ("kernel", "empty_kernel")
    # A real kernel runs: keep its grid small so that a case takes milliseconds, not minutes.
    small = st.integers(1, 16)
    dims = draw(st.sampled_from([1, 1, 1, 1, 2, 2, 3, 3, 0, 4, 0xFFFF]))  # setup
    grid = draw(st.tuples(st.integers(1, 256) if real else _u32, small, small))
    wg = draw(st.tuples(st.sampled_from([1, 16, 64, 256, 1024, 2048]), small, small))
    return dict(
        cls=aql.KernelDispatchPacket,
        header=_header(PacketType.KERNEL_DISPATCH, draw(_header_bits)),
        setup=dims,
        workgroup_size_x=wg[0],
        workgroup_size_y=wg[1] if dims > 1 else 1,
        workgroup_size_z=wg[2] if dims > 2 else 1,
        grid_size_x=grid[0],
        grid_size_y=grid[1] if dims > 1 or not real else 1,
        grid_size_z=grid[2] if dims > 2 or not real else 1,
        private_segment_size=draw(st.sampled_from([0, 0, 0, 16, 0xFFFFFFFF])),
        group_segment_size=draw(st.sampled_from([0, 0, 0, 1024, 65536, 65540, 0xFFFFFFFF])),
        kernel_object=kernel,
        kernarg_address=draw(_kernarg),
        completion_signal=draw(_signal),
    )


@st.composite
def _barrier(draw):
    ptype = draw(st.sampled_from([PacketType.BARRIER_AND, PacketType.BARRIER_OR]))
    cls = aql.BarrierAndPacket if ptype == PacketType.BARRIER_AND else aql.BarrierOrPacket
    return dict(
        cls=cls,
        header=_header(ptype, draw(_header_bits)),
        dep_signal=draw(st.lists(_dep, min_size=5, max_size=5)),
        completion_signal=draw(_signal),
    )


@st.composite
def _agent_dispatch(draw):
    return dict(
        cls=aql.AgentDispatchPacket,
        header=_header(PacketType.AGENT_DISPATCH, draw(_header_bits)),
        type=draw(_u16),
        return_address=draw(_addr),
        arg=draw(st.lists(st.integers(0, U64), min_size=4, max_size=4)),
        completion_signal=draw(_signal),
    )


@st.composite
def _vendor(draw):
    return dict(
        cls=aql.AmdBarrierValuePacket,
        header=_header(PacketType.VENDOR_SPECIFIC, draw(_header_bits)),
        amd_format=draw(st.one_of(st.sampled_from([2, 2, 2, 2, 0, 1, 3]), st.integers(0, 255))),
        signal=draw(_dep),
        value=draw(_i64),
        mask=draw(_i64),
        cond=draw(st.one_of(st.integers(0, 3), _u32)),
        completion_signal=draw(_signal),
    )


@st.composite
def _other_type(draw):
    """INVALID (the CP waits for a valid header) or a type no packet has."""
    ptype = draw(st.one_of(st.just(int(PacketType.INVALID)), st.integers(6, 255)))
    body = draw(st.binary(min_size=62, max_size=62))
    return dict(cls=None, header=_header(ptype, draw(_header_bits)), body=body)


_structured = st.one_of(
    _kernel_dispatch(), _kernel_dispatch(), _barrier(), _agent_dispatch(), _vendor(), _other_type()
)

_ADDRESS_FIELDS = ("kernel_object", "kernarg_address", "completion_signal", "return_address")


def encode(fuzz: Fuzzer, fields: dict) -> bytes:
    f = dict(fields)
    cls = f.pop("cls")
    if cls is None:
        return f["header"].to_bytes(2, "little") + f["body"]
    for name in (*_ADDRESS_FIELDS, "signal"):
        if name in f:
            f[name] = fuzz.address(f[name])
    if "dep_signal" in f:
        f["dep_signal"] = [fuzz.address(s) for s in f["dep_signal"]]
    return cls(**f).to_bytes()


@settings(max_examples=STRUCTURED_EXAMPLES, **FUZZ_SETTINGS)
@given(fields=_structured)
def test_structured_random_packets(machine, fields):
    machine.case(encode(machine.fuzz, fields))
