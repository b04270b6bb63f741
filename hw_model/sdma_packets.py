"""gfx9 SDMA packet formats, as ROCR-Runtime's SDMA blit writes them.

Layouts follow ROCR-Runtime core/inc/sdma_registers.h (the SDMA_PKT_* structs) and the
builders in core/runtime/amd_blit_sdma.cpp (BuildCopyCommand, BuildFillCommand,
BuildFenceCommand, BuildPollCommand, BuildAtomicDecrementCommand, BuildTrapCommand,
BuildGetGlobalTimestampCommand). Every packet ROCr writes is 8 dwords (32 bytes), little
endian; dword 0 is the header: op in bits 0-7, sub_op in bits 8-15, packet-specific bits above.
On gfx9 (SDMA 4.x, `BlitSdma<uint64_t, true, -1>`) byte counts are encoded minus one
(SizeToCountOffset = -1). A NOP header (op 0) carries in bits 16+ the number of dwords that
follow it (ROCr pads a short submission with one).

Pure format code: encode/decode, no behaviour.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# sdma_registers.h opcodes and sub-opcodes
SDMA_OP_NOP = 0
SDMA_OP_COPY = 1
SDMA_OP_FENCE = 5
SDMA_OP_TRAP = 6
SDMA_OP_POLL_REGMEM = 8
SDMA_OP_ATOMIC = 10
SDMA_OP_CONST_FILL = 11
SDMA_OP_TIMESTAMP = 13
SDMA_SUBOP_COPY_LINEAR = 0
SDMA_SUBOP_TIMESTAMP_GET_GLOBAL = 2
SDMA_ATOMIC_ADD64 = 47
# POLL_REGMEM func values (SDMA 4.0 programming guide, as amdgpu's sdma_v4_0_wait_reg_mem):
# 0 always, 1 <, 2 <=, 3 ==, 4 !=, 5 >=, 6 >. ROCr polls with 3 (IsEqual).
POLL_FUNC_EQUAL = 3

# The encoders here write every packet as 8 dwords (the largest, SDMA_PKT_ATOMIC), zero padded;
# the engine fetches this much at a time.
PACKET_SIZE = 32
COUNT_BITS = 22  # COPY_LINEAR / CONSTANT_FILL count field on gfx9
# SDMA_PKT_COPY_LINEAR::kMaxSize_: the most bytes one COPY_LINEAR moves on gfx9 (22-bit count)
MAX_COPY_SIZE = 0x3FFFE0
MAX_FILL_SIZE = 0x3FFFE0  # SDMA_PKT_CONSTANT_FILL::kMaxSize_
SIZE_TO_COUNT_OFFSET = -1  # gfx9: count = bytes - 1 (BlitSdma template argument)
TRAP_INT_CTX_BITS = 28  # SDMA_PKT_TRAP int_ctx : 28 (kfd_int_process_v9.c keeps 28 bits)

_DW8 = struct.Struct("<8I")


def _dwords(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, ...]:
    return _DW8.unpack_from(data, offset)


def _lo(v: int) -> int:
    return v & 0xFFFFFFFF


def _hi(v: int) -> int:
    return (v >> 32) & 0xFFFFFFFF


def header(op: int, sub_op: int = 0, extra: int = 0) -> int:
    return (op & 0xFF) | (sub_op & 0xFF) << 8 | (extra & 0xFFFF) << 16


@dataclass(frozen=True)
class CopyLinear:
    """SDMA_PKT_COPY_LINEAR: `size` bytes from `src` to `dst` (count = size - 1 on gfx9)."""

    src: int
    dst: int
    size: int

    def encode(self) -> bytes:
        count = self.size + SIZE_TO_COUNT_OFFSET
        if not 0 <= count < 1 << COUNT_BITS:
            raise ValueError(f"COPY_LINEAR size {self.size} outside 1..{MAX_COPY_SIZE}")
        return _DW8.pack(
            header(SDMA_OP_COPY, SDMA_SUBOP_COPY_LINEAR),
            count,
            0,  # PARAMETER: dst_swap / src_swap 0 (no byte swap)
            _lo(self.src),
            _hi(self.src),
            _lo(self.dst),
            _hi(self.dst),
            0,
        )


@dataclass(frozen=True)
class ConstantFill:
    """SDMA_PKT_CONSTANT_FILL with fillsize 2 (dword fill): `size` bytes of `value`."""

    dst: int
    value: int
    size: int
    fillsize: int = 2

    def encode(self) -> bytes:
        count = self.size + SIZE_TO_COUNT_OFFSET * 4  # ROCr: (dwords - 1) * 4
        if not 0 <= count < 1 << COUNT_BITS:
            raise ValueError(f"CONSTANT_FILL size {self.size} outside 4..{MAX_FILL_SIZE}")
        return _DW8.pack(
            header(SDMA_OP_CONST_FILL) | (self.fillsize & 3) << 30,
            _lo(self.dst),
            _hi(self.dst),
            self.value & 0xFFFFFFFF,
            count,
            0,
            0,
            0,
        )


@dataclass(frozen=True)
class Fence:
    """SDMA_PKT_FENCE: write the 32-bit `data` to `addr` once earlier packets are done."""

    addr: int
    data: int

    def encode(self) -> bytes:
        return _DW8.pack(
            header(SDMA_OP_FENCE), _lo(self.addr), _hi(self.addr), _lo(self.data), 0, 0, 0, 0
        )


@dataclass(frozen=True)
class Trap:
    """SDMA_PKT_TRAP: raise an interrupt; ROCr puts the signal's event id in int_ctx."""

    int_ctx: int

    def encode(self) -> bytes:
        ctx = self.int_ctx & ((1 << TRAP_INT_CTX_BITS) - 1)
        return _DW8.pack(header(SDMA_OP_TRAP), ctx, 0, 0, 0, 0, 0, 0)


@dataclass(frozen=True)
class PollRegmem:
    """SDMA_PKT_POLL_REGMEM with mem_poll=1: wait until (*addr & mask) func value."""

    addr: int
    value: int
    mask: int = 0xFFFFFFFF
    func: int = POLL_FUNC_EQUAL
    interval: int = 0x04  # ROCr's BuildPollCommand
    retry_count: int = 0xFFF  # 0xfff: retry forever (ROCr's comment)
    mem_poll: int = 1
    hdp_flush: int = 0

    def encode(self) -> bytes:
        dw0 = (
            header(SDMA_OP_POLL_REGMEM)
            | (self.hdp_flush & 1) << 26
            | (self.func & 7) << 28
            | (self.mem_poll & 1) << 31
        )
        dw5 = (self.interval & 0xFFFF) | (self.retry_count & 0xFFF) << 16
        return _DW8.pack(
            dw0, _lo(self.addr), _hi(self.addr), _lo(self.value), _lo(self.mask), dw5, 0, 0
        )


@dataclass(frozen=True)
class Atomic:
    """SDMA_PKT_ATOMIC: ROCr uses ADD64 of -1 to decrement a completion signal."""

    addr: int
    src_data: int
    operation: int = SDMA_ATOMIC_ADD64
    cmp_data: int = 0
    loop_interval: int = 0
    l: int = 0  # noqa: E741 - the field's name in sdma_registers.h

    def encode(self) -> bytes:
        dw0 = header(SDMA_OP_ATOMIC) | (self.l & 1) << 16 | (self.operation & 0x7F) << 25
        src = self.src_data & 0xFFFFFFFFFFFFFFFF
        cmp = self.cmp_data & 0xFFFFFFFFFFFFFFFF
        return _DW8.pack(
            dw0,
            _lo(self.addr),
            _hi(self.addr),
            _lo(src),
            _hi(src),
            _lo(cmp),
            _hi(cmp),
            self.loop_interval & 0x1FFF,
        )


@dataclass(frozen=True)
class Timestamp:
    """SDMA_PKT_TIMESTAMP, sub-op GET_GLOBAL: write the 64-bit GPU timestamp to `addr`."""

    addr: int

    def encode(self) -> bytes:
        return _DW8.pack(
            header(SDMA_OP_TIMESTAMP, SDMA_SUBOP_TIMESTAMP_GET_GLOBAL),
            _lo(self.addr),
            _hi(self.addr),
            0,
            0,
            0,
            0,
            0,
        )


@dataclass(frozen=True)
class Nop:
    """SDMA NOP: the header's bits 16+ give the dwords that follow (ROCr's padding)."""

    dwords: int = 0

    @property
    def size(self) -> int:
        return 4 * (1 + self.dwords)

    def encode(self) -> bytes:
        return header(SDMA_OP_NOP, 0, self.dwords).to_bytes(4, "little") + bytes(4 * self.dwords)


Packet = CopyLinear | ConstantFill | Fence | Trap | PollRegmem | Atomic | Timestamp | Nop


class UnknownPacket(ValueError):
    """A header the engine does not decode (op, sub_op named)."""

    def __init__(self, op: int, sub_op: int) -> None:
        super().__init__(f"unknown SDMA packet: op {op} sub_op {sub_op}")
        self.op = op
        self.sub_op = sub_op


# sizeof(SDMA_PKT_*) in ROCr's sdma_registers.h: the real runtime packs its packets tightly.
PACKET_BYTES = {
    SDMA_OP_COPY: 28,
    SDMA_OP_CONST_FILL: 20,
    SDMA_OP_FENCE: 16,
    SDMA_OP_TRAP: 8,
    SDMA_OP_POLL_REGMEM: 24,
    SDMA_OP_ATOMIC: 32,
    SDMA_OP_TIMESTAMP: 12,
}


def packet_size(
    data: bytes | bytearray | memoryview, offset: int = 0, limit: int | None = None
) -> int:
    """Bytes taken by the packet at `offset`: a NOP's header says; the others have their
    SDMA_PKT_* size, plus the zero dwords that follow within the fetched bytes and `limit`
    (each a 1-dword NOP: the padding of this module's 8-dword encodings retires with its
    packet, so a padded and a tight ring execute the same packets)."""
    dw0 = int.from_bytes(bytes(data[offset : offset + 4]), "little")
    if dw0 & 0xFF == SDMA_OP_NOP:
        return 4 * (1 + (dw0 >> 16 & 0x3FFF))
    n = PACKET_BYTES.get(dw0 & 0xFF, PACKET_SIZE)
    end = min(offset + PACKET_SIZE, len(data))
    if limit is not None:
        end = min(end, offset + limit)
    while offset + n + 4 <= end and not any(data[offset + n : offset + n + 4]):
        n += 4
    return n


def decode(data: bytes | bytearray | memoryview, offset: int = 0) -> Packet:
    """The packet at `offset` of `data` (which holds at least its bytes)."""
    dw0 = int.from_bytes(bytes(data[offset : offset + 4]), "little")
    op, sub_op = dw0 & 0xFF, dw0 >> 8 & 0xFF
    if op == SDMA_OP_NOP:
        return Nop(dw0 >> 16 & 0x3FFF)
    d = _dwords(data, offset)
    if op == SDMA_OP_COPY and sub_op == SDMA_SUBOP_COPY_LINEAR:
        count = d[1] & ((1 << COUNT_BITS) - 1)
        return CopyLinear(
            src=d[3] | d[4] << 32, dst=d[5] | d[6] << 32, size=count - SIZE_TO_COUNT_OFFSET
        )
    if op == SDMA_OP_CONST_FILL:
        count = d[4] & ((1 << COUNT_BITS) - 1)
        return ConstantFill(
            dst=d[1] | d[2] << 32,
            value=d[3],
            size=count - SIZE_TO_COUNT_OFFSET * 4,
            fillsize=dw0 >> 30 & 3,
        )
    if op == SDMA_OP_FENCE:
        return Fence(addr=d[1] | d[2] << 32, data=d[3])
    if op == SDMA_OP_TRAP:
        return Trap(int_ctx=d[1] & ((1 << TRAP_INT_CTX_BITS) - 1))
    if op == SDMA_OP_POLL_REGMEM:
        return PollRegmem(
            addr=d[1] | d[2] << 32,
            value=d[3],
            mask=d[4],
            func=dw0 >> 28 & 7,
            interval=d[5] & 0xFFFF,
            retry_count=d[5] >> 16 & 0xFFF,
            mem_poll=dw0 >> 31 & 1,
            hdp_flush=dw0 >> 26 & 1,
        )
    if op == SDMA_OP_ATOMIC:
        src = d[3] | d[4] << 32
        return Atomic(
            addr=d[1] | d[2] << 32,
            src_data=src - (1 << 64) if src >> 63 else src,
            operation=dw0 >> 25 & 0x7F,
            cmp_data=d[5] | d[6] << 32,
            loop_interval=d[7] & 0x1FFF,
            l=dw0 >> 16 & 1,
        )
    if op == SDMA_OP_TIMESTAMP and sub_op == SDMA_SUBOP_TIMESTAMP_GET_GLOBAL:
        return Timestamp(addr=d[1] | d[2] << 32)
    raise UnknownPacket(op, sub_op)


def poll_satisfied(func: int, value: int, reference: int) -> bool:
    """POLL_REGMEM's compare of the masked memory value with the reference."""
    return {
        0: True,
        1: value < reference,
        2: value <= reference,
        3: value == reference,
        4: value != reference,
        5: value >= reference,
        6: value > reference,
    }.get(func, False)
