"""The hsaemu HTTP API (FastAPI): emulated machines served to many clients.

`create_app()` builds the app; `hsaemu serve` runs it on uvicorn. Schemas live in
`rocr.service.schemas` (shared with the client, `rocr.client`); the routers in
`rocr.service.routes`. This package imports FastAPI only when the app is built, so the client
can use the schemas without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI


def create_app(*args: Any, **kwargs: Any) -> FastAPI:
    """The app (see rocr.service.app.create_app)."""
    from rocr.service.app import create_app as build

    return build(*args, **kwargs)


__all__ = ["create_app"]
