"""The AMDGPU ELF code object loader: kernels compiled with clang-15 at test time."""

from __future__ import annotations

import struct

import msgpack
import numpy as np
import pytest

import rocr
from rocr import elf
from rocr.loader import parse_code_object

SOURCE = """
__kernel void vector_add(__global const float *a, __global const float *b,
                         __global float *c, uint n) {
  size_t i = get_global_id(0);
  if (i < n) c[i] = a[i] + b[i];
}
__kernel void saxpy(float alpha, __global const float *x, __global float *y, int n) {
  size_t i = get_global_id(0);
  if (i < n) y[i] = alpha * x[i] + y[i];
}
__constant float table[4] = {1, 2, 3, 4};
__constant float *__constant rows[2] = {table, table + 2};
__kernel void lookup(__global float *out) {
  size_t i = get_global_id(0);
  out[i] = rows[i & 1][i & 1];
}
__kernel void with_lds(__global float *out) {
  __local float tile[256];
  tile[get_local_id(0)] = get_local_id(0);
  barrier(CLK_LOCAL_MEM_FENCE);
  out[get_global_id(0)] = tile[255 - get_local_id(0)];
}
"""


def _dynsym(co, name):
    return next(s for s in co.image.symbols() if s.name == name)


@pytest.mark.parametrize("cov", [4, 5])
def test_metadata_symbols_and_descriptors(rt, compile_cl, cov):
    path = compile_cl(SOURCE, cov=cov)
    blob = path.read_bytes()
    co = parse_code_object(blob)
    assert co.version == cov and co.processor == "gfx900"
    exe = rt.load_code_object(path)
    assert sorted(exe.symbols) == ["lookup", "saxpy", "vector_add", "with_lds"]
    k = exe.kernel("vector_add")
    assert [(a.name, a.type, a.offset, a.size, a.value_kind) for a in k.args] == [
        ("a", "ptr", 0, 8, "global_buffer"),
        ("b", "ptr", 8, 8, "global_buffer"),
        ("c", "ptr", 16, 8, "global_buffer"),
        ("n", "u32", 24, 4, "by_value"),
    ]
    hidden = {a.value_kind for a in k.hidden_args}
    assert {"hidden_global_offset_x", "hidden_global_offset_y"} <= hidden
    if cov == 5:
        assert {"hidden_block_count_x", "hidden_group_size_x", "hidden_remainder_x"} <= hidden
        assert "hidden_grid_dims" in hidden
    assert k.kernarg_size >= 256 if cov == 5 else k.kernarg_size >= 56
    assert exe.kernel("saxpy").args[0].type == "f32"
    assert exe.kernel("with_lds").group_segment_size == 1024
    assert k.vgprs > 0 and k.sgprs > 0
    assert k.code.wavefront_size == 64
    # The descriptor at kernel_object is the .kd symbol's 64 bytes from the ELF.
    for name in exe.symbols:
        sym = exe.kernel(name)
        kd = _dynsym(co, f"{name}.kd")
        assert sym.kernel_object == exe.load_base + kd.value
        loaded = _gpu_read(rt, exe, sym.kernel_object, 64)
        assert loaded == co.read_va(kd.value, 64)
        # The entry points at the kernel's code, as the function symbol says.
        entry = sym.kernel_object + sym.code.kd.kernel_code_entry_byte_offset
        assert entry == exe.load_base + _dynsym(co, name).value


def _gpu_read(rt, exe, va, n):
    """`n` bytes at `va` as the GPU sees them, through its page tables."""
    gpu = rt.system.gpus[0]
    return gpu.memory.gpu_view(exe._alloc.mapping.pasid, gpu.node, va, n).tobytes()


def test_relocations_are_applied_against_the_load_base(rt, compile_cl):
    path = compile_cl(SOURCE)
    co = parse_code_object(path.read_bytes())
    relocs = [r for _s, r in co.image.relocations() if r.type == elf.R_AMDGPU_RELATIVE64]
    assert len(relocs) == 2, "rows[] holds two pointers: two R_AMDGPU_RELATIVE64"
    exe = rt.load_code_object(path)
    firsts = []
    for r in sorted(relocs, key=lambda r: r.offset):
        (value,) = struct.unpack("<Q", _gpu_read(rt, exe, exe.load_base + r.offset, 8))
        assert value == exe.load_base + r.addend
        # Each pointer reaches the constant table as loaded: rows[0] = table, rows[1] = table+2
        firsts.append(np.frombuffer(_gpu_read(rt, exe, value, 4), np.float32)[0])
    assert firsts == [1.0, 3.0]


def test_a_code_object_for_another_target_is_refused_naming_both(compile_cl):
    path = compile_cl(SOURCE, mcpu="gfx90a")
    with rocr.init(preset="teaching") as rt, pytest.raises(rocr.HsaError) as info:
        rt.load_code_object(path)
    assert info.value.status == rocr.Status.ERROR_INCOMPATIBLE_ARGUMENTS
    assert "gfx90a" in info.value.message and "gfx900" in info.value.message
    with rocr.init(preset="gfx90a") as rt:
        exe = rt.load_code_object(path)
        assert exe.code_object.processor == "gfx90a"
        assert exe.kernel("vector_add").kernel_object % 64 == 0


def test_xnack_pinned_on_does_not_load_on_an_xnack_off_agent(compile_cl):
    path = compile_cl(SOURCE, mcpu="gfx900:xnack+")
    assert parse_code_object(path.read_bytes()).target == "gfx900:xnack+"
    with rocr.init(preset="teaching") as rt, pytest.raises(rocr.HsaError) as info:
        rt.load_code_object(path)
    assert info.value.status == rocr.Status.ERROR_INCOMPATIBLE_ARGUMENTS
    assert "gfx900:xnack+" in info.value.message and "gfx900:xnack-" in info.value.message


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_any_bytes_like_loads(rt, compile_cl, kind):
    blob = compile_cl(SOURCE).read_bytes()
    exe = rt.load_code_object(kind(blob))
    assert exe.kernel("saxpy.kd").name == "saxpy"


def test_offload_bundle_loads_the_agents_target(compile_cl):
    gfx900 = compile_cl(SOURCE, mcpu="gfx900").read_bytes()
    gfx90a = compile_cl(SOURCE.replace("saxpy", "saxpy_a"), mcpu="gfx90a").read_bytes()
    bundle = elf.make_offload_bundle(
        [
            ("host-x86_64-unknown-linux-gnu-", b""),
            ("hipv4-amdgcn-amd-amdhsa--gfx900", gfx900),
            ("hipv4-amdgcn-amd-amdhsa--gfx90a", gfx90a),
        ]
    )
    with rocr.init(preset="teaching") as rt:
        assert "saxpy" in rt.load_code_object(bundle).symbols
    with rocr.init(preset="gfx90a") as rt:
        assert "saxpy_a" in rt.load_code_object(bundle).symbols
    with rocr.init(preset="gfx942") as rt, pytest.raises(rocr.HsaError) as info:
        rt.load_code_object(bundle)
    assert info.value.status == rocr.Status.ERROR_INCOMPATIBLE_ARGUMENTS
    assert "gfx942" in info.value.message and "gfx90a" in info.value.message


def test_hidden_arguments_are_packed_from_the_dispatch(rt, compile_cl, buffers):
    exe = rt.load_code_object(compile_cl(SOURCE, cov=5))
    k = exe.kernel("vector_add")
    a = buffers(np.zeros(4, np.float32))
    data = k.pack_args(a, a, a, 1000, grid=1000, workgroup=256)
    hid = {h.value_kind: h for h in k.hidden_args}

    def field(kind):
        h = hid[kind]
        return int.from_bytes(data[h.offset : h.offset + h.size], "little")

    assert struct.unpack_from("<QQQI", data, 0) == (a.address, a.address, a.address, 1000)
    assert field("hidden_block_count_x") == 3  # whole workgroups: 1000 // 256
    assert field("hidden_remainder_x") == 1000 % 256
    assert field("hidden_group_size_x") == 256
    assert field("hidden_group_size_y") == 1 and field("hidden_block_count_y") == 1
    assert field("hidden_grid_dims") == 1
    assert field("hidden_global_offset_x") == 0


def test_a_dispatch_fills_the_hidden_arguments_in_kernarg_memory(rt, compile_cl, buffers):
    exe = rt.load_code_object(compile_cl(SOURCE, cov=5))
    k = exe.kernel("vector_add")
    a = buffers(np.zeros(4, np.float32))
    q = rt.gpus[0].create_queue(64, callback=lambda e, q: None)
    h = q.dispatch(k, grid=1000, workgroup=256, args=(a, a, a, 1000))
    pkt = q.packet(h.index)
    chunk = next(
        c.buf
        for c in rt._kernarg_chunks
        if c.buf.address <= pkt.kernarg_address < c.buf.address + c.buf.size
    )
    data = chunk.read(pkt.kernarg_address - chunk.address, k.kernarg_size)
    hid = {x.value_kind: x for x in k.hidden_args}

    def field(kind):
        x = hid[kind]
        return int.from_bytes(data[x.offset : x.offset + x.size], "little")

    assert field("hidden_block_count_x") == 3 and field("hidden_remainder_x") == 1000 % 256
    assert field("hidden_group_size_x") == 256 and field("hidden_grid_dims") == 1
    if "hidden_queue_ptr" in hid:
        assert field("hidden_queue_ptr") == q.address


def test_dispatching_machine_code_runs_it(rt, compile_cl, buffers):
    exe = rt.load_code_object(compile_cl(SOURCE))
    k = exe.kernel("vector_add")
    a = buffers(np.arange(64, dtype=np.float32))
    c = buffers(np.zeros(64, dtype=np.float32))
    q = rt.gpus[0].create_queue(64)
    q.dispatch(k, 64, 64, (a, a, c, 64)).wait()
    np.testing.assert_array_equal(c.view(np.float32, 64), 2 * np.arange(64, dtype=np.float32))
    assert not rt.system.gpus[0].queue_errors
    # The CP names the kernel from the loaded code object's symbols, as a debugger would.
    assert rt.system.gpus[0].kernel_records[-1]["name"] == "vector_add"
    assert exe.kernel_at(k.kernel_object) is k and exe.kernel_at(k.kernel_object + 64) is not k


def _patched(blob: bytes, offset: int, value: bytes) -> bytes:
    return blob[:offset] + value + blob[offset + len(value) :]


def test_malformed_code_objects_get_invalid_code_object(rt, compile_cl):
    blob = compile_cl(SOURCE).read_bytes()
    cases = {
        "EI_ABIVERSION 9": (_patched(blob, 8, b"\x09"), "EI_ABIVERSION 9"),
        "ELFCLASS32": (_patched(blob, 4, b"\x01"), "ELFCLASS64"),
        "EI_OSABI 0": (_patched(blob, 7, b"\x00"), "ELFOSABI_AMDGPU_HSA"),
        "cut short": (blob[:200], "past the end"),
    }
    for what, (bad, words) in cases.items():
        with pytest.raises(rocr.HsaError) as info:
            rt.load_code_object(bad)
        assert info.value.status == rocr.Status.ERROR_INVALID_CODE_OBJECT, what
        assert words in info.value.message, (what, info.value.message)


def test_metadata_is_the_msgpack_note(compile_cl):
    co = parse_code_object(compile_cl(SOURCE).read_bytes())
    (desc,) = [d for o, t, d in co.image.notes() if t == elf.NT_AMDGPU_METADATA]
    meta = msgpack.unpackb(desc, raw=False)
    names = [k[".name"] for k in meta["amdhsa.kernels"]]
    assert [k.name for k in co.kernels] == names
    assert meta["amdhsa.target"].endswith("gfx900")


def test_an_unlinked_object_is_refused_saying_to_link_it(rt, compile_cl):
    path = compile_cl(SOURCE)
    with pytest.raises(rocr.HsaError) as info:
        rt.load_code_object(path.with_suffix(".o"))
    assert info.value.status == rocr.Status.ERROR_INVALID_CODE_OBJECT
    assert "ET_DYN" in info.value.message and "ld.lld" in info.value.message


def test_narrow_and_aggregate_by_value_arguments_pack_by_metadata(rt, compile_cl):
    src = """
    __kernel void mixed(__global float *out, char c, short s, float4 v, double d) {
      out[0] = c + s + v.x + v.w + (float)d;
    }
    """
    k = rt.load_code_object(compile_cl(src)).kernel("mixed")
    assert [(a.name, a.type, a.size) for a in k.args] == [
        ("out", "ptr", 8),
        ("c", "i8", 1),
        ("s", "i16", 2),
        ("v", "bytes", 16),
        ("d", "f64", 8),
    ]
    v = np.array([1, 2, 3, 4], np.float32).tobytes()
    data = k.pack_args(0, -3, 700, v, 2.5)
    off = {a.name: a.offset for a in k.args}
    assert struct.unpack_from("<b", data, off["c"])[0] == -3
    assert struct.unpack_from("<h", data, off["s"])[0] == 700
    assert data[off["v"] : off["v"] + 16] == v
    assert struct.unpack_from("<d", data, off["d"])[0] == 2.5
    with pytest.raises(rocr.HsaError) as info:
        k.pack_args(0, 300, 0, v, 0.0)
    assert info.value.status == rocr.Status.ERROR_INVALID_ARGUMENT and "'c'" in info.value.message
    with pytest.raises(rocr.HsaError) as info:
        k.pack_args(0, 0, 0, b"\x00" * 8, 0.0)
    assert "16 bytes" in info.value.message
