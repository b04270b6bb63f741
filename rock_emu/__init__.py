"""rock_emu: the emulated KFD (amdkfd) — processes, memory, queues, doorbells, events."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hw_model.config import SystemSpec
    from hw_model.system import System
    from rock_emu.ioctl import KfdError
    from rock_emu.kfd import Kfd, KfdProcess

# Imported on first use: the driver pulls in the whole hardware model, which `import rocr`
# (and `hsaemu --help`) need not pay for until a machine is made.
_LAZY = {
    "Kfd": "rock_emu.kfd",
    "KfdProcess": "rock_emu.kfd",
    "KfdError": "rock_emu.ioctl",
    "System": "hw_model.system",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rock_emu' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def kfd_for(system: System) -> Kfd:
    """The /dev/kfd of `system` (one per machine, created on first use).

    The machine holds its driver (as a device holds its driver data), so the two live and die
    together: once no process and no caller refers to either, both are collectable. A global
    System -> Kfd map would keep every machine alive, since the Kfd refers to its System.
    """
    from rock_emu.kfd import Kfd

    kfd = system.driver
    if kfd is None:
        kfd = Kfd(system)
        system.driver = kfd
    return kfd


def machine(
    preset: str | None = None,
    spec: SystemSpec | None = None,
    system: System | None = None,
    trace: bool | None = None,
) -> Kfd:
    """A fresh emulated machine (or an existing one) and its KFD. `trace` True or False
    turns the machine's trace on or off (a new machine's overrides `spec.trace`; an existing
    machine has one trace for all its processes, so this switches it for all of them); None
    leaves it as the spec has it (off unless asked for: it costs 10-25 % of a dispatch)."""
    if system is None:
        from hw_model.config import system_spec
        from hw_model.system import System

        if spec is None:
            spec = system_spec(preset or "gfx900")
        if trace is not None and spec.trace != trace:
            spec = spec.model_copy(update={"trace": trace})
        system = System(spec)
    elif trace is not None:
        system.tracer.enabled = trace
    return kfd_for(system)


__all__ = ["Kfd", "KfdError", "KfdProcess", "System", "kfd_for", "machine"]
