"""Pydantic models whose validators are built on first use, safely across threads.

The KFD uapi structs, AQL packets and thunk records are many small pydantic models; building
their validators at import costs a third of a second. Pydantic's `defer_build` postpones
that to first use, but that first use is not thread-safe: two threads meeting an unbuilt
class at once can see a half-built one ("validate_assignment is not supported for ...";
`hsaemu serve` runs many systems on a thread pool). `LazyModel` builds the class under a
lock before the first instance or validation, once per class.
"""

from __future__ import annotations

import threading
from typing import Any, Self

from pydantic import BaseModel, ConfigDict

_BUILD_LOCK = threading.RLock()


class LazyModel(BaseModel):
    model_config = ConfigDict(defer_build=True)

    @classmethod
    def _ensure_validator(cls) -> None:
        if not cls.__pydantic_complete__:
            with _BUILD_LOCK:
                if not cls.__pydantic_complete__:
                    cls.model_rebuild(force=True)

    def __init__(self, /, **data: Any) -> None:
        type(self)._ensure_validator()
        super().__init__(**data)

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        cls._ensure_validator()
        return super().model_validate(obj, **kwargs)

    @classmethod
    def model_validate_json(cls, json_data: Any, **kwargs: Any) -> Self:
        cls._ensure_validator()
        return super().model_validate_json(json_data, **kwargs)
