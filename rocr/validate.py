"""Argument checks for the public calls, shared by the local runtime and the HTTP client.

In C a wrong type cannot reach `hsa_*`; in Python it can, and it must not surface as a
`TypeError` or `struct.error` from deep inside. Each check raises `HsaError` with the status
the C function returns for a bad value of that argument (HSA_STATUS_ERROR_INVALID_ARGUMENT
unless the caller says otherwise) and a message naming the argument, the value and the limit.
"""

from __future__ import annotations

import contextlib
import math
import operator
from collections.abc import Iterable, Sequence
from typing import Any

from rocr.errors import HsaError
from rocr.status import Status

U16_MAX = 0xFFFF
U32_MAX = 0xFFFF_FFFF
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF
I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1
F32_MAX = 3.4028234663852886e38  # FLT_MAX: larger finite values do not fit an IEEE float


def show(value: Any, limit: int = 60) -> str:
    """A short repr for messages: a huge list or bytes object must not flood the error."""
    try:
        r = repr(value)
    except Exception:  # a broken __repr__ must not hide the real error
        r = f"<{type(value).__name__}>"
    return r if len(r) <= limit else r[: limit - 3] + "..."


def _range_text(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return f"from {lo} to {hi}"
    if lo is not None:
        return f"at least {lo}"
    return f"at most {hi}"


def as_int(
    value: Any,
    what: str,
    lo: int | None = None,
    hi: int | None = None,
    *,
    why: str = "",
    status: Status = Status.ERROR_INVALID_ARGUMENT,
) -> int:
    """`value` as a Python int within [lo, hi]. Anything with `__index__` counts (numpy integers
    do); bool, float, str and None do not, even 1000.0: a size is not a measurement."""
    if type(value) is int:  # the common case, checked on every dispatch: keep it short
        if (lo is None or value >= lo) and (hi is None or value <= hi):
            return value
    elif isinstance(value, bool):
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT, f"{what} must be an integer, got {value!r} (a bool)"
        )
    try:
        v = operator.index(value)
    except TypeError:
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            f"{what} must be an integer, got {show(value)} ({type(value).__name__})",
        ) from None
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise HsaError(
            status,
            f"{what} = {v} is out of range: it must be {_range_text(lo, hi)}"
            + (f" ({why})" if why else ""),
        )
    return v


def as_u32(value: Any, what: str, *, lo: int = 0, why: str = "") -> int:
    return as_int(value, what, lo, U32_MAX, why=why or "a uint32_t")


def as_u64(value: Any, what: str, *, lo: int = 0, why: str = "") -> int:
    return as_int(value, what, lo, U64_MAX, why=why or "a uint64_t")


def as_i64(value: Any, what: str, *, why: str = "") -> int:
    return as_int(value, what, I64_MIN, I64_MAX, why=why or "an int64_t")


def as_signal_value(value: Any, what: str = "value") -> int:
    """An hsa_signal_value_t (int64_t in the large model)."""
    return as_i64(value, what, why="hsa_signal_value_t is an int64_t")


def as_real(value: Any, what: str, *, f32: bool = False) -> float:
    """A float kernel argument: an int or a real number (numpy floats included)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        and not hasattr(value, "__float__")
    ):
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            f"{what} must be a number, got {show(value)} ({type(value).__name__})",
        )
    if isinstance(value, complex | str | bytes):
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            f"{what} must be a real number, got {show(value)} ({type(value).__name__})",
        )
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError) as e:
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT, f"{what} = {show(value)} is not a real number: {e}"
        ) from None
    if f32 and math.isfinite(v) and abs(v) > F32_MAX:
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            f"{what} = {v!r} does not fit a 32-bit float (at most {F32_MAX:.7g} in magnitude)",
        )
    return v


def as_bool(value: Any, what: str) -> bool:
    """A flag: True/False (or 0/1, as C's int flags)."""
    if isinstance(value, bool):
        return value
    try:
        v = operator.index(value)
    except TypeError:
        v = None
    if v in (0, 1):
        return bool(v)
    raise HsaError(
        Status.ERROR_INVALID_ARGUMENT, f"{what} must be True or False, got {show(value)}"
    )


def as_bytes(value: Any, what: str) -> bytes:
    """bytes, bytearray, memoryview, or anything else exposing a contiguous buffer."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            f"{what} must be bytes-like (bytes, bytearray, memoryview), got a str",
        )
    try:
        mv = memoryview(value)
    except TypeError:
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            f"{what} must be bytes-like (bytes, bytearray, memoryview), got "
            f"{show(value)} ({type(value).__name__})",
        ) from None
    if not mv.c_contiguous:
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT, f"{what} is not contiguous in memory: copy it first"
        )
    return mv.tobytes()


def as_dims(value: Any, what: str) -> tuple[Any, ...]:
    """An int or a sequence of 1-3 of them (each still unchecked)."""
    if isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray):
        dims = tuple(value)
    elif hasattr(value, "__index__") and not hasattr(value, "__len__"):
        dims = (value,)
    elif hasattr(value, "tolist"):  # a numpy array
        t = value.tolist()
        dims = tuple(t) if isinstance(t, list) else (t,)
    else:
        dims = (value,)
    if not 1 <= len(dims) <= 3:
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            f"{what} {show(value)} has {len(dims)} dimensions: give 1 to 3 (x, y, z)",
        )
    return dims


_AXES = "xyz"


def dispatch_limits(agent: Any) -> tuple[int, tuple, int, tuple, str]:
    """HSA_AGENT_INFO_WORKGROUP_MAX_SIZE/_DIM, GRID_MAX_SIZE/_DIM and a name prefix for
    messages; gfx9's values when the agent does not say."""
    cached = getattr(agent, "_dispatch_limits", None)
    if cached is not None:
        return cached
    limits = (
        getattr(agent, "workgroup_max_size", 0) or 1024,
        tuple(getattr(agent, "workgroup_max_dim", None) or (1024,) * 3),
        getattr(agent, "grid_max_size", 0) or U32_MAX,
        tuple(getattr(agent, "grid_max_dim", None) or (U32_MAX,) * 3),
        f"{agent.name}, " if getattr(agent, "name", None) else "",
    )
    if agent is not None:
        with contextlib.suppress(AttributeError):
            agent._dispatch_limits = limits  # fixed for an agent's life, asked per dispatch
    return limits


def plain_dims(grid: Any, workgroup: Any) -> bool:
    """Whether `grid` and `workgroup` are tuples of exactly int: a geometry that may key a
    cache of checked ones (a bool or float hashes like an int but is refused)."""
    return (
        type(grid) is tuple
        and type(workgroup) is tuple
        and all(type(v) is int for v in grid)
        and all(type(v) is int for v in workgroup)
    )


def dispatch_geometry(
    grid: Any, workgroup: Any, agent: Any = None
) -> tuple[tuple[int, int, int], tuple[int, int, int], int]:
    """(grid, workgroup, dimensions) of a kernel dispatch, each padded to 3 with 1s, checked
    against the packet's field widths and the agent's HSA_AGENT_INFO_* limits."""
    # A program dispatches a few shapes many times: geometry given as plain ints (exactly
    # int: a bool or float hashes like one but is refused) is checked once per agent.
    plain = (type(grid) is int and type(workgroup) is int) or plain_dims(grid, workgroup)
    key = (grid, workgroup) if plain else None
    if key is not None:
        cache = getattr(agent, "_geometry_cache", None)
        if cache is not None:
            hit = cache.get(key)
            if hit is not None:
                return hit
    result = _dispatch_geometry(grid, workgroup, agent)
    if key is not None and agent is not None:
        cache = getattr(agent, "_geometry_cache", None)
        if cache is None or len(cache) >= 256:  # bounded: a sweep's shapes come and go
            cache = {}
            with contextlib.suppress(AttributeError):
                agent._geometry_cache = cache
        cache[key] = result
    return result


def _dispatch_geometry(
    grid: Any, workgroup: Any, agent: Any
) -> tuple[tuple[int, int, int], tuple[int, int, int], int]:
    g = (grid,) if type(grid) is int else as_dims(grid, "grid")
    w = (workgroup,) if type(workgroup) is int else as_dims(workgroup, "workgroup")
    if len(g) != len(w):
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            f"grid {show(grid)} has {len(g)} dimension(s) but workgroup {show(workgroup)} has "
            f"{len(w)}: give both the same number (1 to 3)",
        )
    dims = len(g)
    wg_max, wg_dim, grid_max, grid_dim, name = dispatch_limits(agent)

    def one(v: Any, i: int, kind: str, field: str) -> int:
        label = f"{kind}[{i}]" if dims > 1 else kind
        return as_int(
            v, label, 1, None, why=f"{field}_{_AXES[i]} of hsa_kernel_dispatch_packet_t is >= 1"
        )

    gi = [one(v, i, "grid", "grid_size") for i, v in enumerate(g)]
    wi = [one(v, i, "workgroup", "workgroup_size") for i, v in enumerate(w)]
    items = math.prod(wi)
    if items > wg_max:
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            f"workgroup {show(workgroup)} has {items} work-items: at most {wg_max} work-items "
            f"per workgroup on this agent ({name}HSA_AGENT_INFO_WORKGROUP_MAX_SIZE)",
        )
    for i, v in enumerate(wi):
        lim = min(wg_dim[i], U16_MAX)
        if v > lim:
            raise HsaError(
                Status.ERROR_INVALID_ARGUMENT,
                f"workgroup_size_{_AXES[i]} = {v}: at most {lim} on this agent "
                f"({name}HSA_AGENT_INFO_WORKGROUP_MAX_DIM {wg_dim})",
            )
    for i, v in enumerate(gi):
        lim = min(grid_dim[i], U32_MAX)
        if v > lim:
            raise HsaError(
                Status.ERROR_INVALID_ARGUMENT,
                f"grid_size_{_AXES[i]} = {v} does not fit: at most {lim} (grid_size_x/y/z are "
                "uint32_t fields of hsa_kernel_dispatch_packet_t; HSA_AGENT_INFO_GRID_MAX_DIM)",
            )
    total = math.prod(gi)
    if total > grid_max:
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            f"grid {tuple(gi)} has {total} work-items: at most {grid_max} on this agent "
            f"({name}HSA_AGENT_INFO_GRID_MAX_SIZE)",
        )
    pad = (1,) * (3 - dims)
    return (*gi, *pad), (*wi, *pad), dims  # type: ignore[return-value]


def fence_scope(value: Any, what: str) -> int:
    """An hsa_fence_scope_t: NONE (0), AGENT (1) or SYSTEM (2)."""
    if isinstance(value, int) and type(value) is not bool:  # FenceScope or a plain 0..2
        v = _SCOPES.get(value)
        if v is not None:
            return v
    from hw_model.aql import FenceScope

    v = as_int(value, what, why="hsa_fence_scope_t: FenceScope.NONE, AGENT or SYSTEM")
    if v not in (0, 1, 2):
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            f"{what} = {v} is not an hsa_fence_scope_t: use "
            + ", ".join(f"FenceScope.{s.name} ({int(s)})" for s in FenceScope),
        )
    return v


# The fence scopes, looked up for an int (FenceScope is an IntEnum) before the full check.
_SCOPES: dict[int, int] = {0: 0, 1: 1, 2: 2}


CU_MASK_MAX_WORDS = 32  # kfd_chardev.c kfd_ioctl_set_cu_mask: max_num_cus = 1024 bits


def cu_mask(mask: Any, cu_count: int) -> list[int]:
    """The words of a CU mask (bit i = CU i), as hsa_amd_queue_cu_set_mask takes them."""
    if isinstance(mask, str | bytes) or not isinstance(mask, Sequence):
        if hasattr(mask, "tolist"):
            mask = mask.tolist()
        else:
            raise HsaError(
                Status.ERROR_INVALID_ARGUMENT,
                f"mask must be a list of 32-bit words (bit i enables CU i), got {show(mask)}",
            )
    words = list(mask)
    if not words:
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            "mask is empty: give at least one 32-bit word (bit i enables CU i)",
        )
    if len(words) > CU_MASK_MAX_WORDS:
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            f"mask has {len(words)} words: at most {CU_MASK_MAX_WORDS} (1024 CUs, the KFD's "
            "max_num_cus for AMDKFD_IOC_SET_CU_MASK)",
        )
    out = [as_u32(w, f"mask[{i}]", why="each word is a uint32_t") for i, w in enumerate(words)]
    enabled = [i for i in range(cu_count) if i // 32 < len(out) and out[i // 32] >> (i % 32) & 1]
    if cu_count and not enabled:
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            f"mask {show([hex(w) for w in out])} enables none of this agent's {cu_count} CUs "
            f"(bits 0..{cu_count - 1}): a queue with no CU could never run a workgroup",
        )
    return out


def check_agents(agents: Any, rt: Any, agent_type: type) -> list:
    """The agents of hsa_amd_agents_allow_access: a non-empty list of this runtime's agents."""
    if isinstance(agents, str | bytes) or not isinstance(agents, Iterable):
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            f"agents must be a list of agents (e.g. rt.gpus), got {show(agents)} "
            f"({type(agents).__name__}); the call is allow_access(agents, buf)",
        )
    out = list(agents)
    if not out:
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT, "agents is empty: give at least one agent (rt.gpus)"
        )
    for i, a in enumerate(out):
        if not isinstance(a, agent_type) or getattr(a, "rt", None) is not rt:
            raise HsaError(
                Status.ERROR_INVALID_AGENT,
                f"agents[{i}] = {show(a)} is not an agent of this runtime",
            )
    return out


def check_allow_access(agents: Any, buf: Any, rt: Any, agent_type: type, buffer_type: type) -> list:
    """The arguments of hsa_amd_agents_allow_access, shared by the local runtime and the HTTP
    client: the agents (check_agents) and a live buffer this runtime allocated."""
    out = check_agents(agents, rt, agent_type)
    if not isinstance(buf, buffer_type):
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            f"buf must be a Buffer (pool.allocate(size)), got {show(buf)} "
            f"({type(buf).__name__}); the call is allow_access(agents, buf)",
        )
    if buf.rt is not rt:
        raise HsaError(
            Status.ERROR_INVALID_ALLOCATION,
            f"{buf!r} was allocated by another runtime (process): this one does not track it",
        )
    buf._check()
    return out


def check_kernel_agent(agent: Any, rt: Any, agent_type: type) -> Any:
    """The agent a code object is loaded for: None means the first GPU; otherwise a GPU agent
    of this runtime (HSA_STATUS_ERROR_INVALID_AGENT)."""
    if agent is None:
        return rt.gpus[0]
    if not isinstance(agent, agent_type) or agent.rt is not rt:
        raise HsaError(
            Status.ERROR_INVALID_AGENT,
            f"agent = {show(agent)} is not an agent of this runtime (rt.gpus[...])",
        )
    if not agent.is_gpu:
        raise HsaError(
            Status.ERROR_INVALID_AGENT,
            f"{agent!r} runs no kernels: load code objects for a GPU agent (rt.gpus[...])",
        )
    return agent
