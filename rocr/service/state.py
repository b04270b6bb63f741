"""Served systems that outlive the server: `hsaemu serve --state DIR` keeps one checkpoint
file per system (rocr/checkpoint.py says what a checkpoint holds and what it cannot)."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from rocr.checkpoint import SUFFIX, CheckpointError, dumps, loads, write_atomic

log = logging.getLogger("hsaemu.service")


# -- served systems (hsaemu serve --state DIR) ---------------------------------------------------


class SystemStore:
    """One checkpoint file per served system in `directory` (made readable by this user only).
    A file holds the system whole — its runtime and its registry of buffers, queues, signals
    and executables, its id, the SHA-256 digest of its token (never the token), its owner's
    client key digest or address — so a restart serves it under the same id and token."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.dir, 0o700)
        except OSError as e:
            raise CheckpointError(f"--state {self.dir}: {e.strerror or e}") from None
        if not os.access(self.dir, os.W_OK):
            raise CheckpointError(f"--state {self.dir}: not writable")

    def path(self, sid: str) -> Path:
        return self.dir / f"{sid}{SUFFIX}"

    def save(self, served: Any) -> int:
        """Write `served` (its lock held by the caller); returns the bytes written."""
        data = dumps({"system": served})
        write_atomic(self.path(served.id), data)
        return len(data)

    def discard(self, sid: str) -> None:
        for p in (self.path(sid), self.path(sid).with_name(self.path(sid).name + ".tmp")):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
            except OSError:
                log.exception("removing checkpoint %s", p)

    def load_all(self) -> list[Any]:
        """Every system with a readable checkpoint, oldest file first. A file that cannot be
        read is renamed *.unreadable (kept for a look, not retried) and logged."""
        from rocr.service.systems import ServedSystem

        out = []
        for p in sorted(self.dir.glob(f"*{SUFFIX}"), key=lambda q: q.stat().st_mtime):
            try:
                record = loads(p.read_bytes(), str(p))
                served = record.get("system") if isinstance(record, dict) else None
                if not isinstance(served, ServedSystem) or p.stem != served.id:
                    raise CheckpointError(f"{p} holds no served system of that id")
            except (CheckpointError, OSError) as e:
                log.error("not restoring %s: %s", p.name, e)
                with contextlib.suppress(OSError):
                    p.rename(p.with_name(p.name + ".unreadable"))
                continue
            out.append(served)
        return out
