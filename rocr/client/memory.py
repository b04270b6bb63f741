"""Remote memory pools and buffers, with `view()` as close to the local one as HTTP allows.

Locally `buffer.view()` is a numpy array over the very bytes the GPU reads. Over HTTP it is a
snapshot taken when `view()` is called, that writes back what is assigned through it
(`v[...] = x`, `v.fill()`, in-place operators, `np.copyto`): the bytes each assignment spans go
to the server at once. Call `view()` again to see what the device wrote since; `read()` and
`write()` move bytes explicitly. Large transfers are split to fit the server's body limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from rocr.memory import BufferBase, GlobalFlag, PoolFlags, Segment, check_alloc_size
from rocr.service.schemas import BufferInfo, PoolInfo
from rocr.validate import as_bytes

if TYPE_CHECKING:
    from rocr.client.agent import Agent
    from rocr.client.runtime import Runtime


class MemoryPool(PoolFlags):
    """hsa_amd_memory_pool_t of a served system."""

    def __init__(self, rt: Runtime, info: PoolInfo, owner: Agent) -> None:
        self.rt = rt
        self.id = info.id
        self.owner = owner
        self.name = info.name
        self.segment = Segment[info.segment]
        flags = GlobalFlag(0)
        for f in info.global_flags:
            flags |= GlobalFlag[f]
        self.global_flags = flags
        self.size = info.size
        self.alloc_granule = info.alloc_granule
        self.alloc_alignment = info.alloc_alignment
        self.vram = owner.is_gpu and self.segment == Segment.GLOBAL
        self._info = info

    def __repr__(self) -> str:
        return f"MemoryPool({self.name}, {self.segment.name}, size={self.size})"

    @property
    def alloc_allowed(self) -> bool:
        return self._info.alloc_allowed

    def info(self) -> dict:
        d = self._info.model_dump()
        for k in ("id", "agent", "index", "fine_grained", "coarse_grained", "kernarg"):
            d.pop(k, None)
        return d

    def allocate(self, size: int) -> Buffer:
        """hsa_amd_memory_pool_allocate."""
        size = check_alloc_size(self, size)
        info = BufferInfo.model_validate(self.rt._post("/buffers", {"pool": self.id, "size": size}))
        return self.rt._add_buffer(Buffer(self.rt, self, info))


class Buffer(BufferBase):
    """Memory from a pool. `address` is what a kernel argument or packet field takes."""

    def __init__(self, rt: Runtime, pool: MemoryPool, info: BufferInfo) -> None:
        self.rt = rt
        self.pool = pool
        self.address: int = info.address
        self.size: int = info.size
        self.freed = False

    def read(self, offset: int = 0, size: int | None = None) -> bytes:
        self._check()
        offset, size = self._range(offset, size)
        step = self.rt._chunk
        parts = []
        pos = offset
        end = offset + size
        while True:
            n = min(step, end - pos)
            r = self.rt._request(
                "GET",
                f"/buffers/{self.address}/bytes",
                params={"offset": pos, "size": n},
                octet=True,
            )
            parts.append(r.content)
            pos += n
            if pos >= end:
                break
        return b"".join(parts)

    def write(self, data: bytes | bytearray | memoryview, offset: int = 0) -> None:
        self._check()
        data = as_bytes(data, "data")
        offset, _ = self._range(offset, len(data), "data length")
        step = self.rt._chunk
        for pos in range(0, max(len(data), 1), step):
            self.rt._request(
                "PUT",
                f"/buffers/{self.address}/bytes",
                params={"offset": offset + pos},
                content=data[pos : pos + step],
            )

    def view(self, dtype: type | str = np.uint8, count: int | None = None) -> np.ndarray:
        """A snapshot of the buffer as a numpy array; assignments through it write back."""
        self._check()
        dt, n = self._view_shape(dtype, count)
        raw = np.frombuffer(bytearray(self.read(0, n * dt.itemsize)), dtype=dt)
        v = raw.view(RemoteView)
        v._buffer = self
        v._root = v
        return v

    def free(self) -> None:
        """hsa_amd_memory_pool_free (a second free: HSA_STATUS_ERROR_INVALID_ALLOCATION)."""
        self._check()
        self.rt._delete(f"/buffers/{self.address}")
        self.freed = True
        self.rt._buffers.pop(self.address, None)


def _view_key(key: Any) -> Any:
    """`key` with integer indices as one-element slices, so indexing gives a view."""

    def one(k: Any) -> Any:
        if isinstance(k, int | np.integer) and not isinstance(k, bool | np.bool_):
            i = int(k)
            return slice(i, i + 1 if i != -1 else None)
        return k

    return tuple(one(k) for k in key) if isinstance(key, tuple) else one(key)


def _span(a: np.ndarray) -> tuple[int, int]:
    """[low, high) addresses of the bytes `a` covers."""
    lo = hi = a.__array_interface__["data"][0]
    for n, st in zip(a.shape, a.strides, strict=True):
        if n == 0:
            return lo, lo
        if st < 0:
            lo += st * (n - 1)
        else:
            hi += st * (n - 1)
    return lo, hi + a.itemsize


class RemoteView(np.ndarray):
    """A buffer snapshot whose assignments write the bytes they touch back to the server."""

    _buffer: Buffer | None = None
    _root: RemoteView | None = None

    def __array_finalize__(self, obj: Any) -> None:
        root = getattr(obj, "_root", None)
        # Views of the snapshot stay linked; copies and results of arithmetic do not.
        if root is not None and np.may_share_memory(self, root):
            self._root = root
            self._buffer = root._buffer
        else:
            self._root = None
            self._buffer = None

    def _flush(self, part: np.ndarray | None = None) -> None:
        root = self._root
        if root is None or root._buffer is None:
            return
        base = root.__array_interface__["data"][0]
        lo, hi = _span(self if part is None else part)
        lo, hi = max(lo - base, 0), min(hi - base, root.nbytes)
        if hi > lo:
            raw = np.asarray(root).view(np.uint8)
            root._buffer.write(raw[lo:hi].tobytes(), lo)

    def __setitem__(self, key: Any, value: Any) -> None:
        np.ndarray.__setitem__(self, key, value)
        try:
            part = np.ndarray.__getitem__(self, _view_key(key))
        except (IndexError, TypeError, ValueError):
            part = None
        shares = isinstance(part, np.ndarray) and np.may_share_memory(part, self)
        self._flush(part if shares else None)

    def fill(self, value: Any) -> None:
        np.ndarray.fill(self, value)
        self._flush()

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        args = [np.asarray(x) if isinstance(x, RemoteView) else x for x in inputs]
        outs = kwargs.get("out")
        if outs:
            kwargs["out"] = tuple(np.asarray(o) if isinstance(o, RemoteView) else o for o in outs)
        result = getattr(ufunc, method)(*args, **kwargs)
        if outs:
            for o in outs:
                if isinstance(o, RemoteView):
                    o._flush()
            return outs[0] if len(outs) == 1 else outs
        return result

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        plain = tuple(np.ndarray if issubclass(t, RemoteView) else t for t in types)
        result = super().__array_function__(func, plain, args, kwargs)
        if func in (np.copyto, np.put, np.place, np.putmask) and args:
            dst = args[0]
            if isinstance(dst, RemoteView):
                dst._flush()
        return result
