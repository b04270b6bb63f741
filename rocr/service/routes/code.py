"""Code objects: load one for an agent (hsa_executable_load_agent_code_object) and look up its
kernel symbols (hsa_executable_get_symbol_by_name, hsa_executable_symbol_get_info).

The server loads built-in code objects by name, or code-object bytes the client uploads; it
never opens a path on its own file system.
"""

from __future__ import annotations

import struct
from typing import Annotated

from fastapi import Query, Request

import rocr
from hw_model.kernels import CODE_OBJECT_MAGIC, decode_code_object
from hw_model.structs import KERNEL_DESCRIPTOR_SIZE
from rocr import elf
from rocr.executable import CODE_ALIGN, read_code_object
from rocr.service import emulation
from rocr.service.deps import (
    ERRORS,
    PREFIX,
    System,
    body_kind,
    dual_body,
    json_body,
    responses,
)
from rocr.service.emulation import EmulatedRoute, EmulatedRouter
from rocr.service.errors import ApiError, limit_error
from rocr.service.schemas import (
    CodeObjectLoad,
    ExecutableInfo,
    KernelArgInfo,
    KernelSymbolInfo,
    ServerLimits,
)
from rocr.service.systems import PAGE, ServedSystem
from rocr.status import Status

router = EmulatedRouter(
    prefix=PREFIX, tags=["code objects"], responses=ERRORS, route_class=EmulatedRoute
)

# Host memory of one kernel symbol (KernelSymbol, its info and table entry): ~1 KiB measured
# with tracemalloc loading the built-in code object.
KERNEL_SYMBOL_BYTES = 1024


def loader_bytes(kernels: int) -> int:
    """The loader's one GPU-visible allocation for `kernels` entries, as rocr.executable.load
    lays it out: 64-byte descriptors padded to CODE_ALIGN, then CODE_ALIGN of code each."""
    size = -(-kernels * KERNEL_DESCRIPTOR_SIZE // CODE_ALIGN) * CODE_ALIGN + kernels * CODE_ALIGN
    return max(PAGE, -(-size // PAGE) * PAGE)


def declared_kernels(blob: bytes, limits: ServerLimits) -> tuple[int, int] | None:
    """How many kernel entries an hsaemu code object declares (checked against the limit
    before the loader builds anything), and how many distinct names they have (symbols the
    loader may keep); None for other images (the loader says what they are)."""
    if not blob.startswith(CODE_OBJECT_MAGIC):
        return None

    def bad(why: str) -> ApiError:
        return ApiError(400, Status.ERROR_INVALID_CODE_OBJECT, f"bad code object metadata: {why}")

    try:
        meta = decode_code_object(blob)
    except RecursionError:
        raise bad("nested too deeply") from None
    except ValueError as e:  # UnicodeDecodeError and json.JSONDecodeError included
        raise bad(f"not JSON: {e}") from None
    kernels = meta.get("amdhsa.kernels") if isinstance(meta, dict) else None
    if not isinstance(kernels, list):
        got = type(meta).__name__ if not isinstance(meta, dict) else type(kernels).__name__
        raise bad(f"expected an object with an 'amdhsa.kernels' list, got {got}")
    lim = limits.max_kernels_per_code_object
    if len(kernels) > lim:
        raise limit_error(
            422,
            "max_kernels_per_code_object",
            lim,
            f"the code object declares {len(kernels)} kernels",
        )
    names = {k[".name"] for k in kernels if isinstance(k, dict) and isinstance(k.get(".name"), str)}
    return len(kernels), len(names)


# What a loader may be made to go through in an uploaded ELF: symbol, relocation and note
# entries over all its sections. Real code objects have a few per kernel (tens to hundreds in
# all); the loader handles an entry in Python (~2-5 us), so this bounds a load to well under a
# second. Sections may overlap in an ELF, so without a bound one 16 MiB upload could list the
# same 700,000 relocations in each of 65,535 sections.
ELF_TABLE_ENTRIES_MAX = 1 << 16
_ENTRY_BYTES = {elf.SHT_SYMTAB: 24, elf.SHT_DYNSYM: 24, elf.SHT_RELA: 24, elf.SHT_NOTE: 12}


def elf_bounds(blob: bytes) -> int | None:
    """Bytes the loader's image of an uploaded ELF (or the largest of an offload bundle's)
    takes, once its tables are checked against ELF_TABLE_ENTRIES_MAX (400 past it); None for
    anything that is not an ELF or a bundle, or that the loader will refuse as malformed
    (it says why)."""
    images = [blob]
    if blob.startswith(elf.OFFLOAD_BUNDLE_MAGIC):
        try:
            images = [data for _, data in elf.parse_offload_bundle(blob)]
        except elf.ElfError:
            return None
    biggest: int | None = None
    for data in images:
        if not data.startswith(elf.ELF_MAGIC):
            continue
        try:
            img = elf.Elf64(data)
        except (elf.ElfError, struct.error):
            continue
        entries = sum(
            sec.size // _ENTRY_BYTES[sec.type] for sec in img.sections if sec.type in _ENTRY_BYTES
        )
        if entries > ELF_TABLE_ENTRIES_MAX:
            raise ApiError(
                400,
                Status.ERROR_INVALID_CODE_OBJECT,
                f"the ELF code object's symbol, relocation and note sections hold {entries} "
                f"entries; this server loads at most {ELF_TABLE_ENTRIES_MAX}",
            )
        loads = [sg.vaddr + sg.memsz for sg in img.segments if sg.type == elf.PT_LOAD]
        if loads:
            size = max(PAGE, -(-max(loads) // PAGE) * PAGE)
            biggest = size if biggest is None else max(biggest, size)
    return biggest


def executable_bytes(kernels: int, symbols: int) -> int:
    return loader_bytes(kernels) + symbols * KERNEL_SYMBOL_BYTES


def symbol_info(k: rocr.KernelSymbol) -> KernelSymbolInfo:
    info = k.info()
    info["args"] = [KernelArgInfo(**a) for a in info["args"]]
    return KernelSymbolInfo(**info)


def executable_info(eid: int, exe: rocr.Executable) -> ExecutableInfo:
    return ExecutableInfo(
        id=eid, agent=exe.agent.node, kernels=[symbol_info(k) for k in exe.symbols.values()]
    )


@router.post(
    "/executables",
    status_code=201,
    openapi_extra=dual_body(
        "CodeObjectLoad", "JSON naming built-in kernels, or the code object's bytes"
    ),
    responses=responses(415, 507),
)
async def load_code_object(
    s: System,
    request: Request,
    agent: Annotated[int | None, Query(ge=0, description="for an uploaded code object")] = None,
) -> ExecutableInfo:
    """Load a code object for a GPU agent: the loader writes its kernel descriptors."""
    source: str | bytes
    if body_kind(request) == "octet":
        source = await request.body()
    else:
        req = CodeObjectLoad.model_validate(await json_body(request))
        source, agent = req.source, req.agent if req.agent is not None else agent
        if source != "builtin" and not source.startswith("builtin:"):
            raise ApiError(
                400,
                Status.ERROR_INVALID_FILE,
                f"the server loads built-in code objects by name ('builtin', "
                f"'builtin:square,vector_add'), not {source!r}; upload any other code "
                "object's bytes as application/octet-stream",
            )

    if isinstance(source, str):  # built-in kernels: a load of known, bounded cost (~1 ms)
        return await emulation.in_turn_light(s, _load, s, source, agent)
    return await emulation.in_turn(s, _load, s, source, agent)


def _load(s: ServedSystem, source: str | bytes, agent: int | None) -> ExecutableInfo:
    blob = read_code_object(source) if isinstance(source, str) else source
    declared = declared_kernels(blob, s.limits)
    image = elf_bounds(blob) if declared is None else None
    with s.use() as rt:
        gpu = s.gpu(agent) if agent is not None else None
        if declared is not None:  # the most it can take: every distinct name a symbol
            s.ensure_room(executable_bytes(*declared))
        if image is not None:  # the loader allocates the image whole, before anything else
            s.ensure_room(image)
        exe = rt.load_code_object(blob, gpu)
        eid = s.add_executable(exe)
        # What it holds: the loader's allocation (every entry has its descriptor and code
        # slot, or an ELF's image) and one symbol per distinct kernel name.
        entries = len(exe.symbols) if declared is None else declared[0]
        held = executable_bytes(entries, len(exe.symbols))
        if image is not None:
            held = max(held, image + len(exe.symbols) * KERNEL_SYMBOL_BYTES)
        s.charge("executable", eid, held)
        return executable_info(eid, exe)


@router.get("/executables")
def list_executables(s: System) -> list[ExecutableInfo]:
    with s.use(counts=False):
        return [executable_info(i, e) for i, e in s.executables.items()]


@router.get("/executables/{executable_id}")
def get_executable(executable_id: int, s: System) -> ExecutableInfo:
    with s.use(counts=False):
        return executable_info(executable_id, s.executable(executable_id))


@router.get("/executables/{executable_id}/kernels/{name}")
def get_kernel(executable_id: int, name: str, s: System) -> KernelSymbolInfo:
    """hsa_executable_get_symbol_by_name (the '.kd' suffix is optional)."""
    with s.use(counts=False):
        return symbol_info(s.executable(executable_id).kernel(name))
