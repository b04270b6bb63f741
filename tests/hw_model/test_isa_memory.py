"""Vector memory (FLAT/GLOBAL/SCRATCH/MUBUF) and LDS (DS) instructions of the gfx9 interpreter,
run directly on waves against a real Memory: what lands in memory, LDS, private memory and
VGPRs, faults, and the coarse-grained L2 model."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from hw_model.isa import lds, vmem
from hw_model.isa.decoder import decode, decode_one, opcode_table
from hw_model.isa.encodings import ENCODINGS
from hw_model.isa.wave import LANES, WaveContext, Waves
from hw_model.memory import MemKind, Memory, MemoryFault

PASID, NODE = 1, 1
VA = 0x100000  # a 64 KiB VRAM BO mapped for NODE
SIZE = 1 << 16
FULL = np.uint64(0xFFFFFFFFFFFFFFFF)
SEG = {"GLOBAL": 2, "SCRATCH": 1, "FLAT": 0}
# Extra encoding bits by name (bit over the whole instruction).
GLC_FLAT, GLC_MUBUF, OFFEN, IDXEN, SVE = 1 << 16, 1 << 14, 1 << 12, 1 << 13, 1 << 13


def enc(mnemonic: str, target: str = "gfx900", bits: int = 0, **fields) -> bytes:
    """The machine code of `mnemonic` with the given fields (encodings.ENCODINGS layouts)."""
    table = opcode_table(target)
    kind = next(k for k, ops in table.items() if mnemonic in ops.values())
    op = next(o for o, m in table[kind].items() if m == mnemonic)
    e = ENCODINGS["FLAT" if kind in SEG else kind]
    word = e.value | op << e.op[0] | bits
    if kind in SEG:
        word |= SEG[kind] << 14
        fields.setdefault("saddr", 0x7F)
    for name, v in fields.items():
        lo, width = e.fields[name]
        word |= (v & ((1 << width) - 1)) << lo
    return word.to_bytes(8, "little")


def ins(mnemonic: str, target: str = "gfx900", bits: int = 0, **fields):
    return decode_one(enc(mnemonic, target, bits, **fields), 0, target)


def run(ctx, mnemonic: str, bits: int = 0, w=slice(None), **fields):
    i = ins(mnemonic, ctx.target, bits, **fields)
    assert i.mnemonic == mnemonic
    ops = lds.OPS if i.encoding == "DS" else vmem.OPS
    ops[mnemonic](ctx, i, w)


@pytest.fixture
def make():
    def build(target="gfx900", waves=1, vgprs=16, agprs=0, lds_bytes=256, private=64, wgs=1):
        mem = Memory({0: 1 << 24, NODE: 1 << 24})
        mem.create_vm(PASID)
        bo = mem.allocate(PASID, VA, SIZE, MemKind.VRAM, NODE)
        bo.gpu_nodes.add(NODE)
        wv = Waves(waves, vgprs, agprs)
        wv.set_exec(slice(None), np.full(waves, FULL))
        ctx = WaveContext(
            wv,
            target=target,
            memory=mem,
            pasid=PASID,
            node=NODE,
            workgroups=wgs,
            lds_bytes=lds_bytes,
            private_bytes=private,
        )
        return ctx, bo

    return build


def set_v64(ctx, reg: int, value) -> None:
    v = np.broadcast_to(np.asarray(value, dtype=np.uint64), (ctx.waves.n, LANES))
    ctx.waves.vgpr[reg] = (v & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    ctx.waves.vgpr[reg + 1] = (v >> np.uint64(32)).astype(np.uint32)


def host(ctx, va: int, n: int, dtype=np.uint8) -> np.ndarray:
    return ctx.memory.host_view(PASID, va, n * np.dtype(dtype).itemsize).view(dtype)


LANE = np.arange(LANES, dtype=np.uint64)


# -- encodings -------------------------------------------------------------------------------

LLVM_CASES = [
    (
        "global_load_dword v1, v[2:3], off offset:-8",
        "global_load_dword",
        0,
        {"vdst": 1, "addr": 2, "offset": -8},
    ),
    (
        "global_load_dword v1, v2, s[4:5] offset:16",
        "global_load_dword",
        0,
        {"vdst": 1, "addr": 2, "saddr": 4, "offset": 16},
    ),
    (
        "global_atomic_add v1, v[2:3], v4, off glc",
        "global_atomic_add",
        GLC_FLAT,
        {"vdst": 1, "addr": 2, "data": 4},
    ),
    (
        "global_atomic_cmpswap_x2 v[2:3], v[4:7], off",
        "global_atomic_cmpswap_x2",
        0,
        {"addr": 2, "data": 4},
    ),
    (
        "flat_load_dword v1, v[2:3] offset:8",
        "flat_load_dword",
        0,
        {"vdst": 1, "addr": 2, "offset": 8, "saddr": 0},
    ),
    (
        "scratch_load_dword v1, v2, off offset:-4",
        "scratch_load_dword",
        0,
        {"vdst": 1, "addr": 2, "offset": -4},
    ),
    (
        "scratch_store_dword off, v1, s3 offset:4",
        "scratch_store_dword",
        0,
        {"data": 1, "saddr": 3, "offset": 4},
    ),
    (
        "buffer_store_dword v1, off, s[0:3], s33 offset:4",
        "buffer_store_dword",
        0,
        {"vdata": 1, "srsrc": 0, "soffset": 33, "offset": 4},
    ),
    (
        "buffer_load_dword v1, v2, s[4:7], 0 offen offset:12",
        "buffer_load_dword",
        OFFEN,
        {"vdata": 1, "vaddr": 2, "srsrc": 1, "soffset": 0x80, "offset": 12},
    ),
    (
        "ds_write2_b32 v1, v2, v3 offset0:1 offset1:2",
        "ds_write2_b32",
        0,
        {"addr": 1, "data0": 2, "data1": 3, "offset0": 1, "offset1": 2},
    ),
    (
        "ds_read_b64 v[2:3], v1 offset:264",
        "ds_read_b64",
        0,
        {"vdst": 2, "addr": 1, "offset0": 8, "offset1": 1},
    ),
    ("ds_add_rtn_u32 v3, v1, v2", "ds_add_rtn_u32", 0, {"vdst": 3, "addr": 1, "data0": 2}),
    (
        "ds_bpermute_b32 v3, v1, v2 offset:4",
        "ds_bpermute_b32",
        0,
        {"vdst": 3, "addr": 1, "data0": 2, "offset0": 4},
    ),
]


@pytest.mark.skipif(shutil.which("llvm-mc-15") is None, reason="llvm-mc-15 not installed")
@pytest.mark.parametrize(("asm", "mnemonic", "bits", "fields"), LLVM_CASES)
def test_test_encodings_match_llvm_mc(asm, mnemonic, bits, fields):
    out = subprocess.run(
        ["llvm-mc-15", "-arch=amdgcn", "-mcpu=gfx900", "-show-encoding"],
        input=asm,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    want = bytes(int(b, 16) for b in re.search(r"encoding: \[(.*)\]", out)[1].split(","))
    assert enc(mnemonic, bits=bits, **fields) == want


# -- GLOBAL ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mnemonic", "size", "convert"),
    [
        ("global_load_ubyte", 1, lambda b: b.astype(np.uint32)),
        ("global_load_sbyte", 1, lambda b: b.view(np.int8).astype(np.int32).view(np.uint32)),
        ("global_load_ushort", 2, lambda b: b.view("<u2").astype(np.uint32)),
        ("global_load_sshort", 2, lambda b: b.view("<i2").astype(np.int32).view(np.uint32)),
        ("global_load_dword", 4, lambda b: b.view("<u4")),
        ("global_load_dwordx2", 8, lambda b: b.view("<u4")),
        ("global_load_dwordx3", 12, lambda b: b.view("<u4")),
        ("global_load_dwordx4", 16, lambda b: b.view("<u4")),
    ],
)
def test_global_loads_of_each_size_extend_and_fill_dwords(make, mnemonic, size, convert):
    ctx, bo = make()
    bo.data[:] = np.random.default_rng(1).integers(0, 256, SIZE, dtype=np.uint8)
    addr = VA + 64 + LANE * np.uint64(size)  # v[2:3]: a 64-bit address per lane
    set_v64(ctx, 2, addr)
    run(ctx, mnemonic, vdst=4, addr=2, offset=-64)
    raw = bo.data[: LANES * size].reshape(LANES, size)
    want = np.stack([convert(raw[i].copy()) for i in range(LANES)])
    got = np.stack([ctx.waves.vgpr[4 + j][0] for j in range(want.shape[1])], axis=1)
    np.testing.assert_array_equal(got, want)
    assert ctx.load_bytes[0] == LANES * size


def test_global_saddr_form_adds_sgpr_base_vgpr_offset_and_negative_offset(make):
    ctx, bo = make()
    ctx.waves.write_sgpr64(slice(None), 4, np.array([VA + 0x1000], dtype=np.uint64))
    ctx.waves.vgpr[1][0] = (LANE * np.uint64(8)).astype(np.uint32)  # 32-bit offsets
    ctx.waves.vgpr[2][0] = np.arange(LANES, dtype=np.uint32) + 100
    ctx.waves.vgpr[3][0] = np.arange(LANES, dtype=np.uint32) + 200
    run(ctx, "global_store_dwordx2", addr=1, data=2, saddr=4, offset=-16)
    got = host(ctx, VA + 0x1000 - 16, 2 * LANES, np.uint32).reshape(LANES, 2)
    np.testing.assert_array_equal(got[:, 0], np.arange(LANES) + 100)
    np.testing.assert_array_equal(got[:, 1], np.arange(LANES) + 200)
    assert ctx.store_bytes[0] == 8 * LANES


@pytest.mark.parametrize(
    ("mnemonic", "size", "hi"),
    [
        ("global_store_byte", 1, False),
        ("global_store_short", 2, False),
        ("global_store_byte_d16_hi", 1, True),
        ("global_store_short_d16_hi", 2, True),
        ("global_store_dwordx3", 12, False),
        ("global_store_dwordx4", 16, False),
    ],
)
def test_global_stores_write_exactly_their_bytes(make, mnemonic, size, hi):
    ctx, bo = make()
    bo.data[:] = 0xEE
    set_v64(ctx, 2, VA + LANE * np.uint64(16))
    for j in range(4):
        ctx.waves.vgpr[4 + j][0] = 0x11223344 + j * 0x01010101 + np.arange(LANES, dtype=np.uint32)
    run(ctx, mnemonic, addr=2, data=4)
    rows = bo.data[: 16 * LANES].reshape(LANES, 16)
    regs = np.stack([ctx.waves.vgpr[4 + j][0] for j in range(4)], axis=1)
    if hi:
        regs = regs >> 16
    want = regs.astype("<u4").view(np.uint8).reshape(LANES, 16)[:, :size]
    np.testing.assert_array_equal(rows[:, :size], want)
    assert (rows[:, size:] == 0xEE).all()


def test_d16_loads_keep_the_other_half(make):
    ctx, bo = make()
    host(ctx, VA, 4, np.uint32)[:] = [0x8081, 0xF0F1, 0, 0]
    set_v64(ctx, 2, VA)
    ctx.waves.vgpr[5][0] = 0xAAAABBBB
    run(ctx, "global_load_sbyte_d16_hi", vdst=5, addr=2)  # byte 0x81 -> high half 0xFF81
    assert ctx.waves.vgpr[5][0][0] == 0xFF81BBBB
    run(ctx, "global_load_short_d16", vdst=5, addr=2)
    assert ctx.waves.vgpr[5][0][0] == 0xFF818081


def test_exec_masked_lanes_neither_load_nor_store(make):
    ctx, bo = make()
    host(ctx, VA, LANES, np.uint32)[:] = np.arange(LANES) + 1000
    ctx.waves.set_exec(slice(None), np.array([0x00000000FFFF0000], dtype=np.uint64))
    set_v64(ctx, 2, VA + LANE * np.uint64(4))
    ctx.waves.vgpr[6][0] = 7
    run(ctx, "global_load_dword", vdst=6, addr=2)
    v = ctx.waves.vgpr[6][0]
    assert (v[16:32] == np.arange(16, 32) + 1000).all()
    assert (v[:16] == 7).all() and (v[32:] == 7).all()
    run(ctx, "global_store_dword", addr=2, data=6)  # writes v6 back: only lanes 16..31
    ctx.waves.vgpr[6][0] = 0
    run(ctx, "global_store_dword", addr=2, data=6)
    mem = host(ctx, VA, LANES, np.uint32)
    assert (mem[16:32] == 0).all()
    assert (mem[:16] == np.arange(16) + 1000).all() and (mem[32:] == np.arange(32, 64) + 1000).all()
    assert ctx.load_bytes[0] == 16 * 4 and ctx.store_bytes[0] == 2 * 16 * 4


# -- global atomics ------------------------------------------------------------------------


def test_atomic_add_with_many_lanes_on_one_address_counts_exactly(make):
    ctx, bo = make(waves=2)
    host(ctx, VA, 2, np.uint32)[:] = [5, 0]
    set_v64(ctx, 2, VA)
    ctx.waves.vgpr[4][:] = 1
    run(ctx, "global_atomic_add", bits=GLC_FLAT, vdst=6, addr=2, data=4)
    assert host(ctx, VA, 1, np.uint32)[0] == 5 + 128
    # Pre-op values in wave order, then lane order: each lane saw the lanes before it.
    np.testing.assert_array_equal(ctx.waves.vgpr[6].reshape(-1), 5 + np.arange(128))
    # Without glc nothing is returned.
    ctx.waves.vgpr[7][:] = 99
    run(ctx, "global_atomic_add", vdst=7, addr=2, data=4)
    assert (ctx.waves.vgpr[7] == 99).all() and host(ctx, VA, 1, np.uint32)[0] == 5 + 256


@pytest.mark.parametrize(
    ("mnemonic", "ref"),
    [
        ("global_atomic_sub", lambda a, b: (a - b) & 0xFFFFFFFF),
        ("global_atomic_smin", lambda a, b: min(a, b, key=lambda x: x - (x >> 31 << 32))),
        ("global_atomic_umax", max),
        ("global_atomic_and", lambda a, b: a & b),
        ("global_atomic_xor", lambda a, b: a ^ b),
        ("global_atomic_swap", lambda a, b: b),
        ("global_atomic_inc", lambda a, b: 0 if a >= b else a + 1),
        ("global_atomic_dec", lambda a, b: b if a == 0 or a > b else a - 1),
    ],
)
def test_atomics_match_a_sequential_reference(make, mnemonic, ref):
    ctx, bo = make()
    rng = np.random.default_rng(7)
    init = rng.integers(0, 1 << 32, 4, dtype=np.uint64)
    if "inc" in mnemonic or "dec" in mnemonic:
        init %= 5
    host(ctx, VA, 4, np.uint32)[:] = init
    slots = rng.integers(0, 4, LANES)
    src = rng.integers(0, 1 << 32, LANES, dtype=np.uint64)
    if "inc" in mnemonic or "dec" in mnemonic:
        src %= 7
    set_v64(ctx, 2, VA + slots.astype(np.uint64) * np.uint64(4))
    ctx.waves.vgpr[4][0] = src.astype(np.uint32)
    run(ctx, mnemonic, bits=GLC_FLAT, vdst=5, addr=2, data=4)
    mem = [int(x) for x in init]
    want_old = []
    for lane in range(LANES):
        want_old.append(mem[slots[lane]])
        mem[slots[lane]] = ref(mem[slots[lane]], int(src[lane]))
    np.testing.assert_array_equal(host(ctx, VA, 4, np.uint32), mem)
    np.testing.assert_array_equal(ctx.waves.vgpr[5][0], want_old)


def test_cmpswap_only_the_first_matching_lane_wins(make):
    ctx, bo = make()
    host(ctx, VA, 1, np.uint32)[0] = 3
    set_v64(ctx, 2, VA)
    ctx.waves.vgpr[4][0] = 100 + np.arange(LANES, dtype=np.uint32)  # new value
    ctx.waves.vgpr[5][0] = 3  # compare value
    run(ctx, "global_atomic_cmpswap", bits=GLC_FLAT, vdst=6, addr=2, data=4)
    assert host(ctx, VA, 1, np.uint32)[0] == 100
    old = ctx.waves.vgpr[6][0]
    assert old[0] == 3 and (old[1:] == 100).all()  # lanes after the winner see its value


def test_64_bit_atomics_and_cmpswap_x2(make):
    ctx, bo = make()
    host(ctx, VA, 2, np.uint64)[:] = [(1 << 40) - 3, 7]
    set_v64(ctx, 2, VA)
    set_v64(ctx, 4, 1)
    run(ctx, "global_atomic_add_x2", bits=GLC_FLAT, vdst=8, addr=2, data=4)
    assert host(ctx, VA, 1, np.uint64)[0] == (1 << 40) - 3 + 64
    old = ctx.waves.vgpr[8][0].astype(np.uint64) | ctx.waves.vgpr[9][0].astype(np.uint64) << 32
    np.testing.assert_array_equal(old, (1 << 40) - 3 + np.arange(64, dtype=np.uint64))
    set_v64(ctx, 2, VA + 8)
    set_v64(ctx, 4, np.uint64(1 << 50) + LANE)  # source
    set_v64(ctx, 6, np.where(LANE == 5, 7, 0).astype(np.uint64))  # compare: lane 5 matches
    run(ctx, "global_atomic_cmpswap_x2", addr=2, data=4)
    assert host(ctx, VA + 8, 1, np.uint64)[0] == (1 << 50) + 5


def test_float_atomics_of_gfx90a(make):
    ctx, bo = make(target="gfx90a")
    host(ctx, VA, 1, np.float32)[0] = 0.5
    host(ctx, VA + 8, 1, np.float64)[0] = 10.0
    set_v64(ctx, 2, VA)
    ctx.waves.vgpr[4][0] = np.float32(1.0).view(np.uint32)
    run(ctx, "global_atomic_add_f32", bits=GLC_FLAT, vdst=5, addr=2, data=4)
    assert host(ctx, VA, 1, np.float32)[0] == 64.5
    assert ctx.waves.vgpr[5][0].view(np.float32)[63] == 63.5
    set_v64(ctx, 2, VA + 8)
    set_v64(ctx, 6, (np.arange(LANES, dtype=np.float64) - 20.0).view(np.uint64))
    run(ctx, "global_atomic_min_f64", addr=2, data=6)
    assert host(ctx, VA + 8, 1, np.float64)[0] == -20.0


# -- faults and the L2 model ---------------------------------------------------------------


def test_fault_on_an_unmapped_lane_names_its_va_and_writes_nothing(make):
    ctx, bo = make(waves=2)
    set_v64(ctx, 2, VA + LANE * np.uint64(4))
    bad = VA + SIZE + 0x40
    ctx.waves.vgpr[2][1, 9] = bad & 0xFFFFFFFF  # wave 1, lane 9 points past the BO
    ctx.waves.vgpr[4][:] = 0xDEADBEEF
    with pytest.raises(MemoryFault) as info:
        run(ctx, "global_store_dword", addr=2, data=4)
    assert info.value.va == bad
    assert (info.value.wave, info.value.lane) == (1, 9)
    assert (bo.data == 0).all()
    with pytest.raises(MemoryFault):  # also before an atomic changes anything
        run(ctx, "global_atomic_add", addr=2, data=4)
    assert (bo.data == 0).all()


def test_unmapped_for_this_gpu_faults(make):
    ctx, bo = make()
    other = ctx.memory.allocate(PASID, 0x400000, 4096, MemKind.VRAM, NODE)  # no gpu_nodes
    set_v64(ctx, 2, np.uint64(0x400000))
    with pytest.raises(MemoryFault, match="not mapped for GPU node 1") as info:
        run(ctx, "global_load_dword", vdst=4, addr=2)
    assert info.value.va == other.va


def test_coarse_grained_system_memory_goes_through_the_l2(make):
    ctx, bo = make()
    sysbo = ctx.memory.allocate(PASID, 0x800000, 4096, MemKind.SYSTEM, 0)  # not coherent
    sysbo.gpu_nodes.add(NODE)
    sysbo.data[:4] = [1, 0, 0, 0]
    set_v64(ctx, 2, 0x800000 + LANE * np.uint64(4))
    run(ctx, "global_load_dword", vdst=4, addr=2)  # fills the L2 line
    assert ctx.waves.vgpr[4][0][0] == 1
    sysbo.data[:4] = [2, 0, 0, 0]  # a host store the L2 does not see
    run(ctx, "global_load_dword", vdst=4, addr=2)
    assert ctx.waves.vgpr[4][0][0] == 1
    ctx.waves.vgpr[5][0] = 42
    run(ctx, "global_store_dword", addr=2, data=5)
    assert (sysbo.data[: 4 * LANES] != 42).any()  # the host does not see it yet
    run(ctx, "global_atomic_add", addr=2, data=5)  # atomics stay in the L2 too
    ctx.memory.l2_release_system(NODE)
    np.testing.assert_array_equal(sysbo.data[: 4 * LANES].view(np.uint32), 84)


def test_lane_gather_across_bos_and_fault_names_the_first_bad_lane():
    mem = Memory({0: 1 << 24, NODE: 1 << 24})
    mem.create_vm(PASID)
    a = mem.allocate(PASID, 0x10000, 4096, MemKind.VRAM, NODE)
    b = mem.allocate(PASID, 0x30000, 4096, MemKind.VRAM, NODE)
    for bo, v in ((a, 1), (b, 2)):
        bo.gpu_nodes.add(NODE)
        bo.data[:] = v
    addrs = np.array([0x30000, 0x10004, 0x30FFC, 0x10000], dtype=np.uint64)
    np.testing.assert_array_equal(mem.lane_gather(PASID, NODE, addrs, 4)[:, 0], [2, 1, 2, 1])
    addrs = np.array([0x10000, 0x30FFE, 0x20000], dtype=np.uint64)  # lane 1 runs past b
    with pytest.raises(MemoryFault, match="past the end") as info:
        mem.lane_scatter(PASID, NODE, addrs, np.zeros((3, 4), np.uint8))
    assert info.value.va == 0x30FFE and info.value.index == 1
    assert (a.data == 1).all()


# -- FLAT, SCRATCH, MUBUF private --------------------------------------------------------


def test_flat_routes_each_lane_by_aperture(make):
    ctx, bo = make(lds_bytes=256, private=32)
    ap = ctx.waves.apertures
    lane = np.arange(LANES)
    addr = np.where(
        lane % 3 == 0,
        VA + LANE * np.uint64(4),
        np.where(lane % 3 == 1, ap.shared_base + LANE * np.uint64(4), ap.private_base + 8),
    ).astype(np.uint64)
    set_v64(ctx, 2, addr)
    ctx.waves.vgpr[4][0] = 500 + lane
    run(ctx, "flat_store_dword", addr=2, data=4, saddr=0)
    g = host(ctx, VA, LANES, np.uint32)
    ldsw = ctx.lds[0].view(np.uint32)
    for i in range(LANES):
        if i % 3 == 0:
            assert g[i] == 500 + i
        elif i % 3 == 1:
            assert ldsw[i] == 500 + i
        else:
            assert ctx.private[0, i, 8:12].view(np.uint32)[0] == 500 + i
    assert g[1] == 0 and ldsw[0] == 0
    run(ctx, "flat_load_dword", vdst=6, addr=2, saddr=0)
    np.testing.assert_array_equal(ctx.waves.vgpr[6][0], 500 + lane)


def test_flat_lds_uses_the_waves_workgroup(make):
    ctx, bo = make(waves=2, wgs=2, lds_bytes=64)
    ctx.waves.wg[:] = [1, 0]
    set_v64(ctx, 2, ctx.waves.apertures.shared_base + 4)
    ctx.waves.vgpr[4][:] = np.array([[11], [22]], dtype=np.uint32)
    ctx.waves.set_exec(slice(None), np.array([1, 1], dtype=np.uint64))
    run(ctx, "flat_store_dword", addr=2, data=4, saddr=0)
    assert ctx.lds[1, 4:8].view(np.uint32)[0] == 11 and ctx.lds[0, 4:8].view(np.uint32)[0] == 22


def test_scratch_vaddr_and_saddr_forms_address_each_lanes_private_memory(make):
    ctx, bo = make(private=64)
    ctx.waves.vgpr[1][0] = 16  # per-lane offset
    ctx.waves.vgpr[2][0] = np.arange(LANES, dtype=np.uint32)
    run(ctx, "scratch_store_dword", addr=1, data=2, offset=-4)
    np.testing.assert_array_equal(ctx.private[0, :, 12:16].view(np.uint32)[:, 0], np.arange(64))
    ctx.waves.write_sgpr(slice(None), 3, np.array([8], dtype=np.uint32))
    run(ctx, "scratch_load_dword", vdst=5, saddr=3, offset=4)
    np.testing.assert_array_equal(ctx.waves.vgpr[5][0], np.arange(64))
    with pytest.raises(MemoryFault, match="private"):
        run(ctx, "scratch_load_dword", vdst=5, saddr=3, offset=60)


def test_scratch_on_gfx942_adds_vgpr_and_sgpr_with_sve(make):
    ctx, bo = make(target="gfx942", private=64)
    ctx.waves.vgpr[1][0] = 8
    ctx.waves.write_sgpr(slice(None), 3, np.array([16], dtype=np.uint32))
    ctx.waves.vgpr[2][0] = 77
    run(ctx, "scratch_store_dword", bits=SVE, addr=1, data=2, saddr=3, offset=4)
    assert (ctx.private[0, :, 28:32].view(np.uint32) == 77).all()


def scratch_rsrc(ctx, sgpr: int = 0) -> None:
    from hw_model.isa.program import SCRATCH_RSRC

    for i, word in enumerate(SCRATCH_RSRC):
        ctx.waves.write_sgpr(slice(None), sgpr + i, np.array([word], dtype=np.uint32))


def test_mubuf_private_segment_buffer_is_per_lane_private_memory(make):
    """-O0 spills: buffer_store_dword v, off, s[0:3], s33 offset:N with s33 a wave-scaled
    frame offset (64 bytes of wave scratch per byte of lane private memory)."""
    ctx, bo = make(private=64)
    scratch_rsrc(ctx)
    ctx.waves.write_sgpr(slice(None), 33, np.array([16 * LANES], dtype=np.uint32))
    ctx.waves.vgpr[1][0] = 1000 + np.arange(LANES, dtype=np.uint32)
    ctx.waves.vgpr[2][0] = 2000 + np.arange(LANES, dtype=np.uint32)
    run(ctx, "buffer_store_dwordx2", vdata=1, srsrc=0, soffset=33, offset=4)
    got = ctx.private[0, :, 20:28].view(np.uint32)
    np.testing.assert_array_equal(got[:, 0], 1000 + np.arange(LANES))
    np.testing.assert_array_equal(got[:, 1], 2000 + np.arange(LANES))
    # The offen form: a per-lane private address in a VGPR (e.g. v_lshrrev_b32 v, 6, s32).
    ctx.waves.vgpr[3][0] = 24
    run(ctx, "buffer_load_dword", bits=OFFEN, vdata=5, vaddr=3, srsrc=0, soffset=0x80)
    np.testing.assert_array_equal(ctx.waves.vgpr[5][0], 2000 + np.arange(LANES))
    # The same bytes as SCRATCH and the FLAT private aperture see them.
    run(ctx, "scratch_load_dword", vdst=6, addr=3)
    np.testing.assert_array_equal(ctx.waves.vgpr[6][0], 2000 + np.arange(LANES))
    run(ctx, "buffer_store_byte", bits=OFFEN, vdata=1, vaddr=3, srsrc=0, soffset=0x80)
    assert (ctx.private[0, :, 24] == (1000 + np.arange(LANES)) % 256).all()


def test_mubuf_raw_buffer_range_check(make):
    ctx, bo = make()
    host(ctx, VA, LANES, np.uint32)[:] = np.arange(LANES) + 1
    words = (VA & 0xFFFFFFFF, VA >> 32, 40, 0)  # raw buffer of 40 bytes
    for i, word in enumerate(words):
        ctx.waves.write_sgpr(slice(None), 8 + i, np.array([word], dtype=np.uint32))
    ctx.waves.vgpr[1][0] = np.arange(LANES, dtype=np.uint32) * 4
    run(ctx, "buffer_load_dword", bits=OFFEN, vdata=2, vaddr=1, srsrc=2, soffset=0x80)
    v = ctx.waves.vgpr[2][0]
    np.testing.assert_array_equal(v[:10], np.arange(10) + 1)
    assert (v[10:] == 0).all()  # out of range reads 0
    run(ctx, "buffer_load_dwordx2", bits=OFFEN, vdata=4, vaddr=1, srsrc=2, soffset=0x80, offset=4)
    assert ctx.waves.vgpr[4][0][8] == 10 and ctx.waves.vgpr[5][0][8] == 0  # per dword
    ctx.waves.vgpr[3][0] = 0xABCD
    run(ctx, "buffer_store_dword", bits=OFFEN, vdata=3, vaddr=1, srsrc=2, soffset=0x80)
    mem = host(ctx, VA, LANES, np.uint32)
    assert (mem[:10] == 0xABCD).all() and (mem[10:] == np.arange(10, LANES) + 1).all()


def test_acc_bit_on_gfx90a_loads_into_agprs(make):
    ctx, bo = make(target="gfx90a", agprs=4)
    host(ctx, VA, 1, np.uint32)[0] = 1234
    set_v64(ctx, 2, VA)
    run(ctx, "global_load_dword", bits=1 << 55, vdst=1, addr=2)
    assert (ctx.waves.agpr[1][0] == 1234).all() and (ctx.waves.vgpr[1][0] == 0).all()


# -- DS ------------------------------------------------------------------------------------


def test_ds_write2_read2_offsets_in_element_units(make):
    ctx, bo = make(lds_bytes=4096)
    ctx.waves.vgpr[1][0] = np.arange(LANES, dtype=np.uint32) * 4
    ctx.waves.vgpr[2][0] = np.arange(LANES, dtype=np.uint32)
    ctx.waves.vgpr[3][0] = 100 + np.arange(LANES, dtype=np.uint32)
    run(ctx, "ds_write2_b32", addr=1, data0=2, data1=3, offset0=0, offset1=64)
    words = ctx.lds[0].view(np.uint32)
    np.testing.assert_array_equal(words[:64], np.arange(64))
    np.testing.assert_array_equal(words[64:128], 100 + np.arange(64))
    run(ctx, "ds_read2_b32", vdst=6, addr=1, offset0=64, offset1=0)
    np.testing.assert_array_equal(ctx.waves.vgpr[6][0], 100 + np.arange(64))
    np.testing.assert_array_equal(ctx.waves.vgpr[7][0], np.arange(64))
    # ST64: offsets count 64 elements; b64 elements are 8 bytes.
    ctx.waves.vgpr[1][0] = 0
    run(ctx, "ds_write2st64_b64", addr=1, data0=2, data1=2, offset0=1, offset1=3)
    assert words[512 // 4] == 63 and words[1536 // 4] == 63
    run(ctx, "ds_read_b64", vdst=8, addr=1, offset0=0, offset1=2)  # offset 512
    assert ctx.waves.vgpr[8][0][0] == 63


def test_ds_sub_dword_and_single_offset(make):
    ctx, bo = make(lds_bytes=1024)
    ctx.waves.vgpr[1][0] = np.arange(LANES, dtype=np.uint32) * 2
    ctx.waves.vgpr[2][0] = 0xFF80 + np.arange(LANES, dtype=np.uint32)
    run(ctx, "ds_write_b16", addr=1, data0=2, offset0=0, offset1=1)  # offset 256
    run(ctx, "ds_read_i16", vdst=3, addr=1, offset0=0, offset1=1)
    want = (0xFF80 + np.arange(LANES)).astype(np.uint16).view(np.int16).astype(np.int32)
    np.testing.assert_array_equal(ctx.waves.vgpr[3][0].view(np.int32), want)


def test_ds_out_of_range_reads_zero_and_drops_writes(make):
    ctx, bo = make(lds_bytes=128)
    ctx.lds[0, :] = 9
    ctx.waves.vgpr[1][0] = np.arange(LANES, dtype=np.uint32) * 4  # lanes 32.. beyond 128 B
    ctx.waves.vgpr[2][0] = 1
    run(ctx, "ds_read_b32", vdst=3, addr=1)
    assert (ctx.waves.vgpr[3][0][:32] == 0x09090909).all() and (
        ctx.waves.vgpr[3][0][32:] == 0
    ).all()
    run(ctx, "ds_write_b32", addr=1, data0=2)
    assert (ctx.lds[0].view(np.uint32) == 1).all()


def test_lds_atomics_count_across_waves_of_a_workgroup(make):
    ctx, bo = make(waves=3, wgs=2, lds_bytes=64)
    ctx.waves.wg[:] = [0, 0, 1]
    ctx.waves.vgpr[1][:] = 8
    ctx.waves.vgpr[2][:] = 2
    run(ctx, "ds_add_rtn_u32", vdst=3, addr=1, data0=2)
    assert ctx.lds[0, 8:12].view(np.uint32)[0] == 256 and ctx.lds[1, 8:12].view(np.uint32)[0] == 128
    np.testing.assert_array_equal(ctx.waves.vgpr[3][:2].reshape(-1), 2 * np.arange(128))
    np.testing.assert_array_equal(ctx.waves.vgpr[3][2], 2 * np.arange(64))
    run(ctx, "ds_max_u32", addr=1, data0=2)  # no return; value unchanged by max(256, 2)
    assert ctx.lds[0, 8:12].view(np.uint32)[0] == 256


def test_lds_cmpst_and_mskor_take_data0_as_compare_or_mask(make):
    ctx, bo = make(lds_bytes=64)
    ctx.lds[0, :4].view(np.uint32)[0] = 5
    ctx.waves.vgpr[1][0] = 0
    ctx.waves.vgpr[2][0] = 5  # compare
    ctx.waves.vgpr[3][0] = 1000 + np.arange(LANES, dtype=np.uint32)  # new
    run(ctx, "ds_cmpst_rtn_b32", vdst=4, addr=1, data0=2, data1=3)
    assert ctx.lds[0, :4].view(np.uint32)[0] == 1000
    assert ctx.waves.vgpr[4][0][0] == 5 and (ctx.waves.vgpr[4][0][1:] == 1000).all()
    ctx.waves.set_exec(slice(None), np.array([1], dtype=np.uint64))
    ctx.waves.vgpr[2][0] = 0xFF  # mask
    ctx.waves.vgpr[3][0] = 0x42
    run(ctx, "ds_mskor_b32", addr=1, data0=2, data1=3)
    assert ctx.lds[0, :4].view(np.uint32)[0] == (1000 & ~0xFF) | 0x42


def test_ds_bpermute_and_swizzle_move_data_between_lanes(make):
    ctx, bo = make()
    lane = np.arange(LANES, dtype=np.uint32)
    ctx.waves.vgpr[1][0] = ((lane + 1) % 64) * 4  # read the next lane
    ctx.waves.vgpr[2][0] = 100 + lane
    ctx.waves.set_exec(slice(None), np.array([FULL ^ np.uint64(1 << 5)], dtype=np.uint64))
    run(ctx, "ds_bpermute_b32", vdst=3, addr=1, data0=2)
    got = ctx.waves.vgpr[3][0]
    assert got[0] == 101 and got[4] == 0 and got[5] == 0 and got[63] == 100  # lane 5 is off
    ctx.waves.set_exec(slice(None), np.array([FULL], dtype=np.uint64))
    run(ctx, "ds_permute_b32", vdst=4, addr=1, data0=2)  # lane i sends to lane i+1
    assert ctx.waves.vgpr[4][0][1] == 100 and ctx.waves.vgpr[4][0][0] == 163
    # swizzle(SWAP, 1): xor_mask 1 in bitmask mode (and_mask 0x1f).
    run(ctx, "ds_swizzle_b32", vdst=5, addr=2, offset0=0x1F, offset1=0x04)
    np.testing.assert_array_equal(ctx.waves.vgpr[5][0], 100 + (lane ^ 1))
    # QDMode broadcast of lane 2 of each quad: selectors 2,2,2,2, bit 15.
    run(ctx, "ds_swizzle_b32", vdst=5, addr=2, offset0=0xAA, offset1=0x80)
    np.testing.assert_array_equal(ctx.waves.vgpr[5][0], 100 + (lane // 4) * 4 + 2)


# -- compiled kernels --------------------------------------------------------------------

KERNELS = {
    "reduce": """
__kernel void reduce(__global const float *in, __global float *out, __local float *s, int n) {
  int gid = get_global_id(0), lid = get_local_id(0);
  s[lid] = gid < n ? in[gid] : 0.0f;
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int k = get_local_size(0) / 2; k > 0; k >>= 1) {
    if (lid < k) s[lid] += s[lid + k];
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  if (lid == 0) out[get_group_id(0)] = s[0];
}
__kernel void shuffle(__global const int *in, __global int *out) {
  int i = get_global_id(0), x = in[i];
  int y = __builtin_amdgcn_ds_bpermute(((i + 1) & 63) * 4, x);
  out[i] = y + __builtin_amdgcn_ds_swizzle(x, 0x041F);
}""",
    "matmul": """
#define T 16
__kernel void matmul(__global const float *A, __global const float *B, __global float *C, int n) {
  __local float As[T][T], Bs[T][T];
  int r = get_global_id(1), c = get_global_id(0), lr = get_local_id(1), lc = get_local_id(0);
  float acc = 0;
  for (int t = 0; t < n / T; t++) {
    As[lr][lc] = A[r * n + t * T + lc];
    Bs[lr][lc] = B[(t * T + lr) * n + c];
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int k = 0; k < T; k++) acc += As[lr][k] * Bs[k][lc];
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  C[r * n + c] = acc;
}""",
    "histogram": """
__kernel void hist(__global const uchar *in, __global uint *bins, __global int *cnt, int n) {
  int i = get_global_id(0);
  if (i < n) { atomic_inc(&bins[in[i]]); atomic_add(cnt, 2); }
}
__kernel void hist_local(__global const uchar *in, __global uint *bins, int n) {
  __local uint lb[256];
  int l = get_local_id(0);
  for (int j = l; j < 256; j += get_local_size(0)) lb[j] = 0;
  barrier(CLK_LOCAL_MEM_FENCE);
  int i = get_global_id(0);
  if (i < n) atomic_inc(&lb[in[i]]);
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int j = l; j < 256; j += get_local_size(0)) atomic_add(&bins[j], lb[j]);
}
__kernel void atoms(__global int *p, __global uint *u, __global long *q) {
  int i = get_global_id(0);
  int o = atomic_cmpxchg(&p[0], i, i + 1);
  atomic_min(&p[1], i); atomic_max(&p[2], i); atomic_xchg(&p[3], i);
  atomic_and(&p[4], i); atomic_or(&p[5], i); atomic_xor(&p[6], i); atomic_sub(&p[7], i);
  atomic_dec(&u[0]); atomic_min(&u[1], (uint)i); atomic_max(&u[2], (uint)i);
  atom_add(&q[0], (long)i); atom_cmpxchg(&q[1], (long)i, (long)o);
  p[8 + i] = o;
}""",
    "private_O0": """
__kernel void priv(__global const int *in, __global int *out, int n) {
  int a[16]; char c[7]; short s[5]; long l[3];
  int i = get_global_id(0);
  for (int k = 0; k < 16; k++) a[k] = in[(i + k) % n] * k;
  for (int k = 0; k < 7; k++) c[k] = (char)(a[k] - 100);
  for (int k = 0; k < 5; k++) s[k] = (short)(a[k] * 300);
  for (int k = 0; k < 3; k++) l[k] = (long)a[k] << 33;
  int sum = 0;
  for (int k = 0; k < 16; k++) sum += a[(k * 7 + i) % 16];
  out[i] = sum + c[i % 7] + s[i % 5] + (int)(l[i % 3] >> 33);
}""",
}
MEMORY_ENCODINGS = ("DS", "FLAT", "GLOBAL", "SCRATCH", "MUBUF")


@pytest.mark.parametrize("target", ["gfx900", "gfx90a"])
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_every_memory_instruction_clang_emits_is_supported(compile_cl, name, target):
    from rocr.elf import Elf64

    opt = "-O0" if name.endswith("O0") else "-O2"
    path = compile_cl(KERNELS[name], mcpu=target, opt=opt)
    elf = Elf64(path.read_bytes())
    code = elf.section_bytes(elf.section(".text"))
    seen = {
        i.mnemonic
        for i in decode(code, target)
        if i.encoding in MEMORY_ENCODINGS and i.mnemonic is not None
    }
    assert seen, "the kernel has memory instructions"
    missing = sorted(m for m in seen if m not in vmem.OPS and m not in lds.OPS)
    assert missing == []


# -- compiled kernels run end to end (rocr -> CP -> interpreter) ----------------------------

GENERIC = """
void store_to(int *p, int v) { *p = v; }
int load_from(const int *p) { return *p; }
__kernel void through_generic(__global int *g, int sel) {
  __local int l[64];
  int priv[4];
  int i = get_local_id(0);
  l[i] = -1;
  priv[i & 3] = -2;
  barrier(CLK_LOCAL_MEM_FENCE);
  int *p = sel == 0 ? (int *)&g[i] : sel == 1 ? (int *)&l[i] : (int *)&priv[i & 3];
  store_to(p, i * 3);
  barrier(CLK_LOCAL_MEM_FENCE);
  g[64 + i] = load_from(p) + l[(i + 1) & 63];
}
__kernel void counters(__global int *c, __global int *slot, __global uint *bins,
                       __global const uchar *in) {
  int i = get_global_id(0);
  slot[i] = atomic_inc(&c[0]);
  atomic_cmpxchg(&c[1], i, i + 1);
  atomic_add(&bins[in[i] & 15], 3u);
}
"""
PRESETS = {"gfx900": "teaching", "gfx90a": "gfx90a"}


class _Gpu:
    def __init__(self, rt, blob: bytes) -> None:
        self.rt = rt
        self.exe = rt.load_code_object(blob)
        self.q = rt.gpus[0].create_queue(64)
        self.pool = rt.cpu.pools(fine_grained=True, kernarg=False)[0]

    def buf(self, data: np.ndarray):
        b = self.pool.allocate(max(data.nbytes, 4))
        self.rt.allow_access(self.rt.gpus, b)
        b.view(data.dtype, data.size)[:] = data.ravel()
        return b

    def run(self, name: str, grid: int, wg: int, *args) -> None:
        self.q.dispatch(self.exe.kernel(name), grid=grid, workgroup=wg, args=args).wait()


@pytest.mark.parametrize("target", list(PRESETS))
def test_generic_pointers_reach_global_lds_and_private_memory(compile_cl, target):
    import rocr

    blob = compile_cl(GENERIC, mcpu=target, opt="-cl-std=CL2.0").read_bytes()
    with rocr.init(preset=PRESETS[target]) as rt:
        gpu = _Gpu(rt, blob)
        i = np.arange(64)
        for sel, first, second in (
            (0, 3 * i, 3 * i - 1),
            (1, np.zeros(64), 3 * i + 3 * ((i + 1) % 64)),
            (2, np.zeros(64), 3 * i - 1),
        ):
            g = gpu.buf(np.zeros(128, np.int32))
            gpu.run("through_generic", 64, 64, g, sel)
            out = g.view(np.int32, 128)
            np.testing.assert_array_equal(out[:64], first, err_msg=f"sel {sel}")
            np.testing.assert_array_equal(out[64:], second, err_msg=f"sel {sel}")


@pytest.mark.parametrize("target", list(PRESETS))
def test_compiled_atomics_return_every_ticket_once(compile_cl, target):
    import rocr

    blob = compile_cl(GENERIC, mcpu=target, opt="-cl-std=CL2.0").read_bytes()
    with rocr.init(preset=PRESETS[target]) as rt:
        gpu = _Gpu(rt, blob)
        n = 512
        data = np.random.default_rng(3).integers(0, 256, n, dtype=np.uint8)
        c, slot = gpu.buf(np.zeros(2, np.int32)), gpu.buf(np.zeros(n, np.int32))
        bins, inp = gpu.buf(np.zeros(16, np.uint32)), gpu.buf(data)
        gpu.run("counters", n, 128, c, slot, bins, inp)
        assert c.view(np.int32, 2)[0] == n
        assert sorted(slot.view(np.int32, n)) == list(range(n))
        assert c.view(np.int32, 2)[1] >= 1  # the chain of compare-and-swaps advanced it
        np.testing.assert_array_equal(
            bins.view(np.uint32, 16), 3 * np.bincount(data & 15, minlength=16)
        )


@pytest.mark.parametrize("target", list(PRESETS))
def test_O0_private_arrays_of_every_width_through_the_private_segment_buffer(compile_cl, target):
    import rocr

    blob = compile_cl(KERNELS["private_O0"], mcpu=target, opt="-O0").read_bytes()
    with rocr.init(preset=PRESETS[target]) as rt:
        gpu = _Gpu(rt, blob)
        n = 128
        x = (np.arange(n, dtype=np.int32) * 37) % 101 - 50
        bi, bo = gpu.buf(x), gpu.buf(np.zeros(n, np.int32))
        gpu.run("priv", n, 64, bi, bo, n)
        want = []
        for i in range(n):
            a = [int(x[(i + k) % n]) * k for k in range(16)]
            c = [((v - 100 + 128) % 256) - 128 for v in a[:7]]
            s = [((v * 300 + 32768) % 65536) - 32768 for v in a[:5]]
            total = sum(a[(k * 7 + i) % 16] for k in range(16))
            want.append(total + c[i % 7] + s[i % 5] + a[i % 3])
        np.testing.assert_array_equal(bo.view(np.int32, n), want)
