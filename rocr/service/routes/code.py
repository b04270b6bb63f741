"""Code objects: load one for an agent (hsa_executable_load_agent_code_object) and look up its
kernel symbols (hsa_executable_get_symbol_by_name, hsa_executable_symbol_get_info).

The server loads built-in code objects by name, or code-object bytes the client uploads; it
never opens a path on its own file system.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

import rocr
from hw_model.kernels import CODE_OBJECT_MAGIC, decode_code_object
from hw_model.structs import KERNEL_DESCRIPTOR_SIZE
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
from rocr.service.emulation import EmulatedRoute
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

router = APIRouter(
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

    return await emulation.in_turn(s, _load, s, source, agent)


def _load(s: ServedSystem, source: str | bytes, agent: int | None) -> ExecutableInfo:
    # Read and count outside the system's lock: parsing a big upload is the client's time.
    blob = read_code_object(source) if isinstance(source, str) else source
    declared = declared_kernels(blob, s.limits)
    with s.use() as rt:
        gpu = s.gpu(agent) if agent is not None else None
        if declared is not None:  # the most it can take: every distinct name a symbol
            s.ensure_room(executable_bytes(*declared))
        exe = rt.load_code_object(blob, gpu)
        eid = s.add_executable(exe)
        # What it holds: the loader's allocation (every entry has its descriptor and code
        # slot) and one symbol per distinct kernel name.
        entries = len(exe.symbols) if declared is None else declared[0]
        s.charge("executable", eid, executable_bytes(entries, len(exe.symbols)))
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
