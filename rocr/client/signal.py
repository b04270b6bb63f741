"""Remote signals: `rocr.Signal`'s methods as requests; a wait is one request to the server."""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING

from rocr.errors import HsaError
from rocr.service.schemas import SignalInfo, SignalWaitResult
from rocr.signal import Condition, WaitState
from rocr.status import Status
from rocr.validate import as_signal_value

if TYPE_CHECKING:
    from rocr.client.runtime import Runtime


class Signal:
    """hsa_signal_t of a served system. `handle` is the address of its amd_signal_t."""

    def __init__(self, rt: Runtime, info: SignalInfo) -> None:
        self.rt = rt
        self.handle: int = info.handle
        self.event = None if info.event_id is None else SimpleNamespace(EventId=info.event_id)
        self.destroyed = False

    def __repr__(self) -> str:
        kind = "interrupt" if self.event is not None else "user"
        return f"Signal({self.handle:#x}, {kind}, value={self.load()})"

    @property
    def address(self) -> int:
        return self.handle

    def _live(self) -> None:
        if self.rt.closed:
            raise HsaError(
                Status.ERROR_NOT_INITIALIZED,
                f"signal {self.handle:#x}: the runtime was shut down",
            )
        if self.destroyed:
            raise HsaError(Status.ERROR_INVALID_SIGNAL, f"signal {self.handle:#x} was destroyed")

    def _path(self, tail: str = "") -> str:
        return f"/signals/{self.handle}{tail}"

    def _op(self, op: str, value: int) -> int:
        value = as_signal_value(value)
        self._live()
        return int(self.rt._post(self._path(f"/{op}"), {"value": value})["old"])

    # -- hsa_signal_load / store / arithmetic --------------------------------------------------
    def load(self) -> int:
        self._live()
        return int(self.rt._get(self._path())["value"])

    def store(self, value: int) -> None:
        value = as_signal_value(value)
        self._live()
        self.rt._put(self._path("/value"), {"value": value})

    def add(self, value: int) -> int:
        return self._op("add", value)

    def subtract(self, value: int) -> int:
        return self._op("subtract", value)

    def exchange(self, value: int) -> int:
        return self._op("exchange", value)

    def and_(self, value: int) -> int:
        return self._op("and", value)

    def or_(self, value: int) -> int:
        return self._op("or", value)

    def xor(self, value: int) -> int:
        return self._op("xor", value)

    def cas(self, expected: int, value: int) -> int:
        expected = as_signal_value(expected, "expected")
        value = as_signal_value(value)
        self._live()
        body = {"expected": expected, "value": value}
        return int(self.rt._post(self._path("/cas"), body)["old"])

    # -- hsa_signal_wait_scacquire -------------------------------------------------------------
    def wait(
        self,
        condition: Condition | int,
        compare_value: int,
        timeout_ns: int | None = None,
        wait_state: WaitState = WaitState.BLOCKED,
        *,
        wall_timeout_ms: int | None = None,
    ) -> int:
        """Wait until `value <condition> compare_value`; returns the value observed.

        As the local wait: on timeout the current value is returned; a wait that can never be
        satisfied raises HsaError with a diagnosis. `wall_timeout_ms` (default: the runtime's)
        lets it block that long in real time for another client of the system to act first.
        """
        self._live()
        wall = self.rt.wall_timeout_ms if wall_timeout_ms is None else wall_timeout_ms
        body = {
            "condition": Condition(condition).name,
            "compare_value": int(compare_value),
            "timeout_ns": None if timeout_ns is None else int(timeout_ns),
            "wait_state": WaitState(wait_state).name,
            "wall_timeout_ms": int(wall),
        }
        timeout = None if self.rt.timeout is None else self.rt.timeout + wall / 1000
        try:
            res = SignalWaitResult.model_validate(
                self.rt._post(self._path("/wait"), body, timeout=timeout)
            )
        except HsaError:
            # A local wait runs the queues' error callbacks before it gives up: so here.
            if any(q.callback is not None for q in self.rt._queues.values()):
                self.rt.poll_async()
            raise
        self.rt._note_queue_errors(res.queue_errors)
        return res.value

    # -- profiling -----------------------------------------------------------------------------
    def dispatch_time(self) -> tuple[float, float]:
        """hsa_amd_profiling_get_dispatch_time: (start, end) in ns of the system clock."""
        self._live()
        d = self.rt._get(self._path("/dispatch-time"))
        return float(d["start_ns"]), float(d["end_ns"])

    def destroy(self) -> None:
        if self.destroyed:
            return
        self.rt._delete(self._path())
        self.destroyed = True
        self.rt._signals.pop(self.handle, None)
