"""The gfx9 decoder against LLVM's disassembler (llvm-objdump-15), the oracle."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess

import pytest

from hw_model.isa.decoder import DecodeError, decode, decode_one, opcode_table
from hw_model.isa.disasm import format_instruction, operands
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

_LINE = re.compile(r"\t(\S+)(.*?)\s*// ([0-9A-F]+): ((?:[0-9A-F]{8} ?)+)")


def _objdump(path, mcpu: str) -> list[tuple[int, str, int, str]]:
    """(address, mnemonic, dwords, whole text) of every instruction llvm-objdump-15 prints;
    the text is whitespace-normalised and stops before the `//` comment (encoding, and the
    `<kernel+0x..>` symbolized branch target objdump appends there)."""
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
            text = " ".join((m.group(1) + m.group(2)).split())
            rows.append((int(m.group(3), 16), m.group(1), len(m.group(4).split()), text))
    return rows


@pytest.mark.parametrize(("mcpu", "opt"), [("gfx900", "-O2"), ("gfx90a", "-O2"), ("gfx900", "-O0")])
def test_every_corpus_instruction_decodes_and_prints_as_llvm_prints_it(compile_cl, mcpu, opt):
    """Mnemonic, length, and the whole text (operands included) of every instruction equal
    llvm-objdump-15's: no instruction family is exempt."""
    path = compile_cl(CORPUS, mcpu=mcpu, opt=opt)
    co = parse_code_object(path.read_bytes())
    text = co.image.section(".text")
    mine = {i.pc: i for i in decode(co.image.section_bytes(text), mcpu, text.addr)}
    theirs = _objdump(path, mcpu)
    assert len(theirs) > 300
    wrong = [
        (hex(pc), name, n, mine[pc].mnemonic if pc in mine else None)
        for pc, name, n, _ in theirs
        if pc not in mine or mine[pc].mnemonic != name or len(mine[pc].words) != n
    ]
    assert not wrong, wrong[:20]
    # Every instruction llvm printed is one the decoder found, and nothing in between.
    assert sorted(mine) == [pc for pc, _, _, _ in theirs]
    wrong = [
        (hex(pc), want, format_instruction(mine[pc], mcpu))
        for pc, _, _, want in theirs
        if " ".join(format_instruction(mine[pc], mcpu).split()) != want
    ]
    matched = len(theirs) - len(wrong)
    assert not wrong, f"{matched}/{len(theirs)} match; first differences: {wrong[:20]}"


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


# Words and the text LLVM prints for them: lines of llvm-objdump-15 over the corpus and, for
# modifiers the corpus lacks, llvm-mc-15 -disassemble; they check operand printing where the
# toolchain is absent. (target, words, text)
KNOWN_TEXT = [
    ("gfx900", "C00201C2 00000024", "s_load_dword s7, s[4:5], 0x24"),
    ("gfx900", "c0024082 0e000010", "s_load_dword s2, s[4:5], s7 offset:0x10"),
    ("gfx900", "8607FF07 0000FFFF", "s_and_b32 s7, s7, 0xffff"),
    ("gfx900", "8120FF20 FFFFFE00", "s_add_i32 s32, s32, 0xfffffe00"),
    ("gfx900", "BE8700F2", "s_mov_b32 s7, 1.0"),
    ("gfx900", "be8000ff 3e22f983", "s_mov_b32 s0, 0.15915494"),
    ("gfx900", "858480C1", "s_cselect_b64 s[4:5], -1, 0"),
    ("gfx900", "80660F0A", "s_add_u32 flat_scratch_lo, s10, s15"),
    ("gfx900", "BF8C0000", "s_waitcnt vmcnt(0) expcnt(0) lgkmcnt(0)"),
    ("gfx900", "BF8C0F70", "s_waitcnt vmcnt(0)"),
    ("gfx900", "BF84FF98", "s_cbranch_scc0 65432"),
    ("gfx900", "b8860801", "s_getreg_b32 s6, hwreg(HW_REG_MODE, 0, 2)"),
    ("gfx900", "b9060801", "s_setreg_b32 hwreg(HW_REG_MODE, 0, 2), s6"),
    ("gfx900", "bf900022", "s_sendmsg sendmsg(MSG_GS, GS_OP_EMIT, 0)"),
    ("gfx900", "38020280", "v_addc_co_u32_e32 v1, vcc, 0, v1, vcc"),
    ("gfx900", "7DD80000", "v_cmp_gt_u64_e32 vcc, s[0:1], v[0:1]"),
    ("gfx900", "D11C0402 00120501", "v_addc_co_u32_e64 v2, s[4:5], v1, v2, s[4:5]"),
    ("gfx900", "D1E80400 041A0B02", "v_mad_u64_u32 v[0:1], s[4:5], v2, v5, v[6:7]"),
    ("gfx900", "D1E16A0C 03CA0CF2", "v_div_scale_f64 v[12:13], vcc, 1.0, v[6:7], 1.0"),
    ("gfx900", "D28F0005 00020604", "v_lshlrev_b64 v[5:6], s4, v[3:4]"),
    ("gfx900", "D2890004 00010109", "v_readlane_b32 s4, v9, 0"),
    ("gfx900", "D100000E 00121CC1", "v_cndmask_b32_e64 v14, -1, v14, s[4:5]"),
    ("gfx900", "D04E0100 00000103", "v_cmp_nlt_f32_e64 s[0:1], |v3|, s0"),
    ("gfx900", "D1CC0014 23CA1908", "v_fma_f64 v[20:21], -v[8:9], v[12:13], 1.0"),
    ("gfx900", "d1010301 60000503", "v_add_f32_e64 v1, -|v3|, -|s2|"),
    ("gfx900", "d1028001 18020503", "v_sub_f32_e64 v1, v3, v2 clamp div:2"),
    ("gfx900", "d1cb0001 4c0a0503", "v_fma_f32 v1, v3, -v2, v2 mul:2"),
    ("gfx900", "7e0002ff 0000ff00", "v_mov_b32_e32 v0, 0xff00"),
    (
        "gfx900",
        "0200f2f9 06050600",
        "v_add_f32_sdwa v0, v0, v121 dst_sel:DWORD dst_unused:UNUSED_PAD src0_sel:WORD_1"
        " src1_sel:DWORD",
    ),
    ("gfx900", "7e0202fa ff011b00", "v_mov_b32_dpp v1, v0 row_shr:11 row_mask:0xf bank_mask:0xf"),
    (
        "gfx900",
        "7e0202fa f1082100",
        "v_mov_b32_dpp v1, v0 quad_perm:[1,0,2,0] row_mask:0xf bank_mask:0x1 bound_ctrl:1",
    ),
    ("gfx900", "D86E0504 0B000006", "ds_read2_b32 v[11:12], v6 offset0:4 offset1:5"),
    ("gfx900", "d86c0010 01000000", "ds_read_b32 v1, v0 offset:16"),
    ("gfx900", "DD098000 007F0200", "global_atomic_add v0, v[0:1], v2, off glc"),
    ("gfx900", "DC488004 01060000", "global_load_ushort v1, v0, s[6:7] offset:4"),
    ("gfx900", "dc5a8000 007f0000", "global_load_dwordx3 v[0:2], v[0:1], off slc"),
    ("gfx900", "E0700034 21000400", "buffer_store_dword v4, off, s[0:3], s33 offset:52"),
    ("gfx900", "e0501010 80030204", "buffer_load_dword v2, v4, s[12:15], 0 offen offset:16"),
    ("gfx90a", "d3c08000 04020500", "v_mfma_f32_32x32x1f32 a[0:31], v0, v2, a[0:31]"),
    (
        "gfx90a",
        "d3b00002 1c020504",
        "v_pk_fma_f32 v[2:3], v[4:5], v[2:3], v[0:1] op_sel_hi:[1,1,0]",
    ),
    ("gfx90a", "dc528000 017f0002", "global_load_dword v1, v[2:3], off slc"),
    ("gfx90a", "d3d84000 18000101", "v_accvgpr_read_b32 v0, a1"),
    ("gfx90a", "d3d94000 180000c1", "v_accvgpr_write_b32 a0, -1"),
]


def _words(text: str) -> bytes:
    return b"".join(int(w, 16).to_bytes(4, "little") for w in text.split())


@pytest.mark.parametrize(("target", "words", "text"), KNOWN_TEXT, ids=[k[2] for k in KNOWN_TEXT])
def test_known_words_print_as_llvm_prints_them(target, words, text):
    ins = decode_one(_words(words), 0, target)
    assert format_instruction(ins, target) == text
    assert operands(ins, target) == text.partition(" ")[2]


# Families llvm-mc prints and the printer does not (none is what compilers emit for compute
# kernels): graphics interpolation, gfx940 MFMA accumulators and hardware registers, and
# register combinations LLVM itself rejects ("/*invalid immediate*/").
SWEEP_GAPS = re.compile(r"^v_interp_|^v_madmk_f16|^(v_mfma|v_smfmac|s_getreg|s_setreg|buffer_wb)")
SWEEP_SAMPLES = int(os.environ.get("HSAEMU_ISA_SWEEP", "1"))


def _sweep_words(target: str, rnd: random.Random) -> list:
    """SWEEP_SAMPLES instructions per opcode of every encoding, operand fields random
    (registers, inline constants, literals, SDWA/DPP dwords with valid selects)."""
    from hw_model.isa.encodings import ENCODINGS, FLAT_SEGMENTS

    def source(bits9: bool) -> int:
        pool = [106, 126, 124, 102, 108, 128, 129, 192, 193, 208, 240, 242, 247, 248, 255]
        r = rnd.random()
        if r < 0.4:
            return 256 + rnd.randrange(256) if bits9 else rnd.randrange(102)
        return rnd.randrange(102) if r < 0.6 else rnd.choice(pool)

    out = []
    for enc, ops in opcode_table(target).items():
        e = ENCODINGS["FLAT" if enc in FLAT_SEGMENTS.values() else enc]
        for op in ops:
            for _ in range(SWEEP_SAMPLES):
                bits = rnd.getrandbits(32 * e.dwords) & ~e.mask | e.value
                lo, w = e.op
                bits = bits & ~(((1 << w) - 1) << lo) | op << lo
                if enc in FLAT_SEGMENTS.values():
                    seg = {v: k for k, v in FLAT_SEGMENTS.items()}[enc]
                    bits = bits & ~(3 << 14) | seg << 14 | (0x7F << 48) * (rnd.random() < 0.5)
                for name in ("src0", "src1", "src2", "ssrc0", "ssrc1"):
                    if name in e.fields:
                        flo, fw = e.fields[name]
                        v = source(fw == 9)
                        if name == "src0" and e.sdwa_dpp and rnd.random() < 0.2:
                            v = rnd.choice([0xF9, 0xFA])
                        bits = bits & ~(((1 << fw) - 1) << flo) | v << flo
                words = [(bits >> (32 * i)) & 0xFFFFFFFF for i in range(e.dwords)]
                extra = rnd.choice([rnd.getrandbits(32), 0x3F800000, 5, 0xFFFFFFF0])
                if (words[0] & 0x1FF) == 0xF9 and e.sdwa_dpp:  # valid SDWA selects only
                    extra = extra & 0x80B0E000 | rnd.randrange(7) << 8 | rnd.randrange(3) << 11
                    extra |= rnd.randrange(7) << 16 | rnd.randrange(7) << 24 | rnd.randrange(256)
                ins = decode_one(_words(" ".join(f"{x:08x}" for x in [*words, extra])), 0, target)
                # (llvm-mc-15 crashes on some random MFMA register tuples)
                if ins.mnemonic is not None and not SWEEP_GAPS.match(ins.mnemonic):
                    out.append(ins)
    return out


@pytest.mark.parametrize("target", ["gfx900", "gfx90a", "gfx942"])
def test_every_opcode_prints_as_llvm_mc_prints_it(target):
    """Beyond the corpus: random operands for every opcode of every encoding, against
    llvm-mc-15 -disassemble (the same printer as llvm-objdump). HSAEMU_ISA_SWEEP=N samples
    N instructions per opcode (default 1)."""
    if shutil.which("llvm-mc-15") is None:
        pytest.skip("AMDGPU toolchain not installed: llvm-mc-15 (Debian llvm-15)")
    cands = _sweep_words(target, random.Random(12))
    sentinel = 0xBF810000  # s_endpgm after each candidate: llvm-mc drops what it refuses

    def line(words) -> str:
        return ",".join(f"{b:#04x}" for w in words for b in w.to_bytes(4, "little"))

    # [...]: llvm-mc decodes the bytes as one instruction or drops them all.
    text = "\n".join(f"[{line(i.words)}]\n[{line([sentinel])}]" for i in cands)
    out = subprocess.run(
        [
            "llvm-mc-15",
            "-arch=amdgcn",
            f"-mcpu={ {'gfx942': 'gfx940'}.get(target, target) }",
            "-disassemble",
            "-show-encoding",
        ],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    ).stdout  # fmt: skip (exit status 1: it warns of each encoding it refuses)
    # The lines before each sentinel are the candidate's: none if llvm-mc refused it, more
    # than one if it read a shorter instruction there.
    groups: list[list[tuple[str, int]]] = [[]]
    for ln in out.splitlines():
        asm, _, enc = ln.partition("; encoding: [")
        if enc.startswith(line([sentinel])):
            groups.append([])
        elif enc:
            groups[-1].append((" ".join(asm.split()), enc.count(",") + 1))
    assert len(groups) == len(cands) + 1
    compared, wrong = 0, []
    for ins, group in zip(cands, groups, strict=False):
        if not group:
            continue
        want, size = group[0]
        if size != ins.size or want.split()[0] != ins.mnemonic or "/*invalid" in want:
            continue
        if not SWEEP_GAPS.match(want):
            compared += 1
            got = format_instruction(ins, target)
            if " ".join(got.split()) != want:
                wrong.append((" ".join(f"{w:08x}" for w in ins.words), want, got))
    assert compared > 0.4 * len(cands), (compared, len(cands))
    assert not wrong, f"{len(wrong)} of {compared} differ: {wrong[:10]}"


def test_any_words_print_without_raising():
    rnd = random.Random(3)
    for target in ("gfx900", "gfx90a", "gfx942"):
        for _ in range(3000):
            try:
                ins = decode_one(rnd.getrandbits(96).to_bytes(12, "little"), 0, target)
            except DecodeError:
                continue
            assert format_instruction(ins, target).startswith(ins.mnemonic or "<")


def test_kernels_disasm_prints_operands(compile_cl, capsys, monkeypatch):
    from rocr.cli import main

    monkeypatch.delenv("HSAEMU_PRESET", raising=False)
    path = compile_cl(CORPUS.split("#define")[0])
    assert main(["kernels", str(path), "--disasm"]) == 0
    out = capsys.readouterr().out
    assert "s_load_dword s7, s[4:5], 0x24" in out
    assert "global_load_dword v2, v[2:3], off" in out and "// DC508000 027F0002" in out
    assert "s_waitcnt lgkmcnt(0)" in out
    assert main(["kernels", str(path), "--disasm", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    listing = next(k for k in doc["kernels"] if k["name"] == "square")["disassembly"]
    assert listing[0] == {
        "pc": listing[0]["pc"],
        "mnemonic": "s_load_dword",
        "operands": "s7, s[4:5], 0x24",
        "words": ["C00201C2", "00000024"],
    }
    assert (listing[-1]["mnemonic"], listing[-1]["operands"]) == ("s_endpgm", "")


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
