"""rock_emu: the emulated KFD (amdkfd) — processes, memory, queues, doorbells, events."""

from __future__ import annotations

import weakref

from hw_model.config import SystemSpec, system_spec
from hw_model.system import System
from rock_emu.ioctl import KfdError
from rock_emu.kfd import Kfd, KfdProcess

_KFDS: weakref.WeakKeyDictionary[System, Kfd] = weakref.WeakKeyDictionary()


def kfd_for(system: System) -> Kfd:
    """The /dev/kfd of `system` (one per machine, created on first use)."""
    kfd = _KFDS.get(system)
    if kfd is None:
        kfd = Kfd(system)
        _KFDS[system] = kfd
    return kfd


def machine(
    preset: str | None = None, spec: SystemSpec | None = None, system: System | None = None
) -> Kfd:
    """A fresh emulated machine (or an existing one) and its KFD."""
    if system is None:
        system = System(spec if spec is not None else system_spec(preset or "gfx900"))
    return kfd_for(system)


__all__ = ["Kfd", "KfdError", "KfdProcess", "System", "kfd_for", "machine"]
