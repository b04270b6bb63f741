"""OpenCL C kernels compiled with clang-15 at test time, loaded by the ROCr-style loader and
run by the gfx9 interpreter through rocr -> roct -> KFD -> CP -> dispatcher; every result
is compared with numpy (exactly where the math is exact, within ulps for ocml)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rocr

# The corpus lives with the examples (bench/isa_speed.py times two of its kernels).
CORPUS = (Path(__file__).resolve().parents[2] / "examples" / "kernels" / "corpus.cl").read_text()

SPILL = r"""
__kernel void spill(__global const int *in, __global int *out) {
  int tmp[8];
  int g = get_global_id(0);
  for (int i = 0; i < 8; i++) tmp[i] = in[g] * i;
  int s = 0;
  for (int i = 0; i < 8; i++) s += tmp[(i * 3 + g) & 7];
  out[g] = s;
}
"""

PRESETS = {"gfx900": "teaching", "gfx90a": "gfx90a"}
TARGETS = list(PRESETS)
_BUILT: dict[tuple[str, str, str], bytes] = {}  # one clang run per source, target, -O


@pytest.fixture
def build(compile_cl):
    def get(source: str, target: str, opt: str = "-O2") -> bytes:
        key = (source, target, opt)
        if key not in _BUILT:
            _BUILT[key] = compile_cl(source, mcpu=target, opt=opt).read_bytes()
        return _BUILT[key]

    return get


class Gpu:
    """A runtime on `target`'s preset with the corpus loaded."""

    def __init__(self, rt, blob: bytes) -> None:
        self.rt = rt
        self.exe = rt.load_code_object(blob)
        self.q = rt.gpus[0].create_queue(64)
        self.pool = rt.cpu.pools(fine_grained=True, kernarg=False)[0]

    def buf(self, data):
        data = np.ascontiguousarray(data)
        b = self.pool.allocate(max(data.nbytes, 4))
        self.rt.allow_access(self.rt.gpus, b)
        b.view(data.dtype, data.size)[:] = data.ravel()
        return b

    def run(self, name, grid, wg, *args):
        self.q.dispatch(self.exe.kernel(name), grid=grid, workgroup=wg, args=args).wait()


@pytest.fixture(params=TARGETS)
def gpu(request, build):
    target = request.param
    with rocr.init(preset=PRESETS[target]) as rt:
        yield Gpu(rt, build(CORPUS, target))


def _get(b, dtype, n):
    return b.view(dtype, n).copy()


def test_initial_state_gives_each_work_item_its_ids_in_a_3d_grid_with_partial_groups(gpu):
    grid, wg = (10, 6, 3), (4, 4, 2)
    n = grid[0] * grid[1] * grid[2]
    bo = gpu.buf(np.zeros(4 * n, np.uint32))
    gpu.run("ids", grid, wg, bo)
    out = _get(bo, np.uint32, 4 * n).reshape(grid[2], grid[1], grid[0], 4)
    z, y, x = np.meshgrid(*(np.arange(g) for g in grid[::-1]), indexing="ij")

    def pack(a, b, c):
        return a | b << 8 | c << 16

    np.testing.assert_array_equal(out[..., 0], pack(x % 4, y % 4, z % 2))  # v0..v2 / packed v0
    np.testing.assert_array_equal(out[..., 1], pack(x // 4, y // 4, z // 2))  # system SGPRs
    sizes = [np.minimum(w, g - (c // w) * w) for c, w, g in zip((x, y, z), wg, grid, strict=True)]
    np.testing.assert_array_equal(out[..., 2], pack(*sizes))  # partial groups: remainders
    np.testing.assert_array_equal(out[..., 3], pack(*grid))


def test_vector_add_with_a_partial_workgroup(gpu):
    n = 1000
    a = np.arange(n, dtype=np.float32) * 0.5
    b = np.linspace(-1, 1, n, dtype=np.float32)
    ba, bb, bc = gpu.buf(a), gpu.buf(b), gpu.buf(np.full(n + 24, 7, np.float32))
    gpu.run("vector_add", n, 256, ba, bb, bc, n)
    c = _get(bc, np.float32, n + 24)
    np.testing.assert_array_equal(c[:n], a + b)
    assert (c[n:] == 7).all(), "lanes past n stored nothing"


def test_saxpy(gpu):
    n = 300
    x = np.arange(n, dtype=np.float32)
    y = np.full(n, 2.0, np.float32)
    bx, by = gpu.buf(x), gpu.buf(y)
    gpu.run("saxpy", 320, 64, np.float32(3.0).item(), bx, by, n)
    np.testing.assert_array_equal(_get(by, np.float32, n), np.float32(3.0) * x + y)


def test_square_runs_only_the_lanes_of_existing_work_items(gpu):
    n = 500  # the last workgroup has 116 work-items: its second wave 52 lanes
    x = np.arange(-250, 262, dtype=np.int32)
    bi, bo = gpu.buf(x), gpu.buf(np.full(512, -7, np.int32))
    gpu.run("square", n, 128, bi, bo)  # no bounds check in the kernel: EXEC is the guard
    out = _get(bo, np.int32, 512)
    np.testing.assert_array_equal(out[:n], x[:n] * x[:n])
    assert (out[n:] == -7).all()


def test_stencil_2d(gpu):
    w, h = 40, 20
    img = (np.arange(w * h, dtype=np.float32) % 13).reshape(h, w)
    bi, bo = gpu.buf(img), gpu.buf(np.zeros((h, w), np.float32))
    gpu.run("stencil", (48, 24), (16, 8), bi, bo, w, h)
    want = img.copy()
    want[1:-1, 1:-1] = np.float32(0.25) * (
        img[:-2, 1:-1] + img[2:, 1:-1] + img[1:-1, :-2] + img[1:-1, 2:]
    )
    np.testing.assert_array_equal(_get(bo, np.float32, w * h).reshape(h, w), want)


def test_reduction_with_lds_and_barriers(gpu):
    groups = 6
    x = np.arange(256 * groups, dtype=np.int32) % 101 - 50
    bi, bo = gpu.buf(x), gpu.buf(np.zeros(groups, np.int32))
    gpu.run("reduce", 256 * groups, 256, bi, bo)
    np.testing.assert_array_equal(_get(bo, np.int32, groups), x.reshape(groups, 256).sum(1))


def test_tiled_matmul_with_lds(gpu):
    n = 32
    rng = np.random.default_rng(5)
    a = rng.integers(-4, 5, (n, n)).astype(np.float32)
    b = rng.integers(-4, 5, (n, n)).astype(np.float32)
    ba, bb, bc = gpu.buf(a), gpu.buf(b), gpu.buf(np.zeros((n, n), np.float32))
    gpu.run("matmul", (n, n), (16, 16), ba, bb, bc, n)
    np.testing.assert_array_equal(_get(bc, np.float32, n * n).reshape(n, n), a @ b)


def test_histogram_with_global_atomics(gpu):
    n, nbins = 1024, 10
    data = np.random.default_rng(3).integers(0, 1000, n).astype(np.uint32)
    bd, bb = gpu.buf(data), gpu.buf(np.zeros(nbins, np.uint32))
    gpu.run("histogram", n, 256, bd, bb, nbins)
    np.testing.assert_array_equal(_get(bb, np.uint32, nbins), np.bincount(data % nbins))


def test_prefix_scan(gpu):
    groups = 3
    x = np.arange(256 * groups, dtype=np.int32) % 7
    bi, bo = gpu.buf(x), gpu.buf(np.zeros(256 * groups, np.int32))
    gpu.run("scan", 256 * groups, 256, bi, bo)
    want = np.cumsum(x.reshape(groups, 256), axis=1).ravel()
    np.testing.assert_array_equal(_get(bo, np.int32, 256 * groups), want)


def _collatz(x: int) -> int:
    n = 0
    while x > 1:
        x = 3 * x + 1 if x & 1 else x // 2
        n += 1
    return n


def test_divergent_lane_loops(gpu):
    n = 256
    x = np.arange(1, n + 1, dtype=np.uint32)
    bi, bo = gpu.buf(x), gpu.buf(np.zeros(n, np.uint32))
    gpu.run("collatz", n, 64, bi, bo)
    np.testing.assert_array_equal(_get(bo, np.uint32, n), [_collatz(int(v)) for v in x])


def test_waves_diverge_at_scalar_branches_and_reconverge(gpu):
    n = 64 * 8
    bo = gpu.buf(np.zeros(n, np.int32))
    gpu.run("divergent", n, 128, bo)
    g = np.arange(n)
    want = np.zeros(n, np.int64)
    for i in range(n):
        trips = (g[i] // 128) * 3 + 1
        acc = sum(k ^ g[i] for k in range(trips))
        want[i] = -acc if g[i] & 1 else acc * 2
    np.testing.assert_array_equal(_get(bo, np.int32, n), want)


def test_integer_division_and_modulo(gpu):
    rng = np.random.default_rng(7)
    n = 256
    a = rng.integers(-(2**31), 2**31 - 1, n).astype(np.int32)
    b = rng.integers(-1000, 1000, n).astype(np.int32)
    b[b == 0] = 3
    b[:4] = [1, -1, 7, 2**31 - 1]
    bufs = [gpu.buf(a), gpu.buf(b)] + [gpu.buf(np.zeros(n, t)) for t in (np.int32,) * 2]
    uq = gpu.buf(np.zeros(n, np.uint32))
    gpu.run("divmod", n, 64, *bufs, uq)
    q = (np.abs(a.astype(np.int64)) // np.abs(b.astype(np.int64))) * np.sign(a) * np.sign(b)
    np.testing.assert_array_equal(_get(bufs[2], np.int32, n), q)
    np.testing.assert_array_equal(_get(bufs[3], np.int32, n), a - q * b)
    np.testing.assert_array_equal(_get(uq, np.uint32, n), a.view(np.uint32) // b.view(np.uint32))


def _trunc_div(x: int, y: int) -> int:
    """C's integer division: the quotient rounded toward zero."""
    q = abs(x) // abs(y)
    return q if (x < 0) == (y < 0) else -q


def test_64_bit_integer_math(gpu):
    rng = np.random.default_rng(11)
    n = 128
    a = rng.integers(-(2**62), 2**62, n, dtype=np.int64)
    b = rng.integers(-(2**40), 2**40, n, dtype=np.int64)
    b[b == 0] = 5
    b[:2] = [3, -7]
    ba, bb, bo = gpu.buf(a), gpu.buf(b), gpu.buf(np.zeros(4 * n, np.int64))
    gpu.run("int64", n, 64, ba, bb, bo)
    out = _get(bo, np.int64, 4 * n).reshape(n, 4)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(out[:, 0], a * b + (a >> 3))
    q = [_trunc_div(x, y) for x, y in zip(a.tolist(), b.tolist(), strict=True)]
    np.testing.assert_array_equal(out[:, 1], q)
    np.testing.assert_array_equal(out[:, 2], ((a.view(np.uint64) >> 7).view(np.int64)) ^ (b << 5))
    np.testing.assert_array_equal(out[:, 3], a - np.array(q, np.int64) * b)


def test_function_calls_through_swappc_and_setpc(gpu):
    def helper(x: int, y: int) -> int:
        t = [x * i + y for i in range(4)]
        return t[x & 3] + t[(y + 1) & 3]

    n = 128
    x = (np.arange(n, dtype=np.int32) * 7) % 23
    bi, bo = gpu.buf(x), gpu.buf(np.zeros(n, np.int32))
    gpu.run("calls", n, 64, bi, bo)
    want = [helper(int(x[g]), g) + helper(g, 3) for g in range(n)]
    np.testing.assert_array_equal(_get(bo, np.int32, n), want)


def _ulps(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    g = got.view(np.int32).astype(np.int64)
    w = want.astype(np.float32).view(np.int32).astype(np.int64)
    return np.abs(g - w)


def test_ocml_sqrt_exp_sin_within_ulps(gpu):
    n = 256
    x = np.linspace(0.01, 10.0, n, dtype=np.float32)
    bx = gpu.buf(x)
    outs = [gpu.buf(np.zeros(n, np.float32)) for _ in range(3)]
    gpu.run("mathf", n, 64, bx, *outs)
    x64 = x.astype(np.float64)
    s, e, sn = (_get(o, np.float32, n) for o in outs)
    # OpenCL C 1.2 section 7.4 (full profile): sqrt 3 ulp, exp 3 ulp, sin 4 ulp.
    assert _ulps(s, np.sqrt(x64)).max() <= 3
    assert _ulps(e, np.exp(x64)).max() <= 3
    assert _ulps(sn, np.sin(x64)).max() <= 4


def test_double_precision(gpu):
    n = 128
    x = np.linspace(0.5, 100.0, n)
    y = np.linspace(-3.0, 7.0, n)
    y[y == 0] = 1.0
    bx, by, bo = gpu.buf(x), gpu.buf(y), gpu.buf(np.zeros(n))
    gpu.run("dmath", n, 64, bx, by, bo)
    # Each operation correctly rounded (IEEE 754 double: *, /, sqrt), no contraction.
    np.testing.assert_array_equal(_get(bo, np.float64, n), x * y + x / y - np.sqrt(x))


@pytest.mark.parametrize("target", TARGETS)
def test_an_O0_build_spills_to_scratch(build, target):
    with rocr.init(preset=PRESETS[target]) as rt:
        g = Gpu(rt, build(SPILL, target, "-O0"))
        k = g.exe.kernel("spill")
        assert k.private_segment_size > 0, "-O0 keeps the private array in scratch"
        n = 128
        x = np.arange(n, dtype=np.int32) - 40
        bi, bo = g.buf(x), g.buf(np.zeros(n, np.int32))
        g.run("spill", n, 64, bi, bo)
        gi = np.arange(n)
        want = sum(x * ((i * 3 + gi) & 7) for i in range(8))
        np.testing.assert_array_equal(_get(bo, np.int32, n), want)


def _pasid(exe) -> int:
    return exe._alloc.mapping.pasid


def test_an_unknown_instruction_stops_the_queue_naming_mnemonic_pc_and_kernel(build):
    with rocr.init(preset="teaching") as rt:
        g = Gpu(rt, build(CORPUS, "gfx900"))
        k = g.exe.kernel("square")
        entry = k.kernel_object + k.code.kd.kernel_code_entry_byte_offset
        gpu = rt.system.gpus[0]
        s_rfe_b64 = 0xBE801F00  # SOP1 opcode 0x1f: a trap-handler return, not for kernels
        s_nop = 0xBF800000
        # In place of the first instruction (an 8-byte s_load_dword): s_rfe_b64; s_nop 0.
        patch = s_rfe_b64.to_bytes(4, "little") + s_nop.to_bytes(4, "little")
        gpu.memory.write(_pasid(g.exe), entry, patch)
        bi, bo = g.buf(np.arange(64, dtype=np.int32)), g.buf(np.zeros(64, np.int32))
        with pytest.raises(rocr.HsaError) as info:
            g.run("square", 64, 64, bi, bo)
        assert info.value.status == rocr.Status.ERROR_ILLEGAL_INSTRUCTION
        assert "(kernel square)" in info.value.message
        (err,) = gpu.queue_errors
        assert "s_rfe_b64" in err["message"]
        assert f"PC {entry:#x}" in err["message"] and "kernel square" in err["message"]
        assert (_get(bo, np.int32, 64) == 0).all(), "the workgroup stopped before its store"


def _guarded(g, page=4096):
    """A GPU-mapped page followed by one the GPU's page tables do not map."""
    inside = g.buf(np.arange(page // 4, dtype=np.float32))
    guard = g.pool.allocate(page)
    assert guard.address == inside.address + page
    return inside.address + page


@pytest.mark.parametrize("batch", [4096, 1])
def test_a_bad_pointer_faults_in_the_workgroup_that_uses_it(build, monkeypatch, batch):
    import hw_model.isa.program as program

    monkeypatch.setattr(program, "MAX_BATCH_WAVES", batch)  # 1: a wave per interpreter run
    with rocr.init(preset="teaching") as rt:
        g = Gpu(rt, build(CORPUS, "gfx900"))
        a = _guarded(g) - 256  # 64 floats, then the guard page
        bc = g.buf(np.zeros(128, np.float32))
        q = rt.gpus[0].create_queue(64, callback=lambda e, q: None)
        with pytest.raises(rocr.HsaError) as info:
            q.dispatch(g.exe.kernel("vector_add"), grid=128, workgroup=64,
                       args=(a, a, bc, 128)).wait()  # fmt: skip
        assert info.value.status == rocr.Status.ERROR_MEMORY_FAULT
        c = _get(bc, np.float32, 128)
        want = 2 * np.arange(1024 - 64, 1024, dtype=np.float32)
        np.testing.assert_array_equal(c[:64], want)  # workgroup 0 ran
        assert (c[64:] == 0).all()  # workgroup 1 faulted at its loads


def test_a_scalar_load_through_a_bad_pointer_faults_in_its_workgroup(build):
    with rocr.init(preset="teaching") as rt:
        g = Gpu(rt, build(CORPUS, "gfx900"))
        end = _guarded(g)
        p = end - 8  # two ints: workgroups 0 and 1 read inside, workgroup 2 the guard
        bo = g.buf(np.zeros(256, np.int32))
        q = rt.gpus[0].create_queue(64, callback=lambda e, q: None)
        with pytest.raises(rocr.HsaError) as info:
            q.dispatch(g.exe.kernel("uniform_load"), grid=256, workgroup=64,
                       args=(p, bo)).wait()  # fmt: skip
        assert info.value.status == rocr.Status.ERROR_MEMORY_FAULT
        out = _get(bo, np.int32, 256)
        inside = np.arange(1024, dtype=np.float32)[-2:].view(np.int32) + 1
        np.testing.assert_array_equal(out[:128], np.repeat(inside, 64))
        assert (out[128:] == 0).all()


def test_costs_come_from_the_instructions_that_ran(build, monkeypatch):
    from hw_model.isa.program import IsaKernel

    seen = []
    real = IsaKernel.execute

    def spy(self, *a, **kw):
        ex = real(self, *a, **kw)
        seen.append(ex)
        return ex

    monkeypatch.setattr(IsaKernel, "execute", spy)
    with rocr.init(preset="teaching") as rt:
        g = Gpu(rt, build(CORPUS, "gfx900"))
        n = 256
        ba, bb, bc = (g.buf(np.ones(n, np.float32)) for _ in range(3))
        g.run("vector_add", n, 64, ba, bb, bc, n)
        (ex,) = seen
        cost = ex.cost_of(0)
        assert (cost.load_bytes, cost.store_bytes) == (8, 4)  # two floats in, one out
        assert cost.vmem == 3 and cost.lds == 0
        # s_waitcnt lgkmcnt(0) twice (kernarg and dispatch packet loads), vmcnt(0) once
        assert cost.mem_rounds == 3
        assert cost.valu > 10 and cost.salu > 5
        assert ex.stats["instructions"]["vmem_load"] == 2 * 4  # 4 waves
        assert ex.stats["waves"] == 4 and ex.stats["lane_instructions"] > 0


def test_compiled_kernel_time_follows_where_its_buffers_live(build, monkeypatch):
    """The same compiled vector add over fine-grained host memory is bound by the host link,
    over VRAM by the memory: marginal rates between two grids, as the built-in kernel's test
    (test_timing_effects); without tracing, so the batched model may apply (it must not batch
    a kernel with host bytes, known only once its code ran)."""
    from hw_model.config import system_spec

    monkeypatch.setenv("HSAEMU_TIMING_MODEL", "batched")
    with rocr.init(spec=system_spec("gfx900", trace=False)) as rt:
        g = Gpu(rt, build(CORPUS, "gfx900"))
        spec = rt.system.spec.gpu
        link = rt.system.gpus[0].host_link
        vram = rt.gpus[0].pools()[0]
        rates = {}
        for where in ("host", "vram"):
            times = {}
            for wgs in (1000, 2000):  # the GPU full and more: the memory's roof, not latency
                n = wgs * 256
                a, b = np.arange(n, dtype=np.float32), np.full(n, 0.5, np.float32)
                bufs = [g.buf(a), g.buf(b), g.buf(np.zeros(n, np.float32))]
                if where == "vram":
                    host_bufs, bufs = bufs, [vram.allocate(4 * n) for _ in bufs]
                    for d, h in zip(bufs, host_bufs, strict=True):
                        rt.memory_copy(d, h, 4 * n)
                moved = link.bytes_moved
                h = g.q.dispatch(g.exe.kernel("vector_add"), grid=n, workgroup=256,
                                 args=(*bufs, n)).wait()  # fmt: skip
                assert link.bytes_moved - moved == (12 * n if where == "host" else 0)
                start, end = h.dispatch_time()
                times[wgs] = end - start
                if where == "vram":
                    rt.memory_copy(host_bufs[2], bufs[2], 4 * n)
                    bufs = host_bufs
                np.testing.assert_array_equal(_get(bufs[2], np.float32, n), a + b)
            rates[where] = 1000 * 256 * 12 / (times[2000] - times[1000])  # bytes/ns = GB/s
        assert 0.9 * spec.link_bandwidth_gbps < rates["host"] <= 1.1 * spec.link_bandwidth_gbps
        assert 0.9 * spec.memory_bandwidth_gbps < rates["vram"] <= 1.1 * spec.memory_bandwidth_gbps


PICK = r"""
__kernel void pick(__global const float *x, __global const float *y, __global float *out) {
  size_t i = get_global_id(0);
  __global const float *p = (i & 1) ? x : y;  /* one load: odd lanes read x, even lanes y */
  out[i] = p[i];
}
"""


def test_a_load_whose_lanes_read_host_memory_and_vram_sends_only_the_host_lanes_over_the_link(
    build,
):
    with rocr.init(preset="teaching") as rt:
        g = Gpu(rt, build(PICK, "gfx900"))
        n = 1024
        x, y = np.arange(n, dtype=np.float32), -np.arange(n, dtype=np.float32)
        bx = g.buf(x)  # fine-grained host memory
        vram = rt.gpus[0].pools()[0]
        by, bo = vram.allocate(4 * n), vram.allocate(4 * n)
        rt.memory_copy(by, g.buf(y), 4 * n)
        link = rt.system.gpus[0].host_link
        moved = link.bytes_moved
        g.run("pick", n, 256, bx, by, bo)
        assert link.bytes_moved - moved == 4 * n // 2  # the odd lanes' loads; the rest is VRAM
        out = g.buf(np.zeros(n, np.float32))
        rt.memory_copy(out, bo, 4 * n)
        np.testing.assert_array_equal(_get(out, np.float32, n), np.where(np.arange(n) & 1, x, y))
