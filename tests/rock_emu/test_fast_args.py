"""The ioctl path's fast structs, and the caches hsa_init reads through.

The pydantic models of rock_emu.ioctl are the reference (checked against the C header in
test_ioctl.py); their fast twins must give the same bytes for any values, refuse what does not
fit, and the KFD must decode the raw bytes any client sends exactly as before.
"""

from __future__ import annotations

import errno
import pickle
import random
import struct

import pytest
from pydantic import ValidationError

import rocr
import roct
from hw_model import config
from rock_emu import ioctl as io
from rock_emu import machine, topology
from rock_emu.ioctl import STRUCTS, CType, FastArgs, IoctlArgs, KfdError, fast_twin

FLAT = {
    name: model
    for name, model in STRUCTS.items()
    if model._FLAT and all(f.kind == "scalar" for f in model.c_fields())
}


def _ranges(model: type[IoctlArgs]) -> dict[str, tuple[int, int]]:
    out = {}
    for f in model.c_fields():
        assert isinstance(f.elem, CType)
        bits = 8 * f.elem.size
        signed = f.elem.name.startswith("__s")
        out[f.name] = (-(1 << bits - 1), (1 << bits - 1) - 1) if signed else (0, (1 << bits) - 1)
    return out


def _random_values(model: type[IoctlArgs], rng: random.Random) -> dict[str, int]:
    values = {}
    for name, (lo, hi) in _ranges(model).items():
        values[name] = rng.choice((lo, hi, 0, 1, rng.randint(lo, hi), rng.randint(lo, hi)))
    return values


def test_the_hot_requests_have_fast_twins() -> None:
    hot = (
        io.AMDKFD_IOC_GET_VERSION,
        io.AMDKFD_IOC_ACQUIRE_VM,
        io.AMDKFD_IOC_GET_PROCESS_APERTURES_NEW,
        io.AMDKFD_IOC_GET_CLOCK_COUNTERS,
        io.AMDKFD_IOC_ALLOC_MEMORY_OF_GPU,
        io.AMDKFD_IOC_FREE_MEMORY_OF_GPU,
        io.AMDKFD_IOC_MAP_MEMORY_TO_GPU,
        io.AMDKFD_IOC_UNMAP_MEMORY_FROM_GPU,
        io.AMDKFD_IOC_CREATE_QUEUE,
        io.AMDKFD_IOC_DESTROY_QUEUE,
        io.AMDKFD_IOC_CREATE_EVENT,
        io.AMDKFD_IOC_DESTROY_EVENT,
        io.AMDKFD_IOC_SET_EVENT,
        io.AMDKFD_IOC_RESET_EVENT,
        io.AMDKFD_IOC_WAIT_EVENTS,
    )
    for request in hot:
        twin = io.fast_request(request)
        assert twin is not None, io.request_name(request)
        assert twin.MODEL is io.REQUESTS[request]
        assert io.ioc_size(request) == twin.SIZE
    # A struct with a fixed array has none: its request decodes through the model.
    assert io.fast_request(io.AMDKFD_IOC_GET_PROCESS_APERTURES) is None
    assert io.fast_request(0xDEAD) is None
    with pytest.raises(TypeError, match="kfd_event_data.*no fast twin"):
        fast_twin(io.EventData)


@pytest.mark.parametrize("model", list(FLAT.values()), ids=list(FLAT))
def test_fast_twin_bytes_equal_the_models_for_random_values(model: type[IoctlArgs]) -> None:
    twin = fast_twin(model)
    assert twin.C_NAME == model.C_NAME and twin.SIZE == model.SIZE
    assert twin().to_bytes() == model().to_bytes() == bytes(model.SIZE)
    rng = random.Random(model.C_NAME)
    for _ in range(25):
        values = _random_values(model, rng)
        ref = model(**values).to_bytes()
        fast = twin(**values)
        assert fast.to_bytes() == ref == bytes(fast)
        assert model.fast(**values).to_bytes() == ref
        # positional, in member order, as from_bytes builds it
        assert twin(*values.values()).to_bytes() == ref
        back = twin.from_bytes(ref)
        assert {n: getattr(back, n) for n in values} == values
        assert back == fast and back.to_model() == model(**values)
        buf = bytearray(model.SIZE + 8)
        fast.pack_into(buf, 8)
        assert bytes(buf[8:]) == ref
        assert twin.from_buffer(buf, 8) == fast
        assert model.from_bytes(fast.to_bytes()) == model(**values)
        assert pickle.loads(pickle.dumps(fast)) == fast  # checkpoints hold some
    for name in values:
        assert twin.offsetof(name) == model.offsetof(name)


@pytest.mark.parametrize("model", list(FLAT.values()), ids=list(FLAT))
def test_fast_twin_refuses_what_the_model_refuses(model: type[IoctlArgs]) -> None:
    twin = fast_twin(model)
    for name, (lo, hi) in _ranges(model).items():
        for bad in (lo - 1, hi + 1):
            with pytest.raises(ValidationError):
                model(**{name: bad})
            with pytest.raises(ValueError, match=rf"{model.C_NAME}\.{name} = {bad}: out of range"):
                twin(**{name: bad}).to_bytes()
        with pytest.raises(ValueError, match=rf"{name} = 1\.5: must be an integer"):
            twin(**{name: 1.5}).pack_into(bytearray(model.SIZE))
    with pytest.raises(ValueError, match=f"struct {model.C_NAME} is {model.SIZE} bytes"):
        twin.from_bytes(bytes(model.SIZE + 1))
    with pytest.raises(TypeError):
        twin(no_such_member=1)


def test_encode_args_takes_the_twin_of_the_request_and_no_other() -> None:
    args = io.CreateQueueArgs.fast(ring_base_address=0x1000, ring_size=4096, gpu_id=7)
    buf = io.encode_args(args, io.AMDKFD_IOC_CREATE_QUEUE)
    assert (
        bytes(buf)
        == io.CreateQueueArgs(ring_base_address=0x1000, ring_size=4096, gpu_id=7).to_bytes()
    )
    with pytest.raises(KfdError) as info:
        io.encode_args(io.DestroyQueueArgs.fast(queue_id=1), io.AMDKFD_IOC_CREATE_QUEUE)
    assert info.value.errno == errno.EINVAL


def test_kfd_decodes_raw_c_bytes_as_before() -> None:
    """What another process sends (the KFD service, the real libhsakmt through the
    interposer) is bytes packed by C: the driver reads them through the twins, answers in
    the same layout, and malformed requests still get the errnos of decode_args."""
    kfd = machine(preset="teaching")
    p = kfd.open("raw")
    gpu_id = kfd.system.gpus[0].gpu_id
    # kfd_ioctl_acquire_vm_args {__u32 drm_fd; __u32 gpu_id;}, packed by hand
    p.ioctl(io.AMDKFD_IOC_ACQUIRE_VM, bytearray(struct.pack("<II", 5, gpu_id)))
    # kfd_ioctl_alloc_memory_of_gpu_args: va_addr, size, handle, mmap_offset, gpu_id, flags
    flags = io.KFD_IOC_ALLOC_MEM_FLAGS_GTT | io.KFD_IOC_ALLOC_MEM_FLAGS_WRITABLE
    buf = bytearray(struct.pack("<QQQQII", 0x1_0000_0000, 8192, 0, 0, gpu_id, flags))
    p.ioctl(io.AMDKFD_IOC_ALLOC_MEMORY_OF_GPU, buf)
    va, size, handle, mmap_offset, gid, fl = struct.unpack("<QQQQII", buf)
    assert (va, size, gid, fl) == (0x1_0000_0000, 8192, gpu_id, flags)
    assert handle >> 32 == gpu_id and mmap_offset == (handle & 0xFFFF_FFFF) << 12
    assert p.bos[handle].name == str(io.AllocMemFlags(flags))
    # the deprecated apertures query (a fixed array: no twin) still answers
    aps = bytearray(io.GetProcessAperturesArgs.SIZE)
    p.ioctl(io.AMDKFD_IOC_GET_PROCESS_APERTURES, aps)
    got = io.GetProcessAperturesArgs.from_bytes(aps)
    assert got.num_of_nodes == 1 and got.process_apertures[0].gpu_id == gpu_id
    with pytest.raises(KfdError) as info:
        p.ioctl(io.AMDKFD_IOC_ALLOC_MEMORY_OF_GPU, bytearray(buf[:-4]))
    assert info.value.errno == errno.EINVAL and "argument buffer has 36" in info.value.message
    with pytest.raises(KfdError) as info:
        p.ioctl(io.ioc(io.IocDir.WRITE, io.AMDKFD_IOCTL_BASE, 0x7F, 8), bytearray(8))
    assert info.value.errno == errno.ENOTTY


def test_thunk_replies_are_fast_twins_with_the_drivers_values() -> None:
    t = roct.open_kfd(preset="teaching")
    try:
        c = t.get_clock_counters(1)
        assert isinstance(c, FastArgs) and c.system_clock_freq == 1_000_000_000
        a = t.alloc_memory(0, 5000, coherent=True, executable=True)
        bo = t.transport.process.bos[a.handle]
        want = (
            io.AllocMemFlags.WRITABLE
            | io.AllocMemFlags.NO_SUBSTITUTE
            | io.AllocMemFlags.GTT
            | io.AllocMemFlags.COHERENT
            | io.AllocMemFlags.EXECUTABLE
        )
        assert bo.name == str(want) and bo.coherent and bo.size == 8192
        # past __u64: refused before anything reaches the driver, naming the member
        with pytest.raises(ValueError, match=rf"gpu_args\.size = {1 << 64}: out of range"):
            t.alloc_memory(0, 1 << 64, coherent=True)
    finally:
        t.close()


def test_topology_and_parsed_properties_are_cached_copies() -> None:
    k1 = machine(preset="teaching")
    k2 = machine(preset="teaching")
    assert k1.sysfs == k2.sysfs == topology.render(k1.system)
    assert k1.sysfs is not k2.sysfs
    k1.sysfs["/sys/class/kfd/kfd/topology/generation_id"] = "99\n"
    assert machine(preset="teaching").sysfs["/sys/class/kfd/kfd/topology/generation_id"] == "1\n"
    other = machine(preset="gfx942")
    assert other.sysfs == topology.render(other.system) != k2.sysfs
    text = k2.sysfs["/sys/class/kfd/kfd/topology/nodes/1/properties"]
    p = topology.parse_properties(text)
    p["simd_count"] = -1
    assert topology.parse_properties(text)["simd_count"] == 8


def test_plain_preset_specs_are_shared_and_follow_the_presets(monkeypatch) -> None:
    assert config.system_spec("teaching") is config.system_spec("teaching")
    assert config.system_spec("teaching", num_gpus=2).num_gpus == 2
    assert config.system_spec("teaching").num_gpus == 1
    changed = config.PRESETS["teaching"].model_copy(update={"num_cus": 3})
    monkeypatch.setitem(config.PRESETS, "teaching", changed)
    assert config.system_spec("teaching").gpu.num_cus == 3


def test_runtime_on_the_fast_path_sees_the_topology() -> None:
    with rocr.init(preset="teaching") as rt:
        cus = config.PRESETS["teaching"].num_cus
        assert rt.gpus[0].name == "gfx900" and rt.gpus[0].compute_unit_count == cus


def test_builtin_code_objects_are_reused_until_the_registry_changes(monkeypatch) -> None:
    from hw_model import kernels
    from rocr.executable import read_code_object

    blob = read_code_object("builtin:square")
    assert read_code_object("builtin:square") is blob
    assert read_code_object("builtin") == kernels.builtin_code_object()
    wider = kernels.BUILTINS["square"].model_copy(update={"vgprs": 40})
    monkeypatch.setitem(kernels.BUILTINS, "square", wider)
    again = read_code_object("builtin:square")
    assert kernels.decode_code_object(again)["amdhsa.kernels"][0][".vgpr_count"] == 40
    with rocr.init(preset="teaching") as rt:
        assert rt.load_code_object("builtin:square").kernel("square").vgprs == 40
