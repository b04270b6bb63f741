"""The gfx9 decoder against LLVM's disassembler (llvm-objdump-15), the oracle."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from hw_model.isa.decoder import decode, decode_one, opcode_table
from hw_model.isa.opcodes import ROWS
from rocr.loader import parse_code_object

# The corpus kernels: what the interpreter will have to run.
CORPUS = r"""
__kernel void square(__global float *out, __global const float *in, uint n) {
  size_t i = get_global_id(0); if (i < n) out[i] = in[i] * in[i];
}
__kernel void stencil(__global float *out, __global const float *in, int w, int h) {
  int x = get_global_id(0), y = get_global_id(1);
  if (x > 0 && y > 0 && x < w - 1 && y < h - 1)
    out[y * w + x] = 0.25f * (in[y * w + x - 1] + in[y * w + x + 1]
                              + in[(y - 1) * w + x] + in[(y + 1) * w + x]);
}
__kernel void reduce(__global float *out, __global const float *in, __local float *tmp) {
  size_t l = get_local_id(0);
  tmp[l] = in[get_global_id(0)];
  barrier(CLK_LOCAL_MEM_FENCE);
  for (size_t s = get_local_size(0) / 2; s > 0; s >>= 1) {
    if (l < s) tmp[l] += tmp[l + s];
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  if (l == 0) out[get_group_id(0)] = tmp[0];
}
#define T 16
__kernel void matmul(__global float *c, __global const float *a, __global const float *b, int n) {
  __local float as[T][T], bs[T][T];
  int tx = get_local_id(0), ty = get_local_id(1);
  int row = get_global_id(1), col = get_global_id(0);
  float acc = 0;
  for (int t = 0; t < n / T; t++) {
    as[ty][tx] = a[row * n + t * T + tx];
    bs[ty][tx] = b[(t * T + ty) * n + col];
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int k = 0; k < T; k++) acc += as[ty][k] * bs[k][tx];
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  c[row * n + col] = acc;
}
__kernel void histogram(__global uint *bins, __global const uint *in, uint nbins) {
  atomic_inc(&bins[in[get_global_id(0)] % nbins]);
}
__kernel void scan(__global int *out, __global const int *in, __local int *t) {
  int l = get_local_id(0), n = get_local_size(0);
  t[l] = in[get_global_id(0)];
  for (int o = 1; o < n; o <<= 1) {
    barrier(CLK_LOCAL_MEM_FENCE);
    int v = l >= o ? t[l - o] : 0;
    barrier(CLK_LOCAL_MEM_FENCE);
    t[l] += v;
  }
  out[get_global_id(0)] = t[l];
}
__kernel void divergent(__global int *out, __global const int *in) {
  int i = get_global_id(0), v = in[i], r = 0;
  if (v & 1) { for (int k = 0; k < v; k++) r += k * v; }
  else { while (v > 1) { v = v / 2; r++; } }
  out[i] = r;
}
__kernel void intdiv(__global int *q, __global uint *r, __global const int *a,
                     __global const int *b) {
  int i = get_global_id(0); q[i] = a[i] / b[i]; r[i] = (uint)a[i] % (uint)b[i];
}
__kernel void int64(__global long *out, __global const long *a, __global const ulong *b) {
  int i = get_global_id(0);
  out[i] = a[i] * (long)b[i] + (a[i] >> 3) - (long)(b[i] / 7u) + (a[i] % 11);
}
__kernel void mathf(__global float *out, __global const float *in) {
  int i = get_global_id(0); float x = in[i]; out[i] = sqrt(x) + exp(x) + sin(x);
}
__kernel void dbl(__global double *out, __global const double *in) {
  int i = get_global_id(0); double x = in[i]; out[i] = x * x + 1.0 / (x + 3.0) + sqrt(x);
}
"""

_LINE = re.compile(r"\t(\S+).*// ([0-9A-F]+): ((?:[0-9A-F]{8} ?)+)")


def _objdump(path, mcpu: str) -> list[tuple[int, str, int]]:
    """(address, mnemonic, dwords) of every instruction llvm-objdump-15 prints."""
    if shutil.which("llvm-objdump-15") is None:
        pytest.skip("AMDGPU toolchain not installed: llvm-objdump-15 (Debian llvm-15)")
    out = subprocess.run(
        ["llvm-objdump-15", "-d", f"--mcpu={mcpu}", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = []
    for line in out.splitlines():
        m = _LINE.match(line)
        if m:
            rows.append((int(m.group(2), 16), m.group(1), len(m.group(3).split())))
    return rows


@pytest.mark.parametrize(("mcpu", "opt"), [("gfx900", "-O2"), ("gfx90a", "-O2"), ("gfx900", "-O0")])
def test_every_corpus_instruction_decodes_as_llvm_prints_it(compile_cl, mcpu, opt):
    path = compile_cl(CORPUS, mcpu=mcpu, opt=opt)
    co = parse_code_object(path.read_bytes())
    text = co.image.section(".text")
    mine = {i.pc: i for i in decode(co.image.section_bytes(text), mcpu, text.addr)}
    theirs = _objdump(path, mcpu)
    assert len(theirs) > 300
    wrong = [
        (hex(pc), name, n, mine[pc].mnemonic if pc in mine else None)
        for pc, name, n in theirs
        if pc not in mine or mine[pc].mnemonic != name or len(mine[pc].words) != n
    ]
    assert not wrong, wrong[:20]
    # Every instruction llvm printed is one the decoder found, and nothing in between.
    assert sorted(mine) == [pc for pc, _, _ in theirs]


# Words from vector_add (clang-15 -O2 -mcpu=gfx900) and what llvm-objdump-15 prints for them;
# they check the decoder where the toolchain is absent.
KNOWN = [
    ([0xC00201C2, 0x0000002C], "s_load_dword", "SMEM"),
    ([0xBE810080], "s_mov_b32", "SOP1"),
    ([0xBF8CC07F], "s_waitcnt", "SOPP"),
    ([0x8607FF07, 0x0000FFFF], "s_and_b32", "SOP2"),  # with a literal
    ([0x68000006], "v_add_u32_e32", "VOP2"),
    ([0x7E020203], "v_mov_b32_e32", "VOP1"),
    ([0x7DD80000], "v_cmp_gt_u64_e32", "VOPC"),
    ([0xBE80206A], "s_and_saveexec_b64", "SOP1"),
    ([0xBF880018], "s_cbranch_execz", "SOPP"),
    ([0xD28F0000, 0x00020082], "v_lshlrev_b64", "VOP3"),
    ([0xDC508000, 0x067F0004], "global_load_dword", "GLOBAL"),
    ([0xDC708000, 0x007F0200], "global_store_dword", "GLOBAL"),
    ([0xBF810000], "s_endpgm", "SOPP"),
]


@pytest.mark.parametrize(("words", "mnemonic", "encoding"), KNOWN, ids=[k[1] for k in KNOWN])
def test_known_words_decode(words, mnemonic, encoding):
    code = b"".join(w.to_bytes(4, "little") for w in words)
    ins = decode_one(code, 0, "gfx900")
    assert (ins.mnemonic, ins.encoding, ins.size) == (mnemonic, encoding, 4 * len(words))


def test_the_table_has_one_row_per_instruction_and_targets_differ_where_llvm_says():
    keys = [(r[0], r[1]) for r in ROWS]
    assert len(keys) == len(set(keys))
    for target in ("gfx900", "gfx90a", "gfx942"):
        t = opcode_table(target)
        for enc in ("SOP1", "SOP2", "SOPK", "SOPC", "SOPP", "SMEM", "VOP1", "VOP2", "VOP3"):
            assert t[enc], (target, enc)
        assert {"VOPC", "DS", "GLOBAL", "FLAT", "SCRATCH", "MUBUF"} <= set(t)
    # gfx90a adds packed FP32 and FP64 atomics; gfx900 has neither.
    assert "v_pk_fma_f32" in opcode_table("gfx90a")["VOP3P"].values()
    assert "v_pk_fma_f32" not in opcode_table("gfx900")["VOP3P"].values()


def test_an_opcode_the_target_lacks_has_no_mnemonic():
    # VOP3P opcode of v_pk_fma_f32 (gfx90a) on gfx900
    op = next(r[3] for r in ROWS if r[1] == "v_pk_fma_f32")
    word = 0xD3800000 | (op << 16)
    ins = decode_one(word.to_bytes(4, "little") + bytes(4), 0, "gfx900")
    assert ins.mnemonic is None and ins.encoding == "VOP3P" and ins.opcode == op
    assert "VOP3P opcode" in str(ins)
