"""Code objects: load one for an agent (hsa_executable_load_agent_code_object) and look up its
kernel symbols (hsa_executable_get_symbol_by_name, hsa_executable_symbol_get_info).

The server loads built-in code objects by name, or code-object bytes the client uploads; it
never opens a path on its own file system.
"""

from __future__ import annotations

from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Query, Request

import rocr
from rocr.service.deps import ERRORS, PREFIX, System, body_kind, dual_body, json_body
from rocr.service.errors import ApiError
from rocr.service.schemas import CodeObjectLoad, ExecutableInfo, KernelArgInfo, KernelSymbolInfo
from rocr.service.systems import PAGE
from rocr.status import Status

router = APIRouter(prefix=PREFIX, tags=["code objects"], responses=ERRORS)

EXECUTABLE_BYTES = PAGE  # the loader's allocation for descriptors + entries of a small object


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

    def load() -> ExecutableInfo:
        with s.use() as rt:
            gpu = s.gpu(agent) if agent is not None else None
            s.ensure_room(EXECUTABLE_BYTES)
            exe = rt.load_code_object(source, gpu)
            eid = s.add_executable(exe)
            s.charge("executable", eid, EXECUTABLE_BYTES)
            return executable_info(eid, exe)

    return await to_thread.run_sync(load)


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
