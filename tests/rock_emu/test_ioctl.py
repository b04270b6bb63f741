"""Checks the amdkfd ioctl models against the real uapi header, compiled by gcc."""

from __future__ import annotations

import enum
import errno
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from rock_emu import ioctl
from rock_emu.ioctl import (
    AMDKFD_COMMAND_END,
    AMDKFD_COMMAND_START,
    AMDKFD_IOC_CREATE_QUEUE,
    AMDKFD_IOC_GET_VERSION,
    AMDKFD_IOCTL_BASE,
    REQUEST_NAMES,
    REQUESTS,
    STRUCTS,
    CreateQueueArgs,
    CriuArgs,
    CType,
    EventData,
    GetProcessAperturesArgs,
    HsaHwExceptionData,
    HsaMemoryExceptionData,
    IocDir,
    IoctlArgs,
    KfdError,
    MemoryExceptionFailure,
    SetXnackModeArgs,
    SvmArgs,
    SvmAttribute,
    decode_args,
    encode_args,
    ioc_dir,
    ioc_nr,
    ioc_size,
    ioc_type,
    request_name,
)

HEADER = "linux/kfd_ioctl.h"
CONSTANT_PREFIXES = ("KFD_", "AMDKFD_", "MAX_ALLOWED_", "NUM_OF_", "_IOC_")

# --------------------------------------------------------------------------------------------
# The Python side's numbers
# --------------------------------------------------------------------------------------------


def python_constants() -> dict[str, int]:
    return {
        name: int(value)
        for name, value in vars(ioctl).items()
        if name.startswith(CONSTANT_PREFIXES)
        and isinstance(value, int)
        and re.fullmatch(r"_?[A-Z][A-Z0-9_]*", name)
    }


def expected_numbers() -> tuple[dict[str, int], dict[str, str]]:
    """Label -> Python value, and label -> C expression that must equal it."""
    values: dict[str, int] = {}
    exprs: dict[str, str] = {}

    def add(label: str, value: int, expr: str) -> None:
        values[label] = value
        exprs[label] = expr

    for c_name, model in STRUCTS.items():
        st = f"struct {c_name}"
        add(f"sizeof:{c_name}", model.SIZE, f"sizeof({st})")
        add(f"alignof:{c_name}", model.ALIGN, f"_Alignof({st})")
        for f in model.c_fields():
            member = f"(({st} *)0)->"
            if f.kind == "union":
                assert f.union is not None
                for m_name, m_model in f.union.members:
                    add(f"offsetof:{c_name}.{m_name}", f.offset, f"offsetof({st}, {m_name})")
                    add(f"sizeof:{c_name}.{m_name}", m_model.SIZE, f"sizeof({member}{m_name})")
                continue
            add(f"offsetof:{c_name}.{f.name}", f.offset, f"offsetof({st}, {f.name})")
            add(f"sizeof:{c_name}.{f.name}", f.size, f"sizeof({member}{f.name})")
            if f.kind == "scalar":
                assert isinstance(f.elem, CType)
                signed = int(f.elem.name.startswith("__s"))
                add(
                    f"signed:{c_name}.{f.name}",
                    signed,
                    f"((__typeof__({member}{f.name}))-1 < 0)",
                )
        if model.FLEXIBLE_ARRAY is not None:
            flex, _ = model.FLEXIBLE_ARRAY
            add(f"offsetof:{c_name}.{flex}", model.offsetof(flex), f"offsetof({st}, {flex})")
    for name, value in python_constants().items():
        add(f"const:{name}", value, name)
    for event in ioctl.SmiEvent:
        if event:
            add(
                f"smi_mask:{event.name}",
                ioctl.KFD_SMI_EVENT_MASK_FROM_INDEX(event),
                f"KFD_SMI_EVENT_MASK_FROM_INDEX(KFD_SMI_EVENT_{event.name})",
            )
    return values, exprs


# --------------------------------------------------------------------------------------------
# The C side
# --------------------------------------------------------------------------------------------


def _gcc() -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed; it is needed to compare the models with the C header")
    return gcc


def _find_header(gcc: str) -> Path:
    # -MG lists a missing include by its bare name instead of failing, so this finds the
    # header even when its own <drm/drm.h> include is not installed.
    deps = subprocess.run(
        [gcc, "-M", "-MG", "-x", "c", "-"],
        input=f"#include <{HEADER}>\n",
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    for token in deps.replace("\\\n", " ").split():
        if token.endswith(HEADER) and Path(token).is_absolute():
            return Path(token)
    pytest.skip(f"<{HEADER}> is not installed (it ships in the linux-libc-dev package)")


def _include_flags(gcc: str, workdir: Path) -> list[str]:
    probe = subprocess.run(
        [gcc, "-fsyntax-only", "-x", "c", "-"],
        input="#include <drm/drm.h>\n",
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode == 0:
        return []
    # kfd_ioctl.h includes <drm/drm.h> only for the __u32-style types; Debian ships that
    # header in libdrm-dev, which a build box need not have.
    stub = workdir / "stub-include" / "drm" / "drm.h"
    stub.parent.mkdir(parents=True, exist_ok=True)
    stub.write_text("#include <linux/types.h>\n#include <linux/ioctl.h>\n")
    return ["-I", str(workdir / "stub-include")]


def _c_program(exprs: dict[str, str]) -> str:
    lines = [
        "#include <stddef.h>",
        "#include <stdio.h>",
        f"#include <{HEADER}>",
        # A negative constant can only be (1 << 31), whose bit the __u32 flags member holds.
        "#define V(x) ((x) < 0 ? (unsigned long long)(__u32)(x) : (unsigned long long)(x))",
        "int main(void) {",
    ]
    lines += [f'  printf("%s %llu\\n", "{label}", V({expr}));' for label, expr in exprs.items()]
    lines += ["  return 0;", "}", ""]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def header_text() -> str:
    text = _find_header(_gcc()).read_text()
    major = re.search(r"#define\s+KFD_IOCTL_MAJOR_VERSION\s+(\d+)", text)
    minor = re.search(r"#define\s+KFD_IOCTL_MINOR_VERSION\s+(\d+)", text)
    version = (int(major[1]), int(minor[1])) if major and minor else None
    wanted = (ioctl.KFD_IOCTL_MAJOR_VERSION, ioctl.KFD_IOCTL_MINOR_VERSION)
    if version != wanted:
        pytest.skip(f"installed <{HEADER}> is interface {version}, the models track {wanted}")
    return text


@pytest.fixture(scope="module")
def c_numbers(header_text: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    gcc = _gcc()
    workdir = tmp_path_factory.mktemp("kfd_ioctl_c")
    _, exprs = expected_numbers()
    source = workdir / "layout.c"
    source.write_text(_c_program(exprs))
    binary = workdir / "layout"
    build = subprocess.run(
        [gcc, "-std=gnu11", "-Wall", *_include_flags(gcc, workdir), "-o", str(binary), source],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, f"generated C program did not compile:\n{build.stderr}"
    run = subprocess.run([str(binary)], capture_output=True, text=True, check=True)
    numbers = {}
    for line in run.stdout.splitlines():
        label, value = line.rsplit(" ", 1)
        numbers[label] = int(value)
    return numbers


def _header_names(text: str) -> tuple[set[str], set[str], set[str]]:
    """Object-like macros, enum constants and struct tags declared by the header."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    macros = set(re.findall(r"^#define\s+([A-Za-z_]\w*)(?=\s|$)", text, flags=re.M))
    macros.discard("KFD_IOCTL_H_INCLUDED")
    enums: set[str] = set()
    for body in re.findall(r"\benum\s+\w+\s*\{(.*?)\}", text, flags=re.S):
        enums |= {item.split("=")[0].strip() for item in body.split(",") if item.strip()}
    structs = set(re.findall(r"^struct\s+(\w+)\s*\{", text, flags=re.M))
    return macros, enums, structs


# --------------------------------------------------------------------------------------------
# Against the header
# --------------------------------------------------------------------------------------------


def test_every_number_matches_the_c_header(c_numbers: dict[str, int]) -> None:
    values, exprs = expected_numbers()
    mismatches = [
        f"{label}: python {values[label]}, C {c_numbers.get(label, 'missing')} ({exprs[label]})"
        for label in values
        if c_numbers.get(label) != values[label]
    ]
    assert not mismatches, "\n".join(mismatches)
    assert len(c_numbers) == len(values) > 500


def test_every_header_name_is_modeled(header_text: str) -> None:
    macros, enums, structs = _header_names(header_text)
    missing = sorted(name for name in macros | enums if not hasattr(ioctl, name))
    assert not missing, f"header names without a Python counterpart: {missing}"
    assert structs == set(STRUCTS), (structs ^ set(STRUCTS), "struct tags differ")
    requests = {name for name in macros if name.startswith("AMDKFD_IOC_")}
    assert requests == set(REQUEST_NAMES.values())


# --------------------------------------------------------------------------------------------
# Self-consistency
# --------------------------------------------------------------------------------------------


def _sample_scalar(ctype: CType, seed: int) -> int:
    bits = ctype.size * 8
    mixed = seed * 0x9E3779B97F4A7C15
    if ctype.name.startswith("__s"):
        return -((mixed % (1 << (bits - 1))) or 1)
    # Top bit set, so a truncated or sign-confused encoding cannot round-trip.
    return (mixed % (1 << bits)) | (1 << (bits - 1))


def sample(model: type[IoctlArgs], seed: int = 1) -> IoctlArgs:
    kwargs: dict[str, Any] = {}
    for i, f in enumerate(model.c_fields()):
        s = seed * 131 + i + 1
        if f.kind == "scalar":
            assert isinstance(f.elem, CType)
            kwargs[f.name] = _sample_scalar(f.elem, s)
        elif f.kind == "struct":
            assert isinstance(f.elem, type)
            kwargs[f.name] = sample(f.elem, s)
        elif f.kind == "array":
            elem = f.elem
            kwargs[f.name] = [
                _sample_scalar(elem, s + j) if isinstance(elem, CType) else sample(elem, s + j)
                for j in range(f.length)
            ]
        else:
            kwargs[f.name] = bytes((s + j) % 256 for j in range(f.size))
    return model(**kwargs)


@pytest.mark.parametrize("model", list(STRUCTS.values()), ids=list(STRUCTS))
def test_round_trip(model: type[IoctlArgs]) -> None:
    args = sample(model)
    raw = args.to_bytes()
    assert len(raw) == model.SIZE
    assert bytes(args) == raw
    back = model.from_bytes(raw)
    assert back == args
    assert back.to_bytes() == raw
    for f in model.c_fields():
        if f.kind == "scalar":
            assert isinstance(f.elem, CType)
            (value,) = struct.unpack_from("<" + f.elem.fmt, raw, f.offset)
            assert value == getattr(args, f.name), f.name
    buf = bytearray(model.SIZE + 8)
    args.pack_into(buf, 8)
    assert model.from_buffer(buf, 8) == args
    assert model().to_bytes() == bytes(model.SIZE)


def test_padding_is_zero_and_ignored() -> None:
    # kfd_ioctl_criu_args ends in a __u32 after 8-byte members: 4 bytes of tail padding.
    args = sample(CriuArgs)
    raw = args.to_bytes()
    assert CriuArgs.SIZE == 56 and raw[52:] == bytes(4)
    assert CriuArgs.from_bytes(raw[:52] + b"\xff" * 4) == args


@pytest.mark.parametrize("model", list(STRUCTS.values()), ids=list(STRUCTS))
def test_out_of_range_values_are_rejected(model: type[IoctlArgs]) -> None:
    for f in model.c_fields():
        if f.kind != "scalar":
            continue
        assert isinstance(f.elem, CType)
        bits = f.elem.size * 8
        if f.elem.name.startswith("__s"):
            low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        else:
            low, high = 0, (1 << bits) - 1
        assert model(**{f.name: high}).to_bytes()
        assert model(**{f.name: low}).to_bytes()
        for bad in (low - 1, high + 1, 1.5, "1", None):
            with pytest.raises(ValidationError):
                model(**{f.name: bad})
        args = model()
        with pytest.raises(ValidationError):
            setattr(args, f.name, low - 1)


def test_fixed_array_length_is_enforced() -> None:
    with pytest.raises(ValidationError):
        GetProcessAperturesArgs(process_apertures=[])
    args = GetProcessAperturesArgs()
    assert len(args.process_apertures) == ioctl.NUM_OF_SUPPORTED_GPUS
    args.process_apertures.append(ioctl.ProcessDeviceApertures())
    with pytest.raises(ValueError, match="exactly 7"):
        args.to_bytes()


def test_unknown_fields_and_members_are_rejected() -> None:
    with pytest.raises(ValidationError):
        CreateQueueArgs(ring_base=1)
    with pytest.raises(AttributeError, match="no member"):
        CreateQueueArgs.offsetof("ring_base")
    with pytest.raises(ValueError, match="88 bytes"):
        CreateQueueArgs.from_bytes(bytes(87))


def test_integer_like_values_are_accepted() -> None:
    args = CreateQueueArgs(queue_type=ioctl.QueueType.COMPUTE_AQL, ring_size=1 << 16)
    assert type(args.queue_type) is int and args.queue_type == 2
    assert SetXnackModeArgs(xnack_enabled=-1).to_bytes() == b"\xff\xff\xff\xff"
    flags = ioctl.KFD_IOC_ALLOC_MEM_FLAGS_VRAM | ioctl.KFD_IOC_ALLOC_MEM_FLAGS_WRITABLE
    assert ioctl.AllocMemoryOfGpuArgs(flags=flags).flags == 0x8000_0001


def test_event_data_union_views() -> None:
    ev = EventData(event_id=7)
    assert EventData.offsetof("memory_exception_data") == 0
    assert EventData.offsetof("hw_exception_data") == 0
    assert EventData.offsetof("kfd_event_data_ext") == HsaMemoryExceptionData.SIZE
    mem = HsaMemoryExceptionData(
        failure=MemoryExceptionFailure(NotPresent=1, ReadOnly=0, NoExecute=1, imprecise=0),
        va=0x7FFF_0000_1000,
        gpu_id=0x1234,
        ErrorType=ioctl.KFD_MEM_ERR_POISON_CONSUMED,
    )
    ev.memory_exception_data = mem
    assert ev.memory_exception_data == mem
    back = EventData.from_bytes(ev.to_bytes())
    assert back.memory_exception_data == mem and back.event_id == 7
    hw = HsaHwExceptionData(reset_type=1, reset_cause=1, memory_lost=0, gpu_id=0x1234)
    ev.hw_exception_data = hw
    assert ev.hw_exception_data == hw
    # Like a C member store, writing the smaller member leaves the rest of the union alone.
    assert ev.memory_exception_data.va == mem.va
    with pytest.raises(ValidationError):
        EventData(exception_data=bytes(31))


def test_svm_flexible_array() -> None:
    attrs = [
        SvmAttribute(type=ioctl.KFD_IOCTL_SVM_ATTR_PREFERRED_LOC, value=0x4242),
        SvmAttribute(type=ioctl.KFD_IOCTL_SVM_ATTR_SET_FLAGS, value=ioctl.SvmFlag.COHERENT),
    ]
    head = SvmArgs(start_addr=0x1000, size=0x2000, op=ioctl.SvmOp.SET_ATTR, nattr=2)
    image = head.to_bytes() + SvmArgs.attrs_to_bytes(attrs)
    assert ioc_size(ioctl.AMDKFD_IOC_SVM) == SvmArgs.SIZE == SvmArgs.offsetof("attrs") == 24
    assert SvmArgs.attrs_from_buffer(image, 2) == attrs
    assert SvmArgs.from_buffer(image) == head


# --------------------------------------------------------------------------------------------
# Requests and errors
# --------------------------------------------------------------------------------------------


def test_requests_cover_every_ioc_name() -> None:
    names = {n for n in vars(ioctl) if n.startswith("AMDKFD_IOC_")}
    assert set(REQUEST_NAMES.values()) == names
    assert set(REQUESTS) == {getattr(ioctl, n) for n in names}
    assert sorted(ioc_nr(r) for r in REQUESTS) == list(
        range(AMDKFD_COMMAND_START, AMDKFD_COMMAND_END)
    )
    for request, model in REQUESTS.items():
        assert ioc_type(request) == AMDKFD_IOCTL_BASE == ord("K")
        assert ioc_size(request) == model.SIZE
        assert ioc_dir(request) in (IocDir.READ, IocDir.WRITE, IocDir.READ | IocDir.WRITE)
        assert request_name(request) == REQUEST_NAMES[request]
    assert AMDKFD_IOC_GET_VERSION == 0x80084B01
    assert ioc_dir(AMDKFD_IOC_CREATE_QUEUE) == IocDir.READ | IocDir.WRITE


def test_every_enum_member_has_its_c_name() -> None:
    aliases = {id(v) for n, v in vars(ioctl).items() if n.startswith(CONSTANT_PREFIXES)}
    for obj in vars(ioctl).values():
        if (
            isinstance(obj, type)
            and issubclass(obj, enum.Enum)
            and obj.__module__ == ioctl.__name__
        ):
            for member in obj:
                assert id(member) in aliases, f"{obj.__name__}.{member.name} has no C-named alias"


@pytest.mark.parametrize("request_", list(REQUESTS), ids=list(REQUEST_NAMES.values()))
def test_encode_decode_every_request(request_: int) -> None:
    args = sample(REQUESTS[request_])
    buf = encode_args(args, request_)
    assert isinstance(buf, bytearray) and len(buf) == ioc_size(request_)
    assert decode_args(request_, buf) == args
    assert decode_args(request_, memoryview(buf)) == args


def test_decode_wrong_size_is_einval() -> None:
    with pytest.raises(KfdError) as info:
        decode_args(AMDKFD_IOC_CREATE_QUEUE, bytes(CreateQueueArgs.SIZE - 8))
    assert info.value.errno == errno.EINVAL
    assert str(info.value).startswith("EINVAL: AMDKFD_IOC_CREATE_QUEUE")
    assert "88 bytes" in str(info.value)


def test_unknown_request_is_enotty() -> None:
    for request in (0, ioctl.ioc(IocDir.READ | IocDir.WRITE, ord("K"), 0x99, 8), 0xDEADBEEF):
        with pytest.raises(KfdError) as info:
            decode_args(request, bytes(8))
        assert info.value.errno == errno.ENOTTY
        assert str(info.value).startswith("ENOTTY: unknown amdkfd ioctl")
    # A known command number with another struct size: the message names the right request.
    stale = ioctl.ioc(IocDir.READ | IocDir.WRITE, ord("K"), 0x02, 80)
    with pytest.raises(KfdError, match="AMDKFD_IOC_CREATE_QUEUE") as info:
        decode_args(stale, bytes(80))
    assert info.value.errno == errno.ENOTTY
    assert request_name(stale) == "_IOWR('K', 0x02, 80) = 0xc0504b02"


def test_encode_with_wrong_model_is_einval() -> None:
    with pytest.raises(KfdError) as info:
        encode_args(ioctl.DestroyQueueArgs(queue_id=1), AMDKFD_IOC_CREATE_QUEUE)
    assert info.value.errno == errno.EINVAL
    with pytest.raises(KfdError) as info:
        encode_args(ioctl.DestroyQueueArgs(queue_id=1), 0x1234)
    assert info.value.errno == errno.ENOTTY


def test_kfd_error_shape() -> None:
    err = KfdError(errno.ESRCH, "no process for this fd; open /dev/kfd first")
    assert err.errno == errno.ESRCH
    assert str(err) == "ESRCH: no process for this fd; open /dev/kfd first"
    assert KfdError(errno.ETIME, "x").errno_name == "ETIME"
