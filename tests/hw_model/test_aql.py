"""AQL packet layouts checked against the real ``hsa.h`` / ``hsa_ext_amd.h`` with gcc.

The C probe is generated from the Python layouts, so every modeled field, constant and
enum member is compared with what the C compiler sees.
"""

import random
import shutil
import subprocess
from pathlib import Path

import pydantic
import pytest

from hw_model import aql
from hw_model.aql import (
    PACKET_SIZE,
    AgentDispatchPacket,
    AmdBarrierValuePacket,
    BarrierAndPacket,
    BarrierOrPacket,
    FenceScope,
    KernelDispatchPacket,
    PackedModel,
    PacketType,
    decode_packet,
    header_acquire,
    header_barrier,
    header_fields,
    header_release,
    header_type,
    make_header,
)

HEADERS = ("hsa/hsa.h", "hsa/hsa_ext_amd.h")

# Python model -> (C type, {python field: C member path} where the names differ).
PACKETS: dict[type[PackedModel], tuple[str, dict[str, str]]] = {
    KernelDispatchPacket: ("hsa_kernel_dispatch_packet_t", {}),
    BarrierAndPacket: ("hsa_barrier_and_packet_t", {}),
    BarrierOrPacket: ("hsa_barrier_or_packet_t", {}),
    AgentDispatchPacket: ("hsa_agent_dispatch_packet_t", {}),
    AmdBarrierValuePacket: (
        "hsa_amd_barrier_value_packet_t",
        {
            "header": "header.header",
            "amd_format": "header.AmdFormat",
            "reserved": "header.reserved",
        },
    ),
}
PACKET_TYPE_CLASSES = {
    PacketType.KERNEL_DISPATCH: KernelDispatchPacket,
    PacketType.BARRIER_AND: BarrierAndPacket,
    PacketType.AGENT_DISPATCH: AgentDispatchPacket,
    PacketType.BARRIER_OR: BarrierOrPacket,
}

# *_OFFSET / *_COUNT constant prefix -> C types it describes (longest prefix wins).
_CONST_PREFIXES = {
    "KERNEL_DISPATCH_": ["hsa_kernel_dispatch_packet_t"],
    "BARRIER_": ["hsa_barrier_and_packet_t", "hsa_barrier_or_packet_t"],
    "AGENT_DISPATCH_": ["hsa_agent_dispatch_packet_t"],
    "AMD_BARRIER_VALUE_": ["hsa_amd_barrier_value_packet_t"],
    "": [ctype for ctype, _ in PACKETS.values()],
}
_CONST_SPECIAL = {
    "AMD_VENDOR_FORMAT_OFFSET": (["hsa_amd_barrier_value_packet_t"], "header.AmdFormat")
}


# ------------------------------------------------------------------ C probe machinery


def _c_member(cls: type[PackedModel], field: str) -> str:
    return PACKETS[cls][1].get(field, field)


def _field_codes(cls: type[PackedModel]) -> list[tuple[str, str]]:
    return [(name, code) for name, code in cls.LAYOUT if isinstance(code, str)]


def _array_len(code: str) -> int:
    digits = code[:-1]
    return int(digits) if digits and not code.endswith("s") else 0


def _random_value(rng: random.Random, code: str) -> int:
    kind = code[-1]
    bits = {"B": 8, "H": 16, "I": 32, "Q": 64, "b": 8, "h": 16, "i": 32, "q": 64}[kind]
    if kind.islower():
        return rng.randrange(-(1 << (bits - 1)), 1 << (bits - 1))
    return rng.randrange(1 << bits)


def _random_model(cls: type[PackedModel], rng: random.Random) -> PackedModel:
    values: dict[str, object] = {}
    for name, code in _field_codes(cls):
        n = _array_len(code)
        if n:
            values[name] = [_random_value(rng, code) for _ in range(n)]
        else:
            values[name] = _random_value(rng, code)
    return cls(**values)


def _fill_statements(cls: type[PackedModel], model: PackedModel) -> list[str]:
    lines = []
    for name, code in _field_codes(cls):
        member = _c_member(cls, name)
        value = getattr(model, name)
        items = list(enumerate(value)) if _array_len(code) else [(None, value)]
        for index, item in items:
            ref = f"s.{member}" if index is None else f"s.{member}[{index}]"
            lines.append(f"  put((void *)&{ref}, sizeof {ref}, {item & ((1 << 64) - 1)}ULL);")
    return lines


def _offset_constants() -> dict[str, tuple[list[str], str]]:
    """Map each aql *_OFFSET / *_COUNT constant to (C types, C member)."""
    out: dict[str, tuple[list[str], str]] = {}
    for name in dir(aql):
        if not (name.endswith("_OFFSET") or name.endswith("_COUNT")) or not name.isupper():
            continue
        if name in _CONST_SPECIAL:
            out[name] = _CONST_SPECIAL[name]
            continue
        prefix = max((p for p in _CONST_PREFIXES if name.startswith(p)), key=len)
        stem = name[len(prefix) :].rsplit("_", 1)[0]
        out[name] = (_CONST_PREFIXES[prefix], stem.lower())
    return out


def _enum_constants() -> dict[str, int]:
    consts: dict[str, int] = {}
    for member in PacketType:
        consts[f"HSA_PACKET_TYPE_{member.name}"] = member.value
    for member in FenceScope:
        consts[f"HSA_FENCE_SCOPE_{member.name}"] = member.value
    for name in dir(aql):
        if name.startswith(("HSA_PACKET_HEADER_", "HSA_KERNEL_DISPATCH_", "HSA_AMD_PACKET_")):
            consts[name] = getattr(aql, name)
    return consts


_HEADER_EXAMPLE = (
    "(HSA_PACKET_TYPE_BARRIER_OR << HSA_PACKET_HEADER_TYPE)"
    " | (1 << HSA_PACKET_HEADER_BARRIER)"
    " | (HSA_FENCE_SCOPE_AGENT << HSA_PACKET_HEADER_SCACQUIRE_FENCE_SCOPE)"
    " | (HSA_FENCE_SCOPE_NONE << HSA_PACKET_HEADER_SCRELEASE_FENCE_SCOPE)"
)


def _generate_probe(samples: dict[type[PackedModel], PackedModel]) -> str:
    lines = [
        "#include <stddef.h>",
        "#include <stdint.h>",
        "#include <stdio.h>",
        "#include <string.h>",
        *(f"#include <{h}>" for h in HEADERS),
        "static void put(void *dst, size_t n, uint64_t v) { memcpy(dst, &v, n); }",
        "static void dump(const char *name, const void *p, size_t n) {",
        '  printf("bytes %s ", name);',
        '  for (size_t i = 0; i < n; i++) printf("%02x", ((const unsigned char *)p)[i]);',
        '  printf("\\n");',
        "}",
        "int main(void) {",
    ]
    for cls, (ctype, _) in PACKETS.items():
        lines.append(f'  printf("size {ctype} %zu\\n", sizeof({ctype}));')
        for name, _code in _field_codes(cls):
            m = _c_member(cls, name)
            lines.append(
                f'  printf("field {ctype} {name} %zu %zu\\n", offsetof({ctype}, {m}),'
                f" sizeof((({ctype} *)0)->{m}));"
            )
        lines += ["  {", f"  {ctype} s;", "  memset(&s, 0, sizeof s);"]
        lines += _fill_statements(cls, samples[cls])
        lines += [f'  dump("{ctype}", &s, sizeof s);', "  }"]
    for name, (ctypes, member) in _offset_constants().items():
        for ctype in ctypes:
            if name.endswith("_COUNT"):
                expr = f"sizeof((({ctype} *)0)->{member}) / sizeof((({ctype} *)0)->{member}[0])"
            else:
                expr = f"offsetof({ctype}, {member})"
            lines.append(f'  printf("oconst {name} {ctype} %zu\\n", (size_t)({expr}));')
    for name in _enum_constants():
        lines.append(f'  printf("const {name} %lld\\n", (long long)({name}));')
    lines.append(f'  printf("const HEADER_EXAMPLE %lld\\n", (long long)({_HEADER_EXAMPLE}));')
    lines += ["  return 0;", "}"]
    return "\n".join(lines) + "\n"


def _compile_and_run(tmp: Path, source: str) -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    check = subprocess.run(
        [gcc, "-E", "-x", "c", "-"],
        input="".join(f"#include <{h}>\n" for h in HEADERS),
        capture_output=True,
        text=True,
    )
    if check.returncode != 0:
        pytest.skip("HSA headers (libhsa-runtime-dev: hsa/hsa.h, hsa/hsa_ext_amd.h) not found")
    src = tmp / "probe.c"
    exe = tmp / "probe"
    src.write_text(source)
    build = subprocess.run(
        [gcc, "-std=c11", "-Wall", "-Werror", "-o", str(exe), str(src)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, f"probe failed to compile:\n{build.stderr}"
    return subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout


class Probe:
    def __init__(self, output: str, samples: dict[type[PackedModel], PackedModel]) -> None:
        self.samples = samples
        self.sizes: dict[str, int] = {}
        self.fields: dict[str, dict[str, tuple[int, int]]] = {}
        self.bytes: dict[str, bytes] = {}
        self.oconsts: dict[tuple[str, str], int] = {}
        self.consts: dict[str, int] = {}
        for line in output.splitlines():
            kind, *rest = line.split()
            if kind == "size":
                self.sizes[rest[0]] = int(rest[1])
            elif kind == "field":
                self.fields.setdefault(rest[0], {})[rest[1]] = (int(rest[2]), int(rest[3]))
            elif kind == "bytes":
                self.bytes[rest[0]] = bytes.fromhex(rest[1])
            elif kind == "oconst":
                self.oconsts[(rest[0], rest[1])] = int(rest[2])
            elif kind == "const":
                self.consts[rest[0]] = int(rest[1])


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Probe:
    rng = random.Random(1234)
    samples = {cls: _random_model(cls, rng) for cls in PACKETS}
    tmp = tmp_path_factory.mktemp("aql_probe")
    return Probe(_compile_and_run(tmp, _generate_probe(samples)), samples)


# ------------------------------------------------------------------ layout vs. C


@pytest.mark.parametrize("cls", list(PACKETS), ids=lambda c: c.__name__)
def test_packet_size(probe: Probe, cls: type[PackedModel]) -> None:
    ctype = PACKETS[cls][0]
    assert probe.sizes[ctype] == PACKET_SIZE == cls.BYTE_SIZE == 64


@pytest.mark.parametrize("cls", list(PACKETS), ids=lambda c: c.__name__)
def test_packet_field_offsets_and_sizes(probe: Probe, cls: type[PackedModel]) -> None:
    ctype = PACKETS[cls][0]
    c_fields = probe.fields[ctype]
    assert set(c_fields) == set(cls.model_fields)
    for name in cls.model_fields:
        assert (cls.FIELD_OFFSETS[name], cls.FIELD_SIZES[name]) == c_fields[name], name
    # Contiguous fields spanning the whole struct leave no C member unmodeled.
    end = 0
    for offset, size in sorted(c_fields.values()):
        assert offset == end
        end = offset + size
    assert end == probe.sizes[ctype]


@pytest.mark.parametrize("cls", list(PACKETS), ids=lambda c: c.__name__)
def test_packet_bytes_match_c(probe: Probe, cls: type[PackedModel]) -> None:
    model = probe.samples[cls]
    c_bytes = probe.bytes[PACKETS[cls][0]]
    assert model.to_bytes() == c_bytes
    assert cls.from_bytes(c_bytes) == model


def test_offset_constants_match_c(probe: Probe) -> None:
    constants = _offset_constants()
    assert "COMPLETION_SIGNAL_OFFSET" in constants
    for name, (ctypes, _member) in constants.items():
        for ctype in ctypes:
            assert getattr(aql, name) == probe.oconsts[(name, ctype)], (name, ctype)
    assert aql.COMPLETION_SIGNAL_OFFSET == 56


def test_header_and_enum_constants_match_c(probe: Probe) -> None:
    expected = _enum_constants()
    assert "HSA_PACKET_HEADER_SCRELEASE_FENCE_SCOPE" in expected
    assert "HSA_KERNEL_DISPATCH_PACKET_SETUP_WIDTH_DIMENSIONS" in expected
    assert "HSA_AMD_PACKET_TYPE_BARRIER_VALUE" in expected
    for name, value in expected.items():
        assert probe.consts[name] == value, name


def test_make_header_matches_c(probe: Probe) -> None:
    h = make_header(
        PacketType.BARRIER_OR, barrier=True, acquire=FenceScope.AGENT, release=FenceScope.NONE
    )
    assert h == probe.consts["HEADER_EXAMPLE"]


# ------------------------------------------------------------------ pure Python behavior


def test_header_helpers_round_trip() -> None:
    for ptype in PacketType:
        for barrier in (False, True):
            for acquire in FenceScope:
                for release in FenceScope:
                    h = make_header(ptype, barrier=barrier, acquire=acquire, release=release)
                    assert 0 <= h < 1 << 16
                    assert header_type(h) == ptype
                    assert header_barrier(h) is barrier
                    assert header_acquire(h) == acquire
                    assert header_release(h) == release
                    assert header_fields(h) == (ptype, barrier, acquire, release)


def test_make_header_defaults_to_system_scopes() -> None:
    h = make_header(PacketType.KERNEL_DISPATCH)
    assert h == 2 | (2 << 9) | (2 << 11)


@pytest.mark.parametrize("cls", list(PACKETS), ids=lambda c: c.__name__)
def test_round_trip(cls: type[PackedModel]) -> None:
    rng = random.Random(cls.__name__)
    for _ in range(50):
        model = _random_model(cls, rng)
        raw = model.to_bytes()
        assert len(raw) == PACKET_SIZE
        back = cls.from_bytes(raw)
        assert back == model
        assert back.model_fields_set == set(cls.model_fields)
        assert back.to_bytes() == raw
        assert cls.from_bytes(bytearray(raw)) == model
        assert cls.from_bytes(memoryview(raw)) == model


def test_defaults_are_zero() -> None:
    assert KernelDispatchPacket().to_bytes() == bytes(64)
    assert BarrierAndPacket().to_bytes() == bytes(64)
    assert AgentDispatchPacket().to_bytes() == bytes(64)
    assert AmdBarrierValuePacket().amd_format == aql.HSA_AMD_PACKET_TYPE_BARRIER_VALUE


def test_from_bytes_offset_and_short_buffer() -> None:
    p = KernelDispatchPacket(header=make_header(PacketType.KERNEL_DISPATCH), grid_size_x=99)
    ring = bytes(PACKET_SIZE) + p.to_bytes()
    assert KernelDispatchPacket.from_bytes(ring, PACKET_SIZE) == p
    assert decode_packet(ring, PACKET_SIZE) == p
    with pytest.raises(ValueError, match="KernelDispatchPacket"):
        KernelDispatchPacket.from_bytes(bytes(63))


def test_built_packet_decodes_to_same_fields() -> None:
    header = make_header(PacketType.KERNEL_DISPATCH, barrier=True, acquire=FenceScope.AGENT)
    p = KernelDispatchPacket(
        header=header,
        setup=3 << aql.HSA_KERNEL_DISPATCH_PACKET_SETUP_DIMENSIONS,
        workgroup_size_x=64,
        workgroup_size_y=2,
        workgroup_size_z=1,
        grid_size_x=4096,
        grid_size_y=8,
        grid_size_z=1,
        private_segment_size=16,
        group_segment_size=1024,
        kernel_object=0x7F00_0000_1000,
        kernarg_address=0x7F00_0000_2000,
        completion_signal=0x7F00_0000_3000,
    )
    q = decode_packet(p.to_bytes())
    assert isinstance(q, KernelDispatchPacket)
    assert q.model_dump() == p.model_dump()
    assert q.dimensions == 3
    assert header_fields(q.header) == (PacketType.KERNEL_DISPATCH, True, 1, 2)


def test_decode_packet_dispatches_on_type() -> None:
    for ptype, cls in PACKET_TYPE_CLASSES.items():
        raw = cls(header=make_header(ptype), completion_signal=77).to_bytes()
        decoded = decode_packet(raw)
        assert type(decoded) is cls
        assert decoded.completion_signal == 77
    amd = AmdBarrierValuePacket(
        header=make_header(PacketType.VENDOR_SPECIFIC), signal=5, value=-1, mask=-1, cond=2
    )
    decoded = decode_packet(amd.to_bytes())
    assert isinstance(decoded, AmdBarrierValuePacket)
    assert (decoded.value, decoded.mask) == (-1, -1)


def test_decode_packet_invalid_slot_is_none() -> None:
    assert (
        decode_packet(BarrierAndPacket(header=make_header(PacketType.INVALID)).to_bytes()) is None
    )


@pytest.mark.parametrize("ptype", [6, 0x7F, 0xFF])
def test_decode_packet_unknown_type(ptype: int) -> None:
    with pytest.raises(ValueError, match=f"unknown AQL packet type {ptype}"):
        decode_packet(BarrierAndPacket(header=ptype).to_bytes())


def test_decode_packet_unknown_vendor_format() -> None:
    raw = AmdBarrierValuePacket(header=make_header(PacketType.VENDOR_SPECIFIC), amd_format=9)
    with pytest.raises(ValueError, match="vendor-specific AQL packet format 9"):
        decode_packet(raw.to_bytes())


def test_field_ranges_are_validated() -> None:
    with pytest.raises(pydantic.ValidationError):
        KernelDispatchPacket(workgroup_size_x=1 << 16)
    with pytest.raises(pydantic.ValidationError):
        KernelDispatchPacket(grid_size_x=-1)
    with pytest.raises(pydantic.ValidationError):
        KernelDispatchPacket(kernel_object=1 << 64)
    with pytest.raises(pydantic.ValidationError):
        BarrierAndPacket(dep_signal=[1, 2, 3])
    with pytest.raises(pydantic.ValidationError):
        AgentDispatchPacket(arg=[0] * 5)
    with pytest.raises(pydantic.ValidationError):
        AmdBarrierValuePacket(value=1 << 63)
    with pytest.raises(pydantic.ValidationError):
        KernelDispatchPacket(not_a_field=1)
