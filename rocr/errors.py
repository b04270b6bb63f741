"""`HsaError`: an hsa_status_t with a message that says what went wrong and how to fix it."""

from __future__ import annotations

from rocr.status import Status, status_c_name


class HsaError(Exception):
    def __init__(self, status: Status | int, message: str) -> None:
        self.status = Status(status)
        self.message = message
        super().__init__(f"{status_c_name(self.status)}: {message}")

    @property
    def code(self) -> int:
        return int(self.status)
