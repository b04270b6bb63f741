"""Server-level routes and the lifetime of systems: health, limits, presets, built-in kernels,
create / describe / delete a system."""

from __future__ import annotations

from fastapi import Request, Response

from hw_model.config import PRESETS
from hw_model.kernels import BUILTINS
from rocr.service import emulation
from rocr.service.deps import ERRORS, Admin, System, registry, responses
from rocr.service.emulation import EmulatedRoute, EmulatedRouter, light
from rocr.service.guard import CLIENT_STATE_KEY
from rocr.service.schemas import (
    API_VERSION,
    BuiltinKernelInfo,
    Health,
    KernelArgInfo,
    PresetInfo,
    ServerLimits,
    SystemCreate,
    SystemCreated,
    SystemInfo,
)
from rocr.service.systems import ServedSystem

router = EmulatedRouter(responses=ERRORS, route_class=EmulatedRoute)


@router.get("/healthz", tags=["server"])
async def healthz(request: Request) -> Health:
    """The server answers; how many systems it holds. Answered in the event loop: it waits
    for no system and no emulation thread."""
    return Health(systems=len(registry(request)), version=API_VERSION)


@router.get("/v1/limits", tags=["server"])
def limits(request: Request) -> ServerLimits:
    """The limits of this server: a request past one gets a 4xx naming it."""
    return registry(request).limits


@router.get("/v1/presets", tags=["server"])
def presets() -> list[PresetInfo]:
    """GPU presets a system can be created with (spec overrides go on top)."""
    return [
        PresetInfo(
            name=name,
            marketing_name=g.marketing_name,
            num_cus=g.num_cus,
            hqd_slots=g.hqd_slots,
            gpu=g.model_dump(mode="json"),
        )
        for name, g in sorted(PRESETS.items())
    ]


@router.get("/v1/kernels", tags=["code objects"])
def builtin_kernels() -> list[BuiltinKernelInfo]:
    """Built-in kernels, loadable as 'builtin:<name>,...': their arguments and resources."""
    return [
        BuiltinKernelInfo(
            name=k.name,
            args=[KernelArgInfo(**a.model_dump()) for a in k.args],
            kernarg_size=k.kernarg_size,
            vgprs=k.vgprs,
            sgprs=k.sgprs,
            group_segment_size=k.group_segment_size,
            private_segment_size=k.private_segment_size,
            cost=k.cost.model_dump(),
        )
        for k in sorted(BUILTINS.values(), key=lambda k: k.name)
    ]


@router.post(
    "/v1/systems", status_code=201, tags=["systems"], responses=responses(401, 403, 429, 507)
)
async def create_system(body: SystemCreate, request: Request) -> SystemCreated:
    """A fresh emulated machine (hsa_init on it). Keep the token: every call on the system
    needs it, and nobody can recover it. A server started with --require-key wants an API
    key in the X-API-Key header; each client (API key, else IP address) may hold
    max_systems_per_client systems and create create_rate_per_minute of them."""
    client = request.scope.get("state", {}).get(CLIENT_STATE_KEY)
    reg = registry(request)
    if not body.spec and len(reg) < reg.limits.max_systems:
        # A preset's machine as it is: its hsa_init is bounded (1-4 ms for every preset on a
        # loaded 2-core machine), so it runs here, as a light call does (emulation.light).
        # With no room, `create` shuts expired systems down first: that goes to a thread.
        return _created(*reg.create(body, client=client, reap=False))
    return _created(*await emulation.run(reg.create, body, client))


def _created(served: ServedSystem, token: str) -> SystemCreated:
    with served.use():
        return SystemCreated(id=served.id, token=token, info=served.info())


@router.get("/v1/systems", tags=["systems"], responses=responses(403))
def list_systems(request: Request, _: Admin) -> list[SystemInfo]:
    """Every system on the server (admin token only): for the person running the lab."""
    return [s.info() for s in registry(request).all()]


@router.get("/v1/systems/{system_id}", tags=["systems"])
@light
def get_system(s: System) -> SystemInfo:
    with s.use(counts=False):
        return s.info()


@router.delete("/v1/systems/{system_id}", status_code=204, tags=["systems"])
async def delete_system(s: System, request: Request) -> Response:
    """hsa_shut_down: destroys the system's queues, signals and memory. Work in progress on
    it (a wait, a run) stops at its next slice and answers 404."""
    reg = registry(request)
    reg.forget(s, "deleted")
    await reg.close_in_turn(s, emulation.run)
    return Response(status_code=204)
