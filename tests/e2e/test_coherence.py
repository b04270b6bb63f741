"""Coherence of fine- and coarse-grained memory, with its functional effect: a GPU's stores to
coarse-grained system memory stay in its L2 until a system-scope release, and the host's stores
reach a kernel only at a system-scope acquire; fine-grained memory is coherent at once
(docs/memory.md, "Coherence")."""

from __future__ import annotations

import numpy as np
import pytest

import rocr
from hw_model import aql

N = 1024
X = np.arange(N, dtype=np.float32)


@pytest.fixture
def rt():
    runtime = rocr.init(preset="teaching")
    yield runtime
    runtime.shutdown()


def host_buffers(rt, fine: bool):
    pool = rt.cpu.pools(fine_grained=fine, coarse_grained=not fine, kernarg=False)[0]
    src, dst = pool.allocate(4 * N), pool.allocate(4 * N)
    rt.allow_access([rt.gpus[0]], src)
    rt.allow_access([rt.gpus[0]], dst)
    src.view(np.float32)[:] = X
    dst.view(np.float32)[:] = -1
    return src, dst


def square(rt, q, dst, src, **fences):
    k = rt.load_code_object("builtin:square").kernel("square")
    q.dispatch(k, grid=N, workgroup=256, args=(dst, src, N), **fences).wait()


def test_agent_scope_release_leaves_coarse_grained_results_in_the_gpu_l2(rt):
    src, dst = host_buffers(rt, fine=False)
    q = rt.gpus[0].create_queue(64)
    square(rt, q, dst, src, release=aql.FenceScope.AGENT)
    # The missing-fence bug: the completion signal fired, the host reads the old values.
    assert np.all(dst.view(np.float32) == -1)
    assert rt.system.memory.l2_dirty_bytes(rt.gpus[0].node) > 0
    # A later packet's system-scope release writes the L2 back (a barrier packet here).
    done = rt.create_signal(1)
    q.submit(
        rocr.BarrierAndPacket(
            header=aql.make_header(aql.PacketType.BARRIER_AND, release=aql.FenceScope.SYSTEM),
            dep_signal=[0] * 5,
            completion_signal=done.handle,
        )
    )
    done.wait(rocr.Condition.LT, 1)
    assert np.array_equal(dst.view(np.float32), X * X)


def test_system_scope_release_makes_coarse_grained_results_visible(rt):
    src, dst = host_buffers(rt, fine=False)
    square(rt, rt.gpus[0].create_queue(64), dst, src, release=aql.FenceScope.SYSTEM)
    assert np.array_equal(dst.view(np.float32), X * X)


@pytest.mark.parametrize("scope", [aql.FenceScope.AGENT, aql.FenceScope.SYSTEM])
def test_fine_grained_results_are_visible_whatever_the_scope(rt, scope):
    src, dst = host_buffers(rt, fine=True)
    square(rt, rt.gpus[0].create_queue(64), dst, src, release=scope)
    assert np.array_equal(dst.view(np.float32), X * X)


def test_host_stores_to_coarse_grained_memory_reach_the_gpu_at_a_system_scope_acquire(rt):
    src, dst = host_buffers(rt, fine=False)
    q = rt.gpus[0].create_queue(64)
    square(rt, q, dst, src)  # the GPU's L2 now holds src
    src.view(np.float32)[:] = 2
    square(rt, q, dst, src, acquire=aql.FenceScope.AGENT)
    assert np.array_equal(dst.view(np.float32), X * X)  # stale src from the L2
    square(rt, q, dst, src, acquire=aql.FenceScope.SYSTEM)
    assert np.all(dst.view(np.float32) == 4)
