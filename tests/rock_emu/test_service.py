"""The KFD service's protocol handling, time rules and robustness (daemon in a thread here)."""

from __future__ import annotations

import errno
import os
import random
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

import rocr
from rock_emu import ioctl as io
from rock_emu import protocol as P
from rock_emu.service import KfdService, peek_status
from roct.socket_transport import SocketTransport
from tests.conftest import gated_dispatch

TIMEOUT = 30.0


@pytest.fixture
def service(tmp_path):
    svc = KfdService(str(tmp_path / "kfd.sock"), preset="teaching", idle_lease_ms=50)
    svc.bind()
    t = threading.Thread(target=svc.serve_forever, kwargs={"install_signals": False}, daemon=True)
    t.start()
    yield svc
    svc.stop()
    t.join(timeout=TIMEOUT)
    assert not t.is_alive()


def _raw(svc: KfdService) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    s.connect(svc.path)
    return s


def _call(s: socket.socket, op: int, body: bytes, seq: int = 1) -> bytes:
    P.send_message(s, op, seq, body)
    rop, rseq, reply, _ = P.recv_message(s)
    assert (rop, rseq) == (op, seq)
    return reply


def _native_hello(s: socket.socket, name: str = "native") -> int:
    status, _v, pasid, msg = P.unpack_hello_reply(
        _call(s, P.OP_HELLO, P.pack_hello(P.HELLO_NATIVE, os.getpid(), name))
    )
    assert status == 0, msg
    return pasid


def _still_serving(svc: KfdService) -> None:
    s = _raw(svc)
    _native_hello(s)
    args = io.encode_args(io.GetVersionArgs(), io.AMDKFD_IOC_GET_VERSION)
    status, out, _, msg, _ = P.unpack_ioctl_reply(
        _call(s, P.OP_IOCTL, P.pack_ioctl(io.AMDKFD_IOC_GET_VERSION, bytes(args)), 2)
    )
    assert status == 0, msg
    v = io.GetVersionArgs.from_bytes(out)
    assert (v.major_version, v.minor_version) == (io.KFD_IOCTL_MAJOR_VERSION, 11)
    s.close()


def test_protocol_module_is_stdlib_only():
    import subprocess
    import sys

    code = (
        "import sys; import rock_emu.protocol; "
        "bad = [m for m in ('numpy', 'hw_model', 'pydantic') if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert out.stdout.strip() == "[]", out.stderr


def test_ioctl_pointer_args_of_a_native_client_come_from_its_bufs(service):
    """A native client's user memory is its own: the daemon reads and writes the bufs it
    sends (GET_PROCESS_APERTURES_NEW's out array), never its emulated heap."""
    s = _raw(service)
    _native_hello(s)
    size = io.ProcessDeviceApertures.SIZE
    args = io.GetProcessAperturesNewArgs(
        kfd_process_device_apertures_ptr=0x7FFF_0000_1000, num_of_nodes=1
    )
    buf = P.IoctlBuf(0x7FFF_0000_1000, size, P.DIR_INOUT, bytearray(b"\xaa" * size))
    body = P.pack_ioctl(io.AMDKFD_IOC_GET_PROCESS_APERTURES_NEW, bytes(args.to_bytes()), [buf])
    status, out_args, out, msg, _ = P.unpack_ioctl_reply(_call(s, P.OP_IOCTL, body))
    assert status == 0, msg
    ap = io.ProcessDeviceApertures.from_bytes(out)
    assert ap.gpu_id == service.system.gpus[0].gpu_id and ap.gpuvm_limit > ap.gpuvm_base
    assert io.GetProcessAperturesNewArgs.from_bytes(out_args).num_of_nodes == 1
    s.close()


def test_errors_carry_the_driver_errno_and_message(service):
    s = _raw(service)
    _native_hello(s)
    # the args of GET_VERSION must be sizeof(struct kfd_ioctl_get_version_args)
    status, _, _, msg, _ = P.unpack_ioctl_reply(
        _call(s, P.OP_IOCTL, P.pack_ioctl(io.AMDKFD_IOC_GET_VERSION, b"\0" * 3))
    )
    assert status == -errno.EINVAL and "kfd_ioctl_get_version_args" in msg
    status, _, _, msg, _ = P.unpack_mmap_reply(
        _call(s, P.OP_MMAP, P.pack_mmap(0x1234 << 12, 4096), 2)
    )
    assert status == -errno.EINVAL and "names no BO of this process" in msg
    s.close()


def _framed(body: bytes, op: int = P.OP_IOCTL) -> bytes:
    return P.HEADER.pack(len(body), op, 1) + body


def _fuzz_messages(rng: random.Random) -> list[bytes]:
    """Raw byte strings a broken client might send after (or instead of) HELLO."""
    good_ioctl = P.pack_ioctl(io.AMDKFD_IOC_GET_VERSION, bytes(8))
    out = [
        P.HEADER.pack(P.MAX_BODY + 1, P.OP_IOCTL, 1),  # a size the protocol refuses
        P.HEADER.pack(4, 77, 1) + b"abcd",  # unknown binary op
        P.HEADER.pack(5, P.OP_STATUS + 50, 1) + b"{}{}{",  # unknown JSON op, bad JSON
        P.HEADER.pack(3, P.OP_HOST_ELAPSE, 1) + b"[1]",  # JSON that is not an object
        P.HEADER.pack(2, P.OP_MEM_OP, 1) + b"{}",  # MEM_OP without its fields
        P.HEADER.pack(6, P.OP_IOCTL, 1) + b"\x01" * 6,  # short IOCTL header
        P.HEADER.pack(len(good_ioctl) - 1, P.OP_IOCTL, 1) + good_ioctl[:-1],  # short args
        P.HEADER.pack(7, P.OP_MMAP, 1) + b"\x00" * 7,  # short MMAP
        P.HEADER.pack(20, P.OP_IOCTL, 1) + struct.pack("<QII", 0xDEAD, 0, 9000) + b"",
    ]
    requests = [v for k, v in vars(io).items() if k.startswith("AMDKFD_IOC_")]
    for _ in range(8):  # well framed, the right size, garbage inside: the driver's checks
        request = rng.choice(requests)
        args = rng.randbytes(io.ioc_size(request))
        bufs = [P.IoctlBuf(rng.randrange(2**48), 16, rng.choice([1, 2, 3]), bytearray(16))]
        out.append(_framed(P.pack_ioctl(request, args, bufs)))
    for _ in range(8):
        body = rng.randbytes(rng.randrange(0, 64))
        op = rng.choice([P.OP_IOCTL, P.OP_MMAP, P.OP_MEM_OP, P.OP_HOST_STEP, rng.randrange(2**32)])
        out.append(P.HEADER.pack(len(body), op, rng.randrange(2**64)) + body)
    out.append(rng.randbytes(rng.randrange(1, 40)))  # garbage, then EOF mid-header
    return out


def test_fuzzed_messages_never_stop_the_daemon(service):
    rounds = int(os.environ.get("HSAEMU_FUZZ_ROUNDS", "3"))
    rng = random.Random(13)
    replies = errors = 0
    for _ in range(rounds):
        for msg in _fuzz_messages(rng):
            s = _raw(service)
            if rng.random() < 0.8:
                _native_hello(s, "fuzz")
            s.sendall(msg)
            s.shutdown(socket.SHUT_WR)
            try:
                while True:
                    _op, _seq, body, _ = P.recv_message(s)
                    replies += 1
                    errors += struct.unpack_from("<i", body)[0] < 0
            except (EOFError, OSError):
                pass
            s.close()
    assert replies > errors > 0  # most are refused (with a reply), a few ioctls pass
    _still_serving(service)
    end = time.monotonic() + TIMEOUT
    while service.kfd.processes:  # every fuzzing connection's process was cleaned up
        assert time.monotonic() < end
        time.sleep(0.01)
    assert service.errors > 0  # and each malformed message was logged


def test_eof_without_close_is_process_exit(service):
    with SocketTransport(service.path, name="leaver") as tr:
        rt = rocr.init(transport=tr)
        q = rt.gpus[0].create_queue(64)
        q.dispatch(rt.load_code_object("builtin:empty").kernel("empty"), grid=64, workgroup=64)
        pasid = tr.pasid
        assert pasid in service.kfd.processes
        assert service.memory.vms.get(pasid) is not None
        tr.sock.close()  # no CLOSE: as a killed process's socket closes
        tr.closed = True
    end = time.monotonic() + TIMEOUT
    while pasid in service.kfd.processes:
        assert time.monotonic() < end
        time.sleep(0.01)
    assert pasid not in service.memory.vms  # VM (and every BO) gone
    assert not service.system.gpus[0].scheduler.runlist  # queue destroyed
    assert service._memfds == {}


def test_a_wait_with_nothing_left_to_run_is_a_deadlock_when_every_client_is_blocked(service):
    rt = rocr.init(transport=SocketTransport(service.path, name="alone"))
    q, gate, h = gated_dispatch(rt)
    with pytest.raises(rocr.HsaError) as info:
        h.wait()
    assert info.value.status == rocr.Status.ERROR
    assert "can never return" in info.value.message or "never" in info.value.message
    rt.shutdown()


def test_a_parked_waiter_does_not_block_another_process(service):
    """Process A sleeps in WAIT_EVENTS behind a barrier on an IPC signal of process B; B keeps
    working (its requests are served), then stores 0 and A's kernel runs."""
    rt_a = rocr.init(transport=SocketTransport(service.path, name="A"))
    rt_b = rocr.init(transport=SocketTransport(service.path, name="B"))
    gate = rt_b.create_signal(1, ipc=True)
    mine = rt_a.ipc_signal_attach(rt_b.ipc_signal_create(gate))
    _, _, h = gated_dispatch(rt_a, mine)
    result: list = []
    waiter = threading.Thread(target=lambda: result.append(h.wait()), daemon=True)
    waiter.start()
    end = time.monotonic() + TIMEOUT
    while not any(c["state"] == "parked" for c in peek_status(service.path)["clients"]):
        assert time.monotonic() < end
        time.sleep(0.005)
    qb = rt_b.gpus[0].create_queue(64)  # B's ioctls and its kernel go on meanwhile
    empty = rt_b.load_code_object("builtin:empty").kernel("empty")
    qb.dispatch(empty, grid=64, workgroup=64).wait()
    assert waiter.is_alive() and not result
    gate.store(0)
    waiter.join(timeout=TIMEOUT)
    assert result and result[0].done
    assert mine.load() == 0
    rt_a.shutdown()
    rt_b.shutdown()


def test_native_doorbells_and_signal_stores_are_noticed_without_messages(service):
    """A native client (real ROCm under the interposer) rings doorbells and stores signals with
    plain stores to the shared pages; the watcher rings the CP and wakes the barrier."""
    tr = SocketTransport(service.path, name="native", native=True)
    rt = rocr.init(transport=tr)
    q, gate, h = gated_dispatch(rt)
    pp = service.system.gpus[0].queue_by_id(tr.pasid, q.queue_id)
    end = time.monotonic() + TIMEOUT
    while pp.doorbell_value < h.index:  # the doorbell store was noticed and rung
        assert time.monotonic() < end
        time.sleep(0.005)
    assert not h.done
    gate.store(0)  # a plain store: nobody is told
    h.wait()
    assert h.done
    rt.shutdown()


def test_attached_connection_must_come_from_the_same_process(service):
    s = _raw(service)
    pasid = _native_hello(s)
    a = _raw(service)
    body = P.pack_hello(P.HELLO_NATIVE | P.HELLO_ATTACH, os.getpid(), "thread", pasid)
    status, _v, got, _msg = P.unpack_hello_reply(_call(a, P.OP_HELLO, body))
    assert status == 0 and got == pasid
    a.close()
    bad = _raw(service)
    body = P.pack_hello(P.HELLO_NATIVE | P.HELLO_ATTACH, os.getpid(), "x", 0x7777)
    status, *_ = P.unpack_hello_reply(_call(bad, P.OP_HELLO, body))
    assert status == -errno.ESRCH
    bad.close()
    s.close()


def test_an_idle_client_holds_the_clock_only_for_its_lease(service):
    """A connected process that sends nothing (computing, or stopped in a debugger) holds the
    device clock back for the idle lease only; another process's kernel then completes."""
    idle = SocketTransport(service.path, name="idle")
    with rocr.init(transport=SocketTransport(service.path, name="busy")) as rt:
        q = rt.gpus[0].create_queue(64)
        h = q.dispatch(rt.load_code_object("builtin:empty").kernel("empty"), grid=64, workgroup=64)
        h.wait()
        assert h.done
        me = next(c for c in rt.transport.status()["clients"] if c["name"] == "idle")
        assert me["holds_clock"] is False and me["clock_ps"] < rt.transport.host_now()
    idle.close()


def test_a_wait_parked_on_an_attached_connection_keeps_its_user_buffers(service):
    """ROCr's async-events thread sleeps in WAIT_EVENTS on a connection of its own while the
    main thread's ioctls go on: when the wait ends, its events array (user memory the client
    sent along) is still where copy_to_user writes."""
    tr = SocketTransport(service.path, name="two threads", native=True)
    rt = rocr.init(transport=tr)
    sig = rt.create_signal(1)
    a = _raw(service)
    body = P.pack_hello(P.HELLO_NATIVE | P.HELLO_ATTACH, os.getpid(), "events thread", tr.pasid)
    assert P.unpack_hello_reply(_call(a, P.OP_HELLO, body))[0] == 0
    ptr = 0x7FFE_0000_0000  # in the client's own address space: the daemon never sees it
    data = io.EventData(event_id=sig.event.EventId).to_bytes()
    args = io.WaitEventsArgs(events_ptr=ptr, num_events=1, timeout=0xFFFFFFFF)
    buf = P.IoctlBuf(ptr, len(data), P.DIR_INOUT, bytearray(data))
    reply: list = []
    msg = P.pack_ioctl(io.AMDKFD_IOC_WAIT_EVENTS, bytes(args.to_bytes()), [buf])
    waiter = threading.Thread(target=lambda: reply.append(_call(a, P.OP_IOCTL, msg)))
    waiter.start()
    end = time.monotonic() + TIMEOUT
    while not any(c["park"] == "wait" for c in peek_status(service.path)["clients"]):
        assert time.monotonic() < end
        time.sleep(0.005)
    rt.thunk.get_clock_counters(rt.gpus[0].node)  # the main thread's ioctls meanwhile
    sig.store(0)  # SET_EVENT from the main thread ends the wait
    waiter.join(timeout=TIMEOUT)
    status, out_args, out, msg_, _ = P.unpack_ioctl_reply(reply[0])
    assert status == 0, msg_
    assert io.WaitEventsArgs.from_bytes(out_args).wait_result == io.KFD_IOC_WAIT_RESULT_COMPLETE
    assert io.EventData.from_bytes(out).event_id == sig.event.EventId
    a.close()
    rt.shutdown()


def test_a_native_wait_times_out_in_wall_time_and_never_moves_the_device_clock(service):
    """A native process has no host clock: its WAIT_EVENTS timeout is the real driver's sleep
    in wall time, and ROCr's "forever" (just under KFD_EVENT_TIMEOUT_INFINITE) is forever —
    neither moves the device clock however long it is."""
    tr = SocketTransport(service.path, name="native waits", native=True)
    rt = rocr.init(transport=tr)
    sig = rt.create_signal(1)
    before = peek_status(service.path)["device_time_ps"]
    status, _ = rt.thunk.wait_on_multiple_events([sig.event], False, 20)  # 20 ms of wall time
    assert status.name == "WAIT_TIMEOUT"
    assert peek_status(service.path)["device_time_ps"] == before
    a = _raw(service)  # ROCr's async-events thread: its own connection, waiting "forever"
    body = P.pack_hello(P.HELLO_NATIVE | P.HELLO_ATTACH, os.getpid(), "events thread", tr.pasid)
    assert P.unpack_hello_reply(_call(a, P.OP_HELLO, body))[0] == 0
    ptr = 0x7FFE_0000_0000
    data = io.EventData(event_id=sig.event.EventId).to_bytes()
    args = io.WaitEventsArgs(events_ptr=ptr, num_events=1, timeout=0xFFFFFFFE)
    msg = P.pack_ioctl(
        io.AMDKFD_IOC_WAIT_EVENTS,
        bytes(args.to_bytes()),
        [P.IoctlBuf(ptr, len(data), P.DIR_INOUT, bytearray(data))],
    )
    reply: list = []
    waiter = threading.Thread(target=lambda: reply.append(_call(a, P.OP_IOCTL, msg)))
    waiter.start()
    end = time.monotonic() + TIMEOUT
    while not any(c["park"] == "wait" for c in peek_status(service.path)["clients"]):
        assert time.monotonic() < end
        time.sleep(0.005)
    time.sleep(0.05)
    assert peek_status(service.path)["device_time_ps"] == before  # no 49-day jump
    rt.thunk.set_event(sig.event)
    waiter.join(timeout=TIMEOUT)
    status_, out_args, _, text, _ = P.unpack_ioctl_reply(reply[0])
    assert status_ == 0, text
    assert io.WaitEventsArgs.from_bytes(out_args).wait_result == io.KFD_IOC_WAIT_RESULT_COMPLETE
    a.close()
    rt.shutdown()
