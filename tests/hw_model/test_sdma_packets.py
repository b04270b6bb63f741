"""gfx9 SDMA packet layouts against the published field layouts.

Golden dwords are worked out by hand from ROCR-Runtime core/inc/sdma_registers.h (bit-field
order of each SDMA_PKT_* struct, opcodes SDMA_OP_*) and the values amd_blit_sdma.cpp's
builders put in them (BuildPollCommand: mem_poll 1, func 3, interval 4, retry_count 0xfff;
BuildAtomicDecrementCommand: operation SDMA_ATOMIC_ADD64 = 47, src_data -1; BuildFillCommand:
fillsize 2, count (dwords - 1) * 4; BuildCopyCommand on gfx9: count = bytes - 1).
"""

from __future__ import annotations

import struct

import pytest

from hw_model import sdma_packets as sp

SRC = 0x0000_7F12_3456_7000
DST = 0x0000_0001_0000_2000
SIG = 0x0000_0001_0000_B008


def dw(*words: int) -> bytes:
    return struct.pack("<8I", *words)


GOLDEN = [
    # SDMA_PKT_COPY_LINEAR: op 1, sub_op 0 (COPY_LINEAR); count 22 bits = size - 1
    (sp.CopyLinear(SRC, DST, 0x1000), dw(0x1, 0xFFF, 0, 0x34567000, 0x7F12, 0x2000, 0x1, 0)),
    # SDMA_PKT_CONSTANT_FILL: op 11, fillsize (bits 30-31) = 2; count = (4 - 1) * 4 for 16 B
    (sp.ConstantFill(DST, 0xDEADBEEF, 16), dw(0x8000000B, 0x2000, 0x1, 0xDEADBEEF, 12, 0, 0, 0)),
    # SDMA_PKT_FENCE: op 5; addr; 32-bit data
    (sp.Fence(SIG, 2015), dw(0x5, 0xB008, 0x1, 2015, 0, 0, 0, 0)),
    # SDMA_PKT_TRAP: op 6; int_ctx (28 bits) = event id
    (sp.Trap(0x1234567), dw(0x6, 0x1234567, 0, 0, 0, 0, 0, 0)),
    # SDMA_PKT_POLL_REGMEM: op 8, func 3 in bits 28-30, mem_poll bit 31; interval 4 and
    # retry_count 0xfff in DW5
    (sp.PollRegmem(SIG, 0), dw(0xB0000008, 0xB008, 0x1, 0, 0xFFFFFFFF, 0x0FFF0004, 0, 0)),
    # SDMA_PKT_ATOMIC: op 10, operation (bits 25-31) = 47 (ADD64); src_data = -1
    (
        sp.Atomic(SIG, -1),
        dw(0x5E00000A, 0xB008, 0x1, 0xFFFFFFFF, 0xFFFFFFFF, 0, 0, 0),
    ),
    # SDMA_PKT_TIMESTAMP: op 13, sub_op 2 (GET_GLOBAL); addr
    (sp.Timestamp(SIG), dw(0x20D, 0xB008, 0x1, 0, 0, 0, 0, 0)),
]


@pytest.mark.parametrize(("packet", "golden"), GOLDEN, ids=lambda v: type(v).__name__)
def test_packets_encode_to_the_published_layout(packet, golden):
    raw = packet.encode()
    assert len(raw) == sp.PACKET_SIZE == 32
    assert raw == golden
    assert sp.decode(golden) == packet


def test_nop_padding_header_counts_the_dwords_that_follow():
    # amd_blit_sdma.cpp SubmitCommand pads with dword[0] = (pad_size / 4 - 1) << 16
    pad = 24
    raw = sp.Nop(pad // 4 - 1).encode()
    assert raw[:4] == ((pad // 4 - 1) << 16).to_bytes(4, "little")
    assert len(raw) == pad
    assert sp.packet_size(raw) == pad
    assert sp.decode(raw) == sp.Nop(5)


def test_copy_count_limits_follow_the_gfx9_count_field():
    assert sp.MAX_COPY_SIZE == 0x3FFFE0  # SDMA_PKT_COPY_LINEAR::kMaxSize_
    sp.CopyLinear(SRC, DST, sp.MAX_COPY_SIZE).encode()
    with pytest.raises(ValueError, match="COPY_LINEAR size"):
        sp.CopyLinear(SRC, DST, (1 << 22) + 1).encode()
    with pytest.raises(ValueError, match="COPY_LINEAR size"):
        sp.CopyLinear(SRC, DST, 0).encode()


def test_unknown_opcode_is_named():
    with pytest.raises(sp.UnknownPacket, match="op 2 sub_op 0"):
        sp.decode(dw(0x2, 0, 0, 0, 0, 0, 0, 0))


@pytest.mark.parametrize(
    ("func", "value", "ref", "ok"),
    [(3, 0, 0, True), (3, 1, 0, False), (4, 1, 0, True), (1, 1, 2, True), (6, 1, 2, False)],
)
def test_poll_compare_functions(func, value, ref, ok):
    assert sp.poll_satisfied(func, value, ref) is ok
