"""The FastAPI application: routers, error handlers, the guards in front of the routes
(credentials before bodies, the request-size limit, the net for unexpected errors), idle
expiry.

`create_app()` needs nothing else: each system it serves is a fresh in-process machine. The
OpenAPI document it generates (GET /openapi.json, shown at /docs) is the API's contract; the
committed copy in openapi/openapi.json is regenerated with `python -m rocr.service.openapi`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
from anyio import to_thread
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import TypeAdapter

from rocr.service import emulation, errors
from rocr.service.guard import BodyLimit, Gate, SafetyNet
from rocr.service.routes import ROUTERS, ui
from rocr.service.schemas import (
    API_VERSION,
    BufferWrite,
    CodeObjectLoad,
    PacketBody,
    RawPacket,
    ServerLimits,
)
from rocr.service.state import SystemStore
from rocr.service.systems import SystemRegistry

log = logging.getLogger("hsaemu.service")

DESCRIPTION = """\
Emulated AMD HSA/ROCm machines over HTTP. `POST /v1/systems` creates one (a fresh machine and
an `hsa_init` on it) and returns its id and a bearer token; everything the runtime can do is
then under `/v1/systems/{system_id}`: agents, pools, buffers, AQL queues and packets,
doorbells, signals and waits, code objects, dispatch — and inspection of every layer (KFD,
runlist vs HQDs, CUs, trace, stats). Errors carry the real `hsa_status_t`.
"""

TAGS = [
    {"name": "server", "description": "health, limits, presets"},
    {"name": "systems", "description": "one emulated machine per client, owned by a token"},
    {"name": "agents and pools", "description": "hsa_iterate_agents, memory pools"},
    {"name": "buffers", "description": "allocate, free, allow access, read and write bytes"},
    {"name": "queues", "description": "AQL queues: indices, packets, doorbell, dispatch"},
    {"name": "signals", "description": "hsa_signal_*: load, store, atomics, wait"},
    {"name": "code objects", "description": "built-in kernels, load, kernel symbols"},
    {"name": "inspection", "description": "KFD, runlist, CUs, trace, stats; run the clock"},
]

# Bodies parsed by hand (they may also be raw bytes): their schemas join the document here.
_EXTRA_SCHEMAS: dict[str, Any] = {
    "BufferWrite": BufferWrite,
    "CodeObjectLoad": CodeObjectLoad,
    "PacketWrite": PacketBody | RawPacket,
}
_REF = "#/components/schemas/{model}"


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        doc = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
        )
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for name, tp in _EXTRA_SCHEMAS.items():
            js = TypeAdapter(tp).json_schema(ref_template=_REF)
            for sub, sub_js in js.pop("$defs", {}).items():
                schemas.setdefault(sub, sub_js)
            schemas[name] = js
        app.openapi_schema = doc
    return app.openapi_schema


async def _reaper(registry: SystemRegistry) -> None:
    period = min(60.0, max(0.05, registry.limits.idle_timeout_s / 4))
    while True:
        await anyio.sleep(period)
        try:
            n = await to_thread.run_sync(registry.reap)
        except Exception:  # keep reaping whatever one shutdown did
            log.exception("reaping idle systems")
            continue
        if n:
            log.info("shut down %d idle system(s)", n)


async def _checkpointer(registry: SystemRegistry, period_s: float) -> None:
    while True:
        await anyio.sleep(period_s)
        try:
            n = await to_thread.run_sync(registry.checkpoint_all)
        except Exception:  # keep checkpointing whatever one system did
            log.exception("checkpointing systems")
            continue
        if n:
            log.info("checkpointed %d system(s)", n)


_warm: set[str] = set()  # presets whose machine was built once in this process


def warm_up(app: FastAPI, preset: str) -> None:
    """Before the first request: what each layer builds on first use (validators of
    deferred pydantic models, lazily imported modules, FastAPI's per-route tables) is built
    once here, in one thread, so that neither the first clients pay for it (~0.4 s measured
    for the route tables alone) nor concurrent first uses race on it. Once per preset and
    process: a machine of `preset` goes through hsa_init, a code object load, a queue, a
    dispatch and its wait, and hsa_shut_down."""
    for route in app.router.routes:
        build = getattr(route, "effective_candidates", None)  # FastAPI's included routers
        if callable(build):
            build()
    for r in (*ROUTERS, ui.router):
        r.prepare()  # EmulatedRouter's patterns
    if preset in _warm:
        return
    _warm.add(preset)
    try:
        import rocr

        with rocr.init(preset=preset) as rt:
            if rt.gpus:
                k = rt.load_code_object("builtin:empty").kernel("empty")
                q = rt.gpus[0].create_queue(64)
                q.dispatch(k, grid=64, workgroup=64).wait()
                rt.create_signal(1, interrupt=False).destroy()
    except Exception:  # only a warm-up: the first request meets (and reports) the same error
        log.exception("warming up a %s machine", preset)


# Seconds between two checkpoints of a system used since its last one (a guess: a restart
# loses at most a minute of a class's work, and a checkpoint costs ~10 ms a system).
CHECKPOINT_S = 60.0


def create_app(
    limits: ServerLimits | None = None,
    *,
    default_preset: str = "gfx900",
    admin_token: str | None = None,
    api_keys: list[str] | None = None,
    state_dir: str | None = None,
    checkpoint_s: float = CHECKPOINT_S,
) -> FastAPI:
    """The hsaemu HTTP API, serving fresh machines of `default_preset` within `limits`.
    With `api_keys`, creating a system needs one of them (X-API-Key); see SystemRegistry.
    With `state_dir`, the systems checkpointed there are served again (same ids and tokens),
    and every system is checkpointed there every `checkpoint_s` seconds and at shutdown."""
    registry = SystemRegistry(limits, default_preset, admin_token, api_keys)
    if state_dir is not None:
        registry.store = SystemStore(state_dir)
        restored = registry.store.load_all()
        for served in restored:
            registry.adopt(served)
        if restored:
            log.info("restored %d system(s) from %s", len(restored), state_dir)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        emulation.configure(registry.limits.emulation_threads)
        await to_thread.run_sync(warm_up, app, registry.default_preset)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_reaper, registry)
            if registry.store is not None:
                tg.start_soon(_checkpointer, registry, checkpoint_s)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
        # Stop every system's work at its next slice, then shut the machines down off the
        # event loop (a request finishing its slice needs the loop to give up its turn).
        registry.cancel_all()
        await to_thread.run_sync(registry.close_all)

    app = FastAPI(
        title="hsaemu",
        version=API_VERSION,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
    )
    app.state.registry = registry
    # Outermost first: credentials, then the body's size, then the net under the routes.
    app.add_middleware(SafetyNet)
    app.add_middleware(BodyLimit, max_bytes=registry.limits.max_body_bytes)
    app.add_middleware(Gate, registry=registry)
    errors.install(app)
    for r in ROUTERS:
        app.include_router(r)
    # The live view: its page (/ui) and the two routes it adds to the inspection ones.
    app.include_router(ui.page)
    app.include_router(ui.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app
