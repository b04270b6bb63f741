"""Running the API on uvicorn (`hsaemu serve`), and reading limits from the command line."""

from __future__ import annotations

from rocr.service.schemas import ServerLimits


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


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    preset: str = "gfx900",
    limits: ServerLimits | None = None,
    admin_token: str | None = None,
    log_level: str = "info",
) -> None:
    """Serve until interrupted."""
    import uvicorn

    from rocr.service.app import create_app

    app = create_app(limits, default_preset=preset, admin_token=admin_token)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
