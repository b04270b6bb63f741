"""How the thunk reaches the KFD: the file descriptor of /dev/kfd, abstracted.

A transport carries exactly what a process has of the kernel driver: `ioctl(request, buf)`
with the raw bytes of the args struct, `mmap(offset, length)`, reads of sysfs files, and the
host CPU's clock (time spent in user space, spinning until the device changes, and writes to
a trace marker like ftrace's `trace_marker`). `InProcess` calls an emulated KFD in this
Python process; a socket transport to a shared KFD service can implement the same protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from hw_model.trace import marker_event

if TYPE_CHECKING:
    from rock_emu import Kfd, KfdProcess
    from rock_emu.mapping import HostMapping


class Transport(Protocol):
    def ioctl(self, request: int, buf: bytearray) -> int: ...

    def mmap(self, offset: int, length: int) -> HostMapping: ...

    def read_sysfs(self, path: str) -> str: ...

    def host_elapse(self, ps: int) -> int: ...

    def host_now(self) -> int: ...

    def host_cost(self, name: str) -> int: ...

    def host_step(self, limit_ps: int | None = None) -> bool: ...

    def trace_marker(self, track: str, name: str, args: dict | None = None) -> None: ...

    def close(self) -> None: ...


class InProcess:
    """The KFD of an emulated machine living in this Python process."""

    def __init__(
        self,
        kfd: Kfd | None = None,
        *,
        system: Any = None,
        preset: str | None = None,
        spec: Any = None,
        name: str = "",
        trace: bool | None = None,
    ) -> None:
        if kfd is None:
            from rock_emu import machine  # the driver and hardware model, on first use

            kfd = machine(preset=preset, spec=spec, system=system, trace=trace)
        self.kfd = kfd
        self.system = self.kfd.system
        self.process: KfdProcess = self.kfd.open(name)
        # Anything with a live `enabled`: the runtime builds a trace marker's arguments (hex
        # strings, dicts; five per dispatch) only while the machine's trace is on. Optional
        # in a transport: without it every marker is sent.
        self.trace_switch = self.system.tracer
        # Asked on every packet and every wait: the machine's own methods, one call each.
        self.host_elapse: Callable[[int], int] = self.system.host_advance
        self.host_step: Callable[[int | None], bool] = self.system.host_step
        system, log = self.system, self.system.tracer.log

        def marker(make: Callable[..., tuple], values: tuple) -> None:
            log((marker_event, system.host_now, make, values))

        # `marker(make, values)`: a trace marker at the host's time whose track, name and args
        # `make(*values)` gives when the trace is read, for a caller that checked
        # `trace_switch` (one call a marker: a round trip makes four). Optional in a transport.
        self.marker = marker

    def ioctl(self, request: int, buf: bytearray) -> int:
        return self.process.ioctl(request, buf)

    def mmap(self, offset: int, length: int) -> HostMapping:
        return self.process.mmap(offset, length)

    def read_sysfs(self, path: str) -> str:
        return self.kfd.read_sysfs(path)

    def host_now(self) -> int:
        return self.system.host_now

    def host_cost(self, name: str) -> int:
        """Modeled host time of a named action (HostCosts field, e.g. 'doorbell_store_ps')."""
        return int(getattr(self.system.spec.host, name))

    def wait_events_async(self, event_ids: list[int], wake: Any) -> None:
        """AMDKFD_IOC_WAIT_EVENTS from a second thread of this process (ROCr's async events
        thread): it sleeps in the driver on its own clock; `wake(event_id, data)` runs when it
        returns. Optional in a transport: the thunk checks for it."""
        self.process.add_async_waiter(event_ids, wake)

    def prime_export(self, handle: int) -> int:
        """DRM_IOCTL_PRIME_HANDLE_TO_FD on the render node: a dma-buf of BO `handle`, for
        another process's AMDKFD_IOC_IMPORT_DMABUF. Optional in a transport."""
        return self.process.prime_export(handle)

    def trace_marker(self, track: str, name: str, args: dict | None = None) -> None:
        tr = self.system.tracer
        if tr.enabled:
            tr.instant(track, name, self.system.host_now, args, cat="api")

    def write_reports(self, directory: str) -> list[str]:
        return self.kfd.write_reports(directory)

    def close(self) -> None:
        self.process.close()
