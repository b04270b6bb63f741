"""Copies through the whole stack: rocr's blits -> SDMA queues (or blit kernels) -> engines."""

from __future__ import annotations

import numpy as np
import pytest

import rocr
from rocr import HsaError, Status

N = 4096  # floats


@pytest.fixture
def rt(request):
    # traced only for the tests that read the trace (marked), as rocr.init() is untraced
    with rocr.init(
        preset="teaching", trace=request.node.get_closest_marker("trace") is not None
    ) as r:
        yield r


def host(rt, nbytes, gpu=True):
    buf = rt.cpu.pools(fine_grained=True)[0].allocate(nbytes)
    if gpu:
        rt.allow_access(rt.gpus, buf)
    return buf


def vram(rt, nbytes):
    return rt.gpus[0].pools()[0].allocate(nbytes)


def sdma_names(rt):
    return [
        e["name"]
        for e in rt.system.tracer.to_chrome()["traceEvents"]
        if e.get("cat") == "sdma" and e.get("ph") == "X"
    ]


@pytest.mark.trace
def test_vram_round_trip_through_lazily_created_sdma_queues(rt):
    gpu = rt.gpus[0]
    src, dst, dev = host(rt, 4 * N), host(rt, 4 * N), vram(rt, 4 * N)
    src.view(np.float32)[:] = np.arange(N, dtype=np.float32)
    assert rt.runlist()[0]["sdma_queues"] == []  # no SDMA queue before the first copy
    h = rt.memory_async_copy(dev, gpu, src, rt.cpu, 4 * N)
    assert h.engine == "sdma"
    h.wait()
    assert [q["type"] for q in rt.runlist()[0]["sdma_queues"]] == ["sdma"]
    rt.memory_async_copy(dst, rt.cpu, dev, gpu, 4 * N).wait()
    assert (dst.view(np.float32) == np.arange(N)).all()
    # one queue per direction, as ROCr's BlitHostToDev / BlitDevToHost
    assert len(rt.runlist()[0]["sdma_queues"]) == 2
    names = sdma_names(rt)
    assert names.count("COPY_LINEAR") == 2
    assert "ATOMIC" in names and "FENCE" in names and "TRAP" in names  # interrupt signal
    # the TRAP's interrupt carries the signal's event id up to the KFD (SOC15_INTSRC_SDMA_TRAP)
    irqs = [
        e["args"]
        for e in rt.system.tracer.to_chrome()["traceEvents"]
        if e["name"] == "interrupt signal_event" and "sdma" in e.get("args", {})
    ]
    assert irqs[0]["event_id"] == h.signal.event.EventId


def test_memory_copy_and_fill_make_vram_readable_and_fillable(rt):
    dev = vram(rt, 4 * N)
    out = host(rt, 4 * N, gpu=False)  # hsa_memory_copy locks it for the copy only
    rt.memory_fill(dev, np.float32(2.5).view(np.uint32), N)
    rt.memory_copy(out, dev, 4 * N)
    assert (out.view(np.float32) == 2.5).all()
    rt.memory_fill(out, 7, N)  # system memory: filled by the host
    assert (out.view(np.uint32) == 7).all()
    with pytest.raises(HsaError, match=r"rt.memory_copy\(dst, src, size\)"):
        dev.view()


@pytest.mark.trace
def test_copy_waits_for_its_dependency_signals(rt):
    gpu = rt.gpus[0]
    src, dev = host(rt, 4 * N), vram(rt, 4 * N)
    back = host(rt, 4 * N)
    src.view(np.uint32)[:] = 9
    dep = rt.create_signal(1)
    first = rt.memory_async_copy(dev, gpu, src, rt.cpu, 4 * N, deps=[dep])
    first.wait(timeout_ns=200_000)
    assert not first.done()  # POLL_REGMEM holds the queue
    assert "POLL_REGMEM waits" in [e["name"] for e in rt.system.tracer.to_chrome()["traceEvents"]]
    dep.store(0)
    first.wait()
    # and a copy ordered after the first through its completion signal
    rt.memory_async_copy(back, rt.cpu, dev, gpu, 4 * N, deps=[first.signal]).wait()
    assert (back.view(np.uint32) == 9).all()


def test_hsa_enable_sdma_0_uses_blit_kernels(rt, monkeypatch):
    monkeypatch.setenv("HSA_ENABLE_SDMA", "0")
    gpu = rt.gpus[0]
    src, dev, back = host(rt, 4 * N), vram(rt, 4 * N), host(rt, 4 * N)
    src.view(np.float32)[:] = np.arange(N, dtype=np.float32)
    dep = rt.create_signal(0)
    h = rt.memory_async_copy(dev, gpu, src, rt.cpu, 4 * N, deps=[dep])
    assert h.engine == "blit kernel"
    h.wait()
    rt.memory_async_copy(back, rt.cpu, dev, gpu, 4 * N).wait()
    assert (back.view(np.float32) == np.arange(N)).all()
    assert rt.runlist()[0]["sdma_queues"] == []
    kernels = [k["name"] for k in rt.system.gpus[0].kernel_records]
    assert kernels.count("copy_buffer") == 2


def test_device_to_device_copies_are_blit_kernels(rt):
    gpu = rt.gpus[0]
    a, b, out = vram(rt, 4 * N), vram(rt, 4 * N), host(rt, 4 * N)
    rt.memory_fill(a, 5, N)
    h = rt.memory_async_copy(b, gpu, a, gpu, 4 * N)
    assert h.engine == "blit kernel"
    h.wait()
    rt.memory_copy(out, b, 4 * N)
    assert (out.view(np.uint32) == 5).all()


def test_third_process_falls_back_to_blit_kernels_when_no_sdma_queue_is_left(rt):
    others = [rocr.init(system=rt.system) for _ in range(2)]
    try:
        engines = []
        for r in [rt, *others]:
            gpu = r.gpus[0]
            src, dev, back = host(r, 4096), vram(r, 4096), host(r, 4096)
            src.view(np.uint32)[:] = 3
            h1 = r.memory_async_copy(dev, gpu, src, r.cpu, 4096)
            h1.wait()
            h2 = r.memory_async_copy(back, r.cpu, dev, gpu, 4096)
            h2.wait()
            assert (back.view(np.uint32) == 3).all()
            engines.append((h1.engine, h2.engine))
        # teaching: 2 SDMA engines x 2 queues; each process takes one per direction
        assert engines == [("sdma", "sdma"), ("sdma", "sdma"), ("blit kernel", "blit kernel")]
        assert len(rt.runlist()[0]["sdma_queues"]) == 4
    finally:
        for r in others:
            r.shutdown()


def test_copy_time_is_setup_plus_bytes_over_the_link(rt):
    spec = rt.system.spec.gpu
    gpu = rt.gpus[0]
    n = 1 << 20
    src, dev = host(rt, n), vram(rt, n)
    rt.profiling_async_copy_enable(True)
    h = rt.memory_async_copy(dev, gpu, src, rt.cpu, n).wait()
    start, end = rt.async_copy_time(h.signal)
    link_ns = n / spec.link_bandwidth_gbps  # GB/s = bytes per ns
    assert spec.link_bandwidth_gbps < spec.sdma_bandwidth_gbps  # the link bounds it
    assert end - start == pytest.approx(link_ns, rel=0.10)
    # two copies at once share the link: together they take about twice as long
    dev2, src2 = vram(rt, n), host(rt, n)
    t0 = rt.now_ns
    h1 = rt.memory_async_copy(dev, gpu, src, rt.cpu, n)
    h2 = rt.memory_async_copy(src2, rt.cpu, dev2, gpu, n)
    h1.wait()
    h2.wait()
    s1, e1 = rt.async_copy_time(h1.signal)
    s2, e2 = rt.async_copy_time(h2.signal)
    assert max(e1, e2) - min(s1, s2) == pytest.approx(2 * link_ns, rel=0.10)
    assert rt.now_ns - t0 >= 2 * link_ns


def test_copy_arguments_are_checked_and_named(rt):
    gpu = rt.gpus[0]
    src, dev = host(rt, 4096), vram(rt, 4096)
    cases = [
        (lambda: rt.memory_async_copy(dev, "gpu", src, rt.cpu, 16), "dst_agent"),
        (lambda: rt.memory_async_copy(dev, gpu, src, rt.cpu, 8192), "dst"),
        (lambda: rt.memory_async_copy(dev, gpu, 0x1234, rt.cpu, 16), "src = 4660"),
        (lambda: rt.memory_async_copy(dev, gpu, src, rt.cpu, -1), "size"),
        (lambda: rt.memory_async_copy(dev, gpu, src, rt.cpu, 16, deps=[3]), r"deps\[0\]"),
        (lambda: rt.memory_fill(dev.address + 2, 0, 4), "not 4-byte aligned"),
        (lambda: rt.memory_fill(dev, 1 << 32, 4), "value"),
    ]
    for call, match in cases:
        with pytest.raises(HsaError, match=match):
            call()
    private = host(rt, 4096, gpu=False)
    with pytest.raises(HsaError, match="not accessible") as info:
        rt.memory_async_copy(dev, gpu, private, rt.cpu, 16)
    assert info.value.status == Status.ERROR_INVALID_ARGUMENT
    rt.memory_lock(private, [gpu])
    rt.memory_async_copy(dev, gpu, private, rt.cpu, 16).wait()
    rt.memory_unlock(private)
    h = rt.memory_async_copy(src, rt.cpu, dev, gpu, 16).wait()
    with pytest.raises(HsaError, match="profiling_async_copy_enable"):
        rt.async_copy_time(h.signal)


@pytest.mark.trace
def test_large_copies_split_at_the_sdma_maximum(rt):
    gpu = rt.gpus[0]
    n = 0x3FFFE0 + 4096
    src, dev = host(rt, n), vram(rt, n)
    back = host(rt, n)
    src.view(np.uint8)[:] = np.arange(n, dtype=np.uint64).astype(np.uint8)
    rt.memory_async_copy(dev, gpu, src, rt.cpu, n).wait()
    rt.memory_async_copy(back, rt.cpu, dev, gpu, n).wait()
    assert bytes(back.view()[:n]) == bytes(src.view()[:n])
    copies = [
        e["args"]["bytes"]
        for e in rt.system.tracer.to_chrome()["traceEvents"]
        if e.get("name") == "COPY_LINEAR"
    ]
    assert copies == [0x3FFFE0, 4096, 0x3FFFE0, 4096]


def copy_lab(rt):
    """Copy in, fill, copy out, time it: nothing here knows whether `rt` is local or remote."""
    gpu = rt.gpus[0]
    fine = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
    src, back = fine.allocate(4096), fine.allocate(4096)
    rt.allow_access([gpu], src)
    rt.allow_access([gpu], back)
    dev = gpu.pools()[0].allocate(8192)
    src.write(np.arange(1024, dtype=np.uint32).tobytes())
    rt.profiling_async_copy_enable(True)
    h = rt.memory_async_copy(dev, gpu, src, rt.cpu, 4096).wait()
    t = rt.async_copy_time(h.signal)
    rt.memory_fill(dev.address + 4096, 0xABCD, 1024)
    dep = rt.create_signal(0)
    rt.memory_async_copy(back, rt.cpu, dev, gpu, 4096, deps=[dep]).wait()
    out = back.read()
    rt.memory_copy(back, dev.address + 4096, 4096)
    return h.engine, t, out, back.read(), rt.system.tracer.dumps()


def test_copies_over_http_match_the_local_runtime():
    from rocr.service.testing import in_process_client

    with rocr.init(preset="teaching", trace=True) as local:  # as the service's systems are
        expected = copy_lab(local)
    with in_process_client() as c:
        remote = rocr.connect("http://testserver", preset="teaching", client=c)
        try:
            got = copy_lab(remote)
            with pytest.raises(HsaError, match="deps"):
                remote.memory_async_copy(0, remote.gpus[0], 0, remote.cpu, 4, deps=[7])
        finally:
            remote.shutdown()
    assert got[0] == expected[0] == "sdma"
    assert got[1] == expected[1]  # the same copy timestamps
    assert got[2] == expected[2] == np.arange(1024, dtype=np.uint32).tobytes()
    assert got[3] == expected[3] == np.full(1024, 0xABCD, dtype=np.uint32).tobytes()
    assert got[4] == expected[4]  # the trace, byte for byte


def test_blit_kernel_over_host_memory_is_bound_by_the_link(rt, monkeypatch):
    # copy_buffer declares its streams (src read, dst written): the host buffer's bytes cross
    # the host link, the VRAM side goes at the memory's bandwidth
    monkeypatch.setenv("HSA_ENABLE_SDMA", "0")
    spec = rt.system.spec.gpu
    gpu = rt.gpus[0]
    n = 1 << 20
    src, dev, dev2 = host(rt, n), vram(rt, n), vram(rt, n)
    h = rt.memory_async_copy(dev, gpu, src, rt.cpu, n).wait()
    assert h.engine == "blit kernel"
    start, end = rt.async_copy_time(h.signal)  # the blit's dispatch timestamps
    assert end - start == pytest.approx(n / spec.link_bandwidth_gbps, rel=0.10)
    h = rt.memory_async_copy(dev2, gpu, dev, gpu, n).wait()
    d_start, d_end = rt.async_copy_time(h.signal)
    assert d_end - d_start < (end - start) / 5  # VRAM to VRAM: no link in the way


def test_a_copy_whose_dependency_never_completes_is_diagnosed_not_hung(rt):
    gpu = rt.gpus[0]
    src, dev = host(rt, 4096), vram(rt, 4096)
    dep = rt.create_signal(1)
    h = rt.memory_async_copy(dev, gpu, src, rt.cpu, 4096, deps=[dep])
    with pytest.raises(HsaError, match="waits in POLL_REGMEM") as info:
        h.wait()
    value_addr = dep.handle + 8  # amd_signal_t.value, the word POLL_REGMEM reads
    assert f"{value_addr:#x}" in str(info.value)


def test_sdma_ring_wraps_with_a_nop_and_waits_for_room(rt, monkeypatch):
    import rocr.copy

    monkeypatch.setattr(rocr.copy, "SDMA_QUEUE_SIZE", 4096)  # 4 KiB ring: wraps quickly
    gpu = rt.gpus[0]
    src, dev = host(rt, 64 * 40), vram(rt, 64 * 40)
    back = host(rt, 64 * 40)
    src.view(np.uint8)[:] = np.arange(64 * 40, dtype=np.uint64).astype(np.uint8)
    rt.profiling_async_copy_enable(True)
    # 40 copies in flight at once, 6 packets (192 bytes) each: the ring wraps (a NOP pads its
    # end, 4096 not being a multiple of 192), and the runtime waits for the engine's read
    # offset before overwriting packets
    handles = [
        rt.memory_async_copy(dev.address + 64 * i, gpu, src.address + 64 * i, rt.cpu, 64)
        for i in range(40)
    ]
    for h in handles:
        h.wait()
    rt.memory_async_copy(back, rt.cpu, dev, gpu, 64 * 40).wait()
    assert bytes(back.view()[: 64 * 40]) == bytes(src.view()[: 64 * 40])
    q = rt.runlist()[0]["sdma_queues"][0]
    assert q["error"] is None
    assert q["rptr"] == q["wptr"] > 40 * 192  # the NOP padding was consumed too


# -- peer copies between GPUs ------------------------------------------------------------------
def two_gpus(preset, num_gpus=2, trace=False):
    from hw_model.config import system_spec

    return rocr.init(spec=system_spec(preset, num_gpus=num_gpus), trace=trace)


def peer_setup(rt, n, dst_gpu=1):
    g0, peer = rt.gpus[0], rt.gpus[dst_gpu]
    a, b = g0.pools()[0].allocate(n), peer.pools()[0].allocate(n)
    rt.memory_fill(a, 0xC0FFEE, n // 4)
    return g0, peer, a, b


def read_back(rt, buf, n):
    out = host(rt, n)
    rt.memory_copy(out, buf, n)
    return out.view(np.uint32)


def test_peer_copy_over_xgmi_uses_an_xgmi_sdma_queue_per_peer():
    # gfx90a: one hive, 3 XGMI SDMA engines; ROCr's GetXgmiBlit gives each peer its own
    n = 4 << 20
    with two_gpus("gfx90a", num_gpus=3, trace=True) as rt:
        spec = rt.system.spec.gpu
        g0, g1, g2 = rt.gpus
        assert g0.props.HiveID == g1.props.HiveID != 0
        _, _, a, b = peer_setup(rt, n)
        c = g2.pools()[0].allocate(n)
        rt.allow_access([g0], b)
        rt.allow_access([g0], c)
        rt.profiling_async_copy_enable(True)
        h = rt.memory_async_copy(b, g1, a, g0, n).wait()
        assert h.engine == "sdma"
        start, end = rt.async_copy_time(h.signal)
        xgmi_ns = n / spec.xgmi_link_bandwidth_gbps + spec.sdma_setup_latency_ps / 1000
        assert end - start == pytest.approx(xgmi_ns, rel=0.10)
        assert end - start < n / spec.link_bandwidth_gbps / 1.5  # not over PCIe
        rt.memory_async_copy(c, g2, a, g0, n).wait()
        assert (read_back(rt, b, n) == 0xC0FFEE).all()
        assert (read_back(rt, c, n) == 0xC0FFEE).all()
        rl = rt.runlist()[0]["sdma_queues"]
        xgmi = [q for q in rl if q["type"] == "sdma_xgmi"]
        assert len(xgmi) == 2  # one per peer, on XGMI engines (numbered after the 2 PCIe ones)
        assert sorted(q["engine"] for q in xgmi) == [2, 3]
        engines = {e["engine"]: e for e in rt.mapped_queues()[0]["sdma"]}
        assert engines[2]["type"] == "sdma_xgmi" and engines[2]["queues"]
        made = [
            e.args
            for e in rt.system.tracer.events
            if e.name == "SDMA queue created" and e.args["type"] == "sdma_xgmi"
        ]
        assert [m["direction"] for m in made] == ["xgmi0", "xgmi1"]
        assert rt.system.xgmi_link(g0.node, g1.node).bytes_moved == n


def test_peer_copy_without_xgmi_goes_over_pcie_through_both_host_links():
    n = 1 << 20
    with two_gpus("teaching") as rt:
        spec = rt.system.spec.gpu
        g0, g1, a, b = peer_setup(rt, n)
        assert g0.props.HiveID == 0
        links = [g.host_link for g in rt.system.gpus]
        before = [link.bytes_moved for link in links]
        rt.allow_access([g0], b)
        rt.profiling_async_copy_enable(True)
        h = rt.memory_async_copy(b, g1, a, g0, n).wait()
        start, end = rt.async_copy_time(h.signal)
        pcie_ns = n / spec.link_bandwidth_gbps + spec.sdma_setup_latency_ps / 1000
        assert end - start == pytest.approx(pcie_ns, rel=0.10)
        assert [link.bytes_moved - b0 for link, b0 in zip(links, before, strict=True)] == [n, n]
        assert (read_back(rt, b, n) == 0xC0FFEE).all()
        # GetPcieBlit: the device-to-host SDMA queue carries peer copies over PCIe too
        back = host(rt, 4096)
        rt.memory_async_copy(back, rt.cpu, a, g0, 4096).wait()
        mine = [q for q in rt.runlist()[0]["sdma_queues"]]
        assert [q["type"] for q in mine] == ["sdma"]


def test_peer_copy_needs_access_to_the_peer_memory(monkeypatch):
    with two_gpus("gfx90a") as rt:
        g0, g1, a, b = peer_setup(rt, 4096)
        with pytest.raises(HsaError, match=r"dst = .* not accessible to gfx90a \(node 1\)") as e:
            rt.memory_async_copy(b, g1, a, g0, 4096)
        assert e.value.status == Status.ERROR_INVALID_ARGUMENT
        assert rt.runlist()[0]["sdma_queues"] == []  # refused before any queue was made
        rt.allow_access([g0], b)
        monkeypatch.setenv("HSA_ENABLE_PEER_SDMA", "0")  # ROCr's flag: a blit kernel instead
        h = rt.memory_async_copy(b, g1, a, g0, 4096).wait()
        assert h.engine == "blit kernel"
        assert (read_back(rt, b, 4096) == 0xC0FFEE).all()
        assert "copy_buffer" in [k["name"] for k in rt.system.gpus[0].kernel_records]
