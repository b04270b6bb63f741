"""The floor of an empty-kernel round trip in Python: the same steps, bytes and events as
`q.dispatch(k).wait()` on the emulator, with nothing else.

What it keeps: the 64-byte hsa_kernel_dispatch_packet_t written into a ring in a numpy
buffer, the write index bumped, the doorbell rung; seven events on a heapq in the engine's
(tick, priority, sequence) order at the emulator's latencies (CP fetch, packet processing,
dispatcher pass, SPI launch, CU, retire, interrupt); the packet read back and decoded, the
kernel descriptor read and looked up; at retire the header set back to INVALID, the read
index, the signal's timestamps and value stored, the event mailbox written; the host
spinning on the signal value.

What it leaves out is everything else the emulator does per packet: argument checks in rocr,
the thunk and driver layers, the HW scheduler's bookkeeping, the dispatcher's placement and
the CU model, the page-table checks on every access, statistics and kernel records. The gap
between this figure and the emulator's (`bench/speed.py`) is the cost of that structure,
which docs/performance.md accounts for layer by layer.

    python bench/round_trip_floor.py
"""

from __future__ import annotations

import collections
import heapq
import struct
import sys
import time
import timeit

import numpy as np

_PACKET = struct.Struct("<HHHHHHIIIIIQQQQ")  # hsa_kernel_dispatch_packet_t
_U16 = struct.Struct("<H")
_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")
# Offsets in one buffer: ring (64 packets), amd_queue_t indices, amd_signal_t, kernel
# descriptor, event page. Latencies (ps) are the gfx900 preset's, as the emulator's trace
# shows them for an empty kernel.
RING, RPTR, WPTR, SIG, KD, EVENTS = 0, 8192, 8200, 12288, 16384, 20480
FETCH_TO_PROCESS, SPI_LAUNCH, CU_RUN, RETIRE, INTERRUPT = (
    2_300_000,
    10_000,
    2_664,
    5_000_000,
    (2_000_000),
)
UNSIGNALED = 0xFFFFFFFFFFFFFFFF


class Floor:
    """One queue, one kernel, one GPU: only the bytes and the events."""

    def __init__(self) -> None:
        self.mem = np.zeros(1 << 15, dtype=np.uint8)
        self.heap: list = []
        self.seq = 0
        self.now = 0
        self.read = 0
        self.kd_cache: dict[bytes, bytes] = {}
        _U64.pack_into(self.mem, EVENTS, UNSIGNALED)

    def schedule(self, delay: int, fn, *args) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (self.now + delay, 3, self.seq, fn, args))

    def fetch(self) -> None:
        slot = RING + (self.read % 64) * 64
        raw = self.mem[slot : slot + 64].tobytes()
        self.read += 1
        self.schedule(FETCH_TO_PROCESS, self.process, self.read - 1, raw)

    def process(self, idx: int, raw: bytes) -> None:
        f = _PACKET.unpack(raw)
        kd_raw = self.mem[KD : KD + 64].tobytes()
        if self.kd_cache.get(kd_raw) is None:
            self.kd_cache[kd_raw] = kd_raw
        self.schedule(0, self.dispatch, idx, f[14])

    def dispatch(self, idx: int, signal: int) -> None:
        self.schedule(SPI_LAUNCH, self.wg_start, idx, signal)

    def wg_start(self, idx: int, signal: int) -> None:
        self.schedule(CU_RUN, self.cu_done, idx, signal)

    def cu_done(self, idx: int, signal: int) -> None:
        self.schedule(RETIRE, self.retire, idx, signal)

    def retire(self, idx: int, signal: int) -> None:
        mem = self.mem
        slot = RING + (idx % 64) * 64
        _U16.pack_into(mem, slot, (_U16.unpack_from(mem, slot)[0] & 0xFF00) | 1)
        _U64.pack_into(mem, RPTR, idx + 1)
        _U64.pack_into(mem, signal + 16, self.now)  # start_ts, end_ts
        _U64.pack_into(mem, signal + 24, self.now)
        _I64.pack_into(mem, signal + 8, _I64.unpack_from(mem, signal + 8)[0] - 1)
        _U64.pack_into(mem, EVENTS, 0)  # the signal's event slot
        self.schedule(INTERRUPT, self.interrupt)

    def interrupt(self) -> None:
        if _U64.unpack_from(self.mem, EVENTS)[0] != UNSIGNALED:
            _U64.pack_into(self.mem, EVENTS, UNSIGNALED)

    def dispatch_wait(self) -> None:
        mem = self.mem
        _I64.pack_into(mem, SIG + 8, 1)
        i = _I64.unpack_from(mem, WPTR)[0]
        _I64.pack_into(mem, WPTR, i + 1)
        header = 2 | 2 << 9 | 2 << 11  # kernel dispatch, system-scope fences
        _PACKET.pack_into(
            mem, RING + (i % 64) * 64, header, 1, 64, 1, 1, 0, 64, 1, 1, 0, 0, KD, 0, 0, SIG
        )
        self.schedule(0, self.fetch)  # the doorbell
        heap = self.heap
        while _I64.unpack_from(mem, SIG + 8)[0] >= 1:
            t, _, _, fn, args = heapq.heappop(heap)
            self.now = t
            fn(*args)


def main() -> None:
    f = Floor()
    for _ in range(100):
        f.dispatch_wait()
    ops: collections.Counter[int] = collections.Counter()

    def trace(frame, event, arg):
        frame.f_trace_opcodes = True
        if event == "opcode":
            ops[0] += 1
        return trace

    sys.settrace(trace)
    for _ in range(100):
        f.dispatch_wait()
    sys.settrace(None)
    best = ref = float("inf")
    for _ in range(5):
        ref = min(
            ref,
            min(timeit.repeat("sum(range(1000))", number=200, repeat=3, timer=time.thread_time))
            / 200
            * 1e6,
        )
        t = time.thread_time()
        for _ in range(3000):
            f.dispatch_wait()
        best = min(best, (time.thread_time() - t) / 3000 * 1e6)
    print(
        f"floor round trip: {best:.1f} us, reference {ref:.2f} us, ratio {best / ref:.2f}, "
        f"{ops[0] / 100:.0f} bytecodes"
    )


if __name__ == "__main__":
    main()
