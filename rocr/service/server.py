"""Running the API on uvicorn (`hsaemu serve`), and reading limits from the command line."""

from __future__ import annotations

from collections.abc import Mapping
from types import FrameType
from typing import Any

from rocr.service.schemas import ServerLimits
from rocr.service.systems import SystemRegistry


def parse_limits(items: list[str] | None) -> ServerLimits:
    """ServerLimits from NAME=VALUE strings; ValueError naming what is wrong."""
    values: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or name not in ServerLimits.model_fields:
            known = ", ".join(ServerLimits.model_fields)
            raise ValueError(f"--limit {item!r}: expected NAME=VALUE with NAME one of {known}")
        values[name] = value
    return ServerLimits.model_validate(values)


ADMIN_TOKEN_ENV = "HSAEMU_ADMIN_TOKEN"
ADMIN_TOKEN_MIN = 16  # characters: a guessable admin token would open every system


def admin_token(given: str | None, path: str | None, environ: Mapping[str, str]) -> str | None:
    """The admin token from --admin-token, else --admin-token-file (its first line), else
    $HSAEMU_ADMIN_TOKEN; None when none is set. ValueError/OSError naming the source."""
    source = "--admin-token"
    token = given
    if token is None and path is not None:
        source = f"--admin-token-file {path}"
        with open(path, encoding="utf-8") as f:
            token = f.readline().strip()
    if token is None and environ.get(ADMIN_TOKEN_ENV):
        source, token = f"${ADMIN_TOKEN_ENV}", environ[ADMIN_TOKEN_ENV].strip()
    if token is None:
        return None
    if len(token) < ADMIN_TOKEN_MIN:
        raise ValueError(
            f"{source}: the admin token has {len(token)} characters; use at least "
            f"{ADMIN_TOKEN_MIN} (e.g. python -c 'import secrets; print(secrets.token_urlsafe())')"
        )
    return token


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    preset: str = "gfx900",
    limits: ServerLimits | None = None,
    admin_token: str | None = None,
    api_keys: list[str] | None = None,
    log_level: str = "info",
    state_dir: str | None = None,
    checkpoint_s: float | None = None,
) -> None:
    """Serve until interrupted (SIGINT or SIGTERM stop the systems' work at once). With
    `state_dir`, systems are restored from it and checkpointed to it (rocr.service.state)."""
    import uvicorn

    from rocr.service.app import CHECKPOINT_S, create_app

    fix_mmap_threshold()
    freeze_imports()  # before create_app: systems restored from `state_dir` stay collectable
    app = create_app(
        limits,
        default_preset=preset,
        admin_token=admin_token,
        api_keys=api_keys,
        state_dir=state_dir,
        checkpoint_s=CHECKPOINT_S if checkpoint_s is None else checkpoint_s,
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    stopping_server(config, app.state.registry).run()


def freeze_imports() -> int:
    """Move every object the imports made (modules, classes, pydantic schemas, numpy: ~90 k
    objects) out of the garbage collector's sight (`gc.freeze`): they live as long as the
    process, and a full collection walked them all, a 60-90 ms pause of every request in
    flight about every 150 client loops (bench/http_load.py, 2-core machine). Objects made
    afterwards (systems, requests) are collected as before. Returns the objects frozen."""
    import gc

    import rocr.runtime  # noqa: F401  (what every served system needs, imported before)

    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


# glibc's mallopt parameter M_MMAP_THRESHOLD (malloc.h), and the value it is pinned to: every
# block of at least 1 MiB is its own mmap, returned to the system when freed. Left dynamic,
# glibc raises the threshold (up to 32 MiB) each time such a block is freed, so the next
# machines' multi-MiB zeroed memory comes from the heap and is zeroed by hand, touching every
# page: with 32 clients creating and deleting systems the server's RSS climbed to 200-600 MiB
# (17 MiB per live system) and stayed there; pinned, ~100 MiB (bench/soak.py, 2-core machine).
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 20


def fix_mmap_threshold() -> bool:
    """Pin glibc's mmap threshold (see above) for this process; False where there is no glibc
    (or MALLOC_MMAP_THRESHOLD_ already set it)."""
    import ctypes
    import ctypes.util
    import os

    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


# Real time uvicorn gives open requests to finish after SIGTERM before it drops them; work on
# the machines is cancelled at once, so requests end within a slice (a guess with margin).
GRACEFUL_SHUTDOWN_S = 3.0


def stopping_server(config: Any, registry: SystemRegistry) -> Any:
    """uvicorn's server, cancelling every system's work when a signal asks it to stop:
    uvicorn waits for open requests, and a wait on a busy machine may not end by itself."""
    import uvicorn

    class StoppingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            registry.cancel_all()
            super().handle_exit(sig, frame)

    return StoppingServer(config)
