"""Runtime structure layouts checked against the real ROCm headers with gcc.

``hsa_queue_t``, ``amd_queue_t`` and ``amd_signal_t`` come from ``hsa.h``,
``amd_hsa_queue.h`` and ``amd_hsa_signal.h``; the C probe is generated from the Python
layouts so every field is covered. The kernel descriptor has no system header, so its
expectations are transcribed from LLVM's ``AMDHSAKernelDescriptor.h``.
"""

import math
import random
import shutil
import subprocess
from pathlib import Path

import pydantic
import pytest

from hw_model import structs
from hw_model.aql import PackedModel
from hw_model.structs import (
    COMPUTE_PGM_RSRC1_GRANULATED_WAVEFRONT_SGPR_COUNT,
    COMPUTE_PGM_RSRC1_GRANULATED_WORKITEM_VGPR_COUNT,
    KERNEL_DESCRIPTOR_SIZE,
    AmdQueue,
    AmdSignal,
    AmdSignalKind,
    BitField,
    HsaQueue,
    HsaQueueFeature,
    HsaQueueType,
    KernelDescriptor,
    allocated_sgpr_count,
    decode_sgpr_count,
    decode_vgpr_count,
    encode_sgpr_count,
    encode_vgpr_count,
    make_kernel_code_properties,
    make_rsrc1,
    make_rsrc2,
    make_rsrc3_gfx90a,
    num_extra_sgprs,
)

HEADERS = ("hsa/hsa.h", "hsa/amd_hsa_queue.h", "hsa/amd_hsa_signal.h")
STRUCTS: dict[type[PackedModel], str] = {
    HsaQueue: "hsa_queue_t",
    AmdQueue: "amd_queue_t",
    AmdSignal: "amd_signal_t",
}
# Module-constant prefix -> C type its *_OFFSET and *_SIZE constants describe.
_CONST_PREFIXES = {
    "HSA_QUEUE_": "hsa_queue_t",
    "AMD_QUEUE_": "amd_queue_t",
    "AMD_SIGNAL_": "amd_signal_t",
}
_U64 = (1 << 64) - 1


# ------------------------------------------------------------------ C probe machinery


def _array_len(code: str) -> int:
    digits = code[:-1]
    return int(digits) if digits and not code.endswith("s") else 0


def _leaves(cls: type[PackedModel], prefix: str = "") -> list[tuple[str, str]]:
    """(dotted path, struct code) of every scalar or array member, embedded structs expanded."""
    out: list[tuple[str, str]] = []
    for name, code in cls.LAYOUT:
        if isinstance(code, str):
            out.append((prefix + name, code))
        else:
            out += _leaves(code, f"{prefix}{name}.")
    return out


def _leaf_offset(cls: type[PackedModel], path: str) -> tuple[int, int]:
    head, _, rest = path.partition(".")
    if not rest:
        return cls.FIELD_OFFSETS[head], cls.FIELD_SIZES[head]
    sub = dict(cls.LAYOUT)[head]
    assert not isinstance(sub, str)
    offset, size = _leaf_offset(sub, rest)
    return cls.FIELD_OFFSETS[head] + offset, size


def _get(model: PackedModel, path: str) -> object:
    value: object = model
    for part in path.split("."):
        value = getattr(value, part)
    return value


def _random_value(rng: random.Random, code: str) -> int:
    kind = code[-1]
    bits = {"B": 8, "H": 16, "I": 32, "Q": 64, "q": 64}[kind]
    if kind == "q":
        return rng.randrange(-(1 << 63), 1 << 63)
    return rng.randrange(1 << bits)


def _random_model(cls: type[PackedModel], rng: random.Random) -> PackedModel:
    values: dict[str, object] = {}
    for name, code in cls.LAYOUT:
        if not isinstance(code, str):
            values[name] = _random_model(code, rng)
        elif code.endswith("s"):
            values[name] = rng.randbytes(int(code[:-1]))
        elif n := _array_len(code):
            values[name] = [_random_value(rng, code) for _ in range(n)]
        else:
            values[name] = _random_value(rng, code)
    return cls(**values)


def _offset_constants() -> dict[str, tuple[str, str]]:
    """Map each struct *_OFFSET / *_SIZE constant to (C type, C expression)."""
    out: dict[str, tuple[str, str]] = {}
    for name in dir(structs):
        prefix = next((p for p in _CONST_PREFIXES if name.startswith(p)), None)
        if prefix is None:
            continue
        ctype = _CONST_PREFIXES[prefix]
        if name == prefix + "SIZE":
            out[name] = (ctype, f"sizeof({ctype})")
        elif name.endswith("_OFFSET"):
            member = name[len(prefix) : -len("_OFFSET")].lower()
            out[name] = (ctype, f"offsetof({ctype}, {member})")
    return out


def _enum_constants() -> dict[str, int]:
    consts: dict[str, int] = {}
    for member in HsaQueueType:
        consts[f"HSA_QUEUE_TYPE_{member.name}"] = member.value
    for member in HsaQueueFeature:
        consts[f"HSA_QUEUE_FEATURE_{member.name}"] = member.value
    for member in AmdSignalKind:
        consts[f"AMD_SIGNAL_KIND_{member.name}"] = member.value
    for name in dir(structs):
        if name.startswith("AMD_QUEUE_PROPERTIES_") or name.endswith("_ALIGN_BYTES"):
            consts[name] = getattr(structs, name)
    consts["_Alignof(amd_queue_t)"] = structs.AMD_QUEUE_ALIGN_BYTES
    consts["_Alignof(amd_signal_t)"] = structs.AMD_SIGNAL_ALIGN_BYTES
    return consts


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
    for cls, ctype in STRUCTS.items():
        lines.append(f'  printf("size {ctype} %zu\\n", sizeof({ctype}));')
        members = [name for name, _ in cls.LAYOUT] + [path for path, _ in _leaves(cls)]
        for m in dict.fromkeys(members):
            lines.append(
                f'  printf("field {ctype} {m} %zu %zu\\n", offsetof({ctype}, {m}),'
                f" sizeof((({ctype} *)0)->{m}));"
            )
        lines += ["  {", f"  static {ctype} s;", "  memset(&s, 0, sizeof s);"]
        for path, code in _leaves(cls):
            value = _get(samples[cls], path)
            items = list(enumerate(value)) if _array_len(code) else [(None, value)]
            for index, item in items:
                ref = f"s.{path}" if index is None else f"s.{path}[{index}]"
                lines.append(f"  put((void *)&{ref}, sizeof {ref}, {item & _U64}ULL);")
        lines += [f'  dump("{ctype}", &s, sizeof s);', "  }"]
    for name, (_ctype, expr) in _offset_constants().items():
        lines.append(f'  printf("const {name} %lld\\n", (long long)({expr}));')
    for name in _enum_constants():
        # amd_queue_properties_t's RESERVED1 mask overflows int, so compare as uint32.
        cast = "(unsigned int)" if name.startswith("AMD_QUEUE_PROPERTIES_") else ""
        lines.append(f'  printf("const {name} %lld\\n", (long long){cast}({name}));')
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
        pytest.skip("ROCm headers (libhsa-runtime-dev: hsa/amd_hsa_queue.h, ...) not found")
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
        self.consts: dict[str, int] = {}
        for line in output.splitlines():
            kind, rest = line.split(" ", 1)
            if kind == "size":
                ctype, size = rest.split()
                self.sizes[ctype] = int(size)
            elif kind == "field":
                ctype, member, offset, size = rest.split()
                self.fields.setdefault(ctype, {})[member] = (int(offset), int(size))
            elif kind == "bytes":
                ctype, hexdata = rest.split()
                self.bytes[ctype] = bytes.fromhex(hexdata)
            elif kind == "const":
                name, value = rest.rsplit(" ", 1)
                self.consts[name] = int(value)


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Probe:
    rng = random.Random(4321)
    samples = {cls: _random_model(cls, rng) for cls in STRUCTS}
    tmp = tmp_path_factory.mktemp("structs_probe")
    return Probe(_compile_and_run(tmp, _generate_probe(samples)), samples)


# ------------------------------------------------------------------ layouts vs. C


def test_struct_sizes(probe: Probe) -> None:
    assert probe.sizes["hsa_queue_t"] == HsaQueue.BYTE_SIZE == structs.HSA_QUEUE_SIZE == 40
    assert probe.sizes["amd_queue_t"] == AmdQueue.BYTE_SIZE == structs.AMD_QUEUE_SIZE == 256
    assert probe.sizes["amd_signal_t"] == AmdSignal.BYTE_SIZE == structs.AMD_SIGNAL_SIZE == 64


@pytest.mark.parametrize("cls", list(STRUCTS), ids=lambda c: c.__name__)
def test_field_offsets_and_sizes(probe: Probe, cls: type[PackedModel]) -> None:
    ctype = STRUCTS[cls]
    c_fields = probe.fields[ctype]
    for name in cls.model_fields:
        assert (cls.FIELD_OFFSETS[name], cls.FIELD_SIZES[name]) == c_fields[name], name
    for path, _code in _leaves(cls):
        assert _leaf_offset(cls, path) == c_fields[path], path
    # Contiguous leaves spanning the whole struct leave no C member unmodeled.
    end = 0
    for offset, size in sorted(c_fields[path] for path, _ in _leaves(cls)):
        assert offset == end
        end = offset + size
    assert end == probe.sizes[ctype]


@pytest.mark.parametrize("cls", list(STRUCTS), ids=lambda c: c.__name__)
def test_bytes_match_c(probe: Probe, cls: type[PackedModel]) -> None:
    model = probe.samples[cls]
    c_bytes = probe.bytes[STRUCTS[cls]]
    assert model.to_bytes() == c_bytes
    assert cls.from_bytes(c_bytes) == model


def test_offset_constants_match_c(probe: Probe) -> None:
    constants = _offset_constants()
    for required in (
        "AMD_QUEUE_WRITE_DISPATCH_ID_OFFSET",
        "AMD_QUEUE_READ_DISPATCH_ID_OFFSET",
        "AMD_QUEUE_QUEUE_INACTIVE_SIGNAL_OFFSET",
        "AMD_SIGNAL_QUEUE_PTR_OFFSET",
    ):
        assert required in constants
    for name in constants:
        assert getattr(structs, name) == probe.consts[name], name
    # Every field has a constant, so hot-path readers never need FIELD_OFFSETS.
    for cls, prefix in (
        (HsaQueue, "HSA_QUEUE_"),
        (AmdQueue, "AMD_QUEUE_"),
        (AmdSignal, "AMD_SIGNAL_"),
    ):
        for field in cls.model_fields:
            assert getattr(structs, f"{prefix}{field.upper()}_OFFSET") == cls.FIELD_OFFSETS[field]
    assert structs.AMD_QUEUE_WRITE_DISPATCH_ID_OFFSET == 56
    assert structs.AMD_QUEUE_READ_DISPATCH_ID_OFFSET == 128
    assert structs.AMD_SIGNAL_VALUE_OFFSET == 8


def test_enum_and_property_constants_match_c(probe: Probe) -> None:
    expected = _enum_constants()
    assert "AMD_QUEUE_PROPERTIES_IS_PTR64" in expected
    assert "AMD_QUEUE_PROPERTIES_RESERVED1_WIDTH" in expected
    for name, value in expected.items():
        assert probe.consts[name] == value, name
    for stem in (
        "ENABLE_TRAP_HANDLER",
        "IS_PTR64",
        "ENABLE_TRAP_HANDLER_DEBUG_SGPRS",
        "ENABLE_PROFILING",
        "USE_SCRATCH_ONCE",
        "RESERVED1",
    ):
        shift = getattr(structs, f"AMD_QUEUE_PROPERTIES_{stem}_SHIFT")
        width = getattr(structs, f"AMD_QUEUE_PROPERTIES_{stem}_WIDTH")
        assert getattr(structs, f"AMD_QUEUE_PROPERTIES_{stem}") == ((1 << width) - 1) << shift


# ------------------------------------------------------------------ pure Python behavior


@pytest.mark.parametrize("cls", [*STRUCTS, KernelDescriptor], ids=lambda c: c.__name__)
def test_round_trip(cls: type[PackedModel]) -> None:
    rng = random.Random(cls.__name__)
    for _ in range(20):
        model = _random_model(cls, rng)
        raw = model.to_bytes()
        assert len(raw) == cls.BYTE_SIZE
        back = cls.from_bytes(raw)
        assert back == model
        assert back.to_bytes() == raw


def test_amd_queue_embeds_hsa_queue() -> None:
    hq = HsaQueue(type=HsaQueueType.SINGLE, features=HsaQueueFeature.KERNEL_DISPATCH, size=64)
    q = AmdQueue(hsa_queue=hq, write_dispatch_id=3, read_dispatch_id=2)
    raw = q.to_bytes()
    assert raw[: HsaQueue.BYTE_SIZE] == hq.to_bytes()
    assert HsaQueue.from_bytes(raw) == hq
    assert int.from_bytes(raw[56:64], "little") == 3
    assert AmdQueue().to_bytes() == bytes(256)


def test_amd_signal_union_and_ranges() -> None:
    sig = AmdSignal(kind=AmdSignalKind.DOORBELL, value=-(1 << 63))
    assert sig.hardware_doorbell_ptr == 1 << 63
    assert AmdSignal.from_bytes(sig.to_bytes()).kind == AmdSignalKind.DOORBELL
    with pytest.raises(pydantic.ValidationError):
        AmdSignal(event_id=1 << 32)
    with pytest.raises(pydantic.ValidationError):
        AmdSignal(reserved3=[0])


# ------------------------------------------------------------------ kernel descriptor

# llvm::amdhsa::kernel_descriptor_t, transcribed from LLVM's AMDHSAKernelDescriptor.h
# (its *_OFFSET enum and member types); no system header defines it.
LLVM_KD_LAYOUT = {
    "group_segment_fixed_size": (0, 4),
    "private_segment_fixed_size": (4, 4),
    "kernarg_size": (8, 4),
    "reserved0": (12, 4),
    "kernel_code_entry_byte_offset": (16, 8),
    "reserved1": (24, 20),
    "compute_pgm_rsrc3": (44, 4),
    "compute_pgm_rsrc1": (48, 4),
    "compute_pgm_rsrc2": (52, 4),
    "kernel_code_properties": (56, 2),
    "kernarg_preload": (58, 2),
    "reserved3": (60, 4),
}


def test_kernel_descriptor_layout() -> None:
    assert KernelDescriptor.BYTE_SIZE == KERNEL_DESCRIPTOR_SIZE == 64
    assert list(KernelDescriptor.model_fields) == list(LLVM_KD_LAYOUT)
    for name, (offset, size) in LLVM_KD_LAYOUT.items():
        assert KernelDescriptor.FIELD_OFFSETS[name] == offset, name
        assert KernelDescriptor.FIELD_SIZES[name] == size, name
        assert getattr(structs, f"KD_{name.upper()}_OFFSET") == offset, name


def test_kernel_descriptor_signed_entry_offset() -> None:
    kd = KernelDescriptor(kernel_code_entry_byte_offset=-256, compute_pgm_rsrc1=0xDEADBEEF)
    raw = kd.to_bytes()
    assert raw[16:24] == (-256).to_bytes(8, "little", signed=True)
    assert raw[48:52] == (0xDEADBEEF).to_bytes(4, "little")
    assert KernelDescriptor.from_bytes(raw) == kd
    with pytest.raises(pydantic.ValidationError):
        KernelDescriptor(reserved1=bytes(19))


# (name, shift, width) spot checks transcribed from AMDHSAKernelDescriptor.h.
LLVM_BITS = [
    ("COMPUTE_PGM_RSRC1_GRANULATED_WORKITEM_VGPR_COUNT", 0, 6),
    ("COMPUTE_PGM_RSRC1_GRANULATED_WAVEFRONT_SGPR_COUNT", 6, 4),
    ("COMPUTE_PGM_RSRC1_FLOAT_DENORM_MODE_16_64", 18, 2),
    ("COMPUTE_PGM_RSRC1_GFX6_GFX11_ENABLE_IEEE_MODE", 23, 1),
    ("COMPUTE_PGM_RSRC1_GFX9_PLUS_FP16_OVFL", 26, 1),
    ("COMPUTE_PGM_RSRC2_ENABLE_PRIVATE_SEGMENT", 0, 1),
    ("COMPUTE_PGM_RSRC2_USER_SGPR_COUNT", 1, 5),
    ("COMPUTE_PGM_RSRC2_ENABLE_SGPR_WORKGROUP_ID_X", 7, 1),
    ("COMPUTE_PGM_RSRC2_ENABLE_SGPR_WORKGROUP_ID_Z", 9, 1),
    ("COMPUTE_PGM_RSRC2_ENABLE_VGPR_WORKITEM_ID", 11, 2),
    ("COMPUTE_PGM_RSRC2_GRANULATED_LDS_SIZE", 15, 9),
    ("COMPUTE_PGM_RSRC3_GFX90A_ACCUM_OFFSET", 0, 6),
    ("COMPUTE_PGM_RSRC3_GFX90A_TG_SPLIT", 16, 1),
    ("KERNEL_CODE_PROPERTY_ENABLE_SGPR_PRIVATE_SEGMENT_BUFFER", 0, 1),
    ("KERNEL_CODE_PROPERTY_ENABLE_SGPR_KERNARG_SEGMENT_PTR", 3, 1),
    ("KERNEL_CODE_PROPERTY_ENABLE_WAVEFRONT_SIZE32", 10, 1),
    ("KERNEL_CODE_PROPERTY_USES_DYNAMIC_STACK", 11, 1),
    ("KERNARG_PRELOAD_SPEC_OFFSET", 7, 9),
]


@pytest.mark.parametrize(("name", "shift", "width"), LLVM_BITS)
def test_bit_field_values(name: str, shift: int, width: int) -> None:
    field = getattr(structs, name)
    assert field == BitField(shift, width, ((1 << width) - 1) << shift)


def _fields(prefix: str, exclude: tuple[str, ...] = ()) -> list[BitField]:
    return [
        getattr(structs, n)
        for n in dir(structs)
        if n.startswith(prefix) and not any(x in n for x in exclude)
    ]


@pytest.mark.parametrize(
    ("prefix", "exclude", "bits"),
    [
        # The GFX6-GFX9 view of each register: its fields tile the register exactly.
        ("COMPUTE_PGM_RSRC1_", ("GFX10_PLUS",), 32),
        ("COMPUTE_PGM_RSRC2_", (), 32),
        ("COMPUTE_PGM_RSRC3_GFX90A_", (), 32),
        ("KERNEL_CODE_PROPERTY_", (), 16),
        ("KERNARG_PRELOAD_SPEC_", (), 16),
    ],
)
def test_bit_fields_tile_register(prefix: str, exclude: tuple[str, ...], bits: int) -> None:
    fields = _fields(prefix, exclude)
    covered = 0
    for f in fields:
        assert covered & f.mask == 0, f
        covered |= f.mask
    assert covered == (1 << bits) - 1


def test_bit_field_get_put() -> None:
    f = structs.COMPUTE_PGM_RSRC2_USER_SGPR_COUNT
    reg = f.put(0xFFFF_FFFF, 6)
    assert f.get(reg) == 6
    assert reg | f.mask == 0xFFFF_FFFF
    with pytest.raises(ValueError):
        f.put(0, 32)


@pytest.mark.parametrize("granule", [4, 8])
def test_vgpr_encode_decode(granule: int) -> None:
    for vgprs in range(0, 64 * granule + 1):
        field = encode_vgpr_count(vgprs, granule)
        assert field == max(0, math.ceil(vgprs / granule) - 1)
        rsrc1 = COMPUTE_PGM_RSRC1_GRANULATED_WORKITEM_VGPR_COUNT.put(0, field)
        allocated = decode_vgpr_count(rsrc1, granule)
        assert max(vgprs, 1) <= allocated < max(vgprs, 1) + granule
        assert allocated % granule == 0
        assert encode_vgpr_count(allocated, granule) == field
    with pytest.raises(ValueError):
        encode_vgpr_count(64 * granule + 1, granule)


def test_vgpr_granules_match_llvm_codegen() -> None:
    # LLVM codegen test expectations: gfx900 with 256 VGPRs -> VGPRBlocks 63, gfx908 with
    # 252 -> 62 (granule 4); gfx90a with 64 total VGPRs -> 7 (granule 8).
    assert encode_vgpr_count(256, structs.VGPR_ENCODING_GRANULE_GFX9) == 63
    assert encode_vgpr_count(252, structs.VGPR_ENCODING_GRANULE_GFX9) == 62
    assert encode_vgpr_count(64, structs.VGPR_ENCODING_GRANULE_GFX90A) == 7
    assert encode_vgpr_count(512, structs.VGPR_ENCODING_GRANULE_GFX90A) == 63


def test_sgpr_encode_decode() -> None:
    for sgprs in range(0, 129):
        field = encode_sgpr_count(sgprs)
        assert field == max(0, math.ceil(sgprs / 8) - 1)
        rsrc1 = COMPUTE_PGM_RSRC1_GRANULATED_WAVEFRONT_SGPR_COUNT.put(0, field)
        encoded = decode_sgpr_count(rsrc1)
        assert max(sgprs, 1) <= encoded < max(sgprs, 1) + 8
        allocated = allocated_sgpr_count(rsrc1)
        assert allocated % 16 == 0 and encoded <= allocated < encoded + 16
    with pytest.raises(ValueError):
        encode_sgpr_count(129)
    # 20 SGPRs encode as 3 blocks of 8 (24) and the SPI reserves 32 on gfx9.
    rsrc1 = make_rsrc1(sgprs=20)
    assert (decode_sgpr_count(rsrc1), allocated_sgpr_count(rsrc1)) == (24, 32)


def test_num_extra_sgprs() -> None:
    assert num_extra_sgprs(vcc=False, flat_scratch=False, xnack=False) == 0
    assert num_extra_sgprs(vcc=True, flat_scratch=False, xnack=False) == 2
    assert num_extra_sgprs(vcc=True, flat_scratch=False, xnack=True) == 4
    assert num_extra_sgprs(vcc=True, flat_scratch=True, xnack=True) == 6


def test_make_rsrc1() -> None:
    rsrc1 = make_rsrc1(vgprs=40, sgprs=30, float_denorm_mode_32=3)
    assert decode_vgpr_count(rsrc1, 4) == 40
    assert decode_sgpr_count(rsrc1) == 32
    assert structs.COMPUTE_PGM_RSRC1_FLOAT_DENORM_MODE_32.get(rsrc1) == 3
    assert structs.COMPUTE_PGM_RSRC1_FLOAT_DENORM_MODE_16_64.get(rsrc1) == 3
    assert structs.COMPUTE_PGM_RSRC1_GFX6_GFX11_ENABLE_DX10_CLAMP.get(rsrc1) == 1
    assert structs.COMPUTE_PGM_RSRC1_GFX6_GFX11_ENABLE_IEEE_MODE.get(rsrc1) == 1
    assert make_rsrc1(vgprs=40, vgpr_granule=8) & 0x3F == 4
    assert make_rsrc1(granulated_workitem_vgpr_count=5) & 0x3F == 5
    with pytest.raises(ValueError):
        make_rsrc1(vgprs=8, granulated_workitem_vgpr_count=1)
    with pytest.raises(ValueError):
        make_rsrc1(priority=4)


def test_make_rsrc2() -> None:
    rsrc2 = make_rsrc2(
        enable_private_segment=1,
        user_sgpr_count=6,
        enable_sgpr_workgroup_id_y=1,
        enable_vgpr_workitem_id=structs.SystemVgprWorkitemId.X_Y,
    )
    assert structs.COMPUTE_PGM_RSRC2_ENABLE_PRIVATE_SEGMENT.get(rsrc2) == 1
    assert structs.COMPUTE_PGM_RSRC2_USER_SGPR_COUNT.get(rsrc2) == 6
    assert structs.COMPUTE_PGM_RSRC2_ENABLE_SGPR_WORKGROUP_ID_X.get(rsrc2) == 1
    assert structs.COMPUTE_PGM_RSRC2_ENABLE_SGPR_WORKGROUP_ID_Y.get(rsrc2) == 1
    assert structs.COMPUTE_PGM_RSRC2_ENABLE_SGPR_WORKGROUP_ID_Z.get(rsrc2) == 0
    assert structs.COMPUTE_PGM_RSRC2_ENABLE_VGPR_WORKITEM_ID.get(rsrc2) == 1
    with pytest.raises(ValueError):
        make_rsrc2(user_sgpr_count=32)


def test_make_rsrc3_and_kernel_code_properties() -> None:
    assert (
        structs.COMPUTE_PGM_RSRC3_GFX90A_ACCUM_OFFSET.get(make_rsrc3_gfx90a(accum_offset=32)) == 7
    )
    assert make_rsrc3_gfx90a(accum_offset=4, tg_split=1) == 1 << 16
    with pytest.raises(ValueError):
        make_rsrc3_gfx90a(accum_offset=6)
    props = make_kernel_code_properties(
        enable_sgpr_private_segment_buffer=1,
        enable_sgpr_dispatch_ptr=1,
        enable_sgpr_kernarg_segment_ptr=1,
    )
    assert props == 0b1011
