"""The HTTP connection of a remote runtime: httpx underneath, HsaError on top.

Any httpx transport works — a real server over TCP, or `httpx`/Starlette's in-process
transports for tests — and any failure comes back as `rocr.HsaError` carrying the server's
hsa_status_t (`RemoteHsaError` adds the HTTP code and the limit that was hit).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rocr.errors import HsaError
from rocr.service.schemas import ErrorBody, LimitInfo
from rocr.status import Status

if TYPE_CHECKING:
    import httpx

OCTET = "application/octet-stream"


class RemoteHsaError(HsaError):
    """An HsaError reported by a server: `http_status`, and `limit` when a limit was hit."""

    def __init__(
        self,
        status: Status | int,
        message: str,
        *,
        http_status: int | None = None,
        limit: LimitInfo | None = None,
        detail: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(status, message)
        self.http_status = http_status
        self.limit = limit
        self.detail = detail


def error_from_response(r: httpx.Response) -> RemoteHsaError:
    try:
        body = ErrorBody.model_validate(r.json())
    except ValueError:
        text = r.text[:300].strip()
        return RemoteHsaError(
            Status.ERROR,
            f"HTTP {r.status_code} from {r.request.url}: {text}",
            http_status=r.status_code,
        )
    try:
        status = Status(body.code)
    except ValueError:
        status = Status.ERROR
    return RemoteHsaError(
        status, body.message, http_status=r.status_code, limit=body.limit, detail=body.detail
    )


class Connection:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float | None = 300.0,
    ) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self.token = token
        self._owns_client = client is None
        self.http = client or httpx.Client(transport=transport, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: dict[str, Any] | None = None,
        octet: bool = False,
        timeout: float | None = None,
    ) -> httpx.Response:
        import httpx

        headers: dict[str, str] = {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if octet:
            headers["Accept"] = OCTET
        if content is not None:
            headers["Content-Type"] = OCTET
        url = self.base_url + path
        kw: dict[str, Any] = {}
        if timeout is not None and self._owns_client:  # a caller's client keeps its own
            kw["timeout"] = timeout
        try:
            r = self.http.request(
                method, url, json=json, content=content, params=params, headers=headers, **kw
            )
        except httpx.HTTPError as e:
            raise RemoteHsaError(Status.ERROR, f"{method} {url} failed: {e}") from e
        if r.status_code >= 400:
            raise error_from_response(r)
        return r

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw).json()

    def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        r = self.request("POST", path, json=json, **kw)
        return r.json() if r.content else None

    def put(self, path: str, json: Any = None, **kw: Any) -> Any:
        r = self.request("PUT", path, json=json, **kw)
        return r.json() if r.content else None

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    def close(self) -> None:
        if self._owns_client:
            self.http.close()
