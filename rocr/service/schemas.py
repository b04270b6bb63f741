"""Messages of the hsaemu HTTP API: pydantic models shared by the server and the Python client.

Names follow hsa.h / hsa_ext_amd.h (conditions, fence scopes, segments, packet fields), so what
a student sees in JSON is what the C API calls it. Handles are the real ones: a buffer is named
by its address, a signal by its handle (the address of its `amd_signal_t`), a queue by the
runtime's queue id, a kernel by its `kernel_object`. Simulated times are reported in ns (and
exact ps where it matters); real (wall-clock) durations only bound how long a request may block.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)

from hw_model.aql import I64, U8, U16, U32, U64

API_VERSION = "1.0.0"  # the `/v1` API; changes only when the API does
MiB = 1 << 20


def _b64decode(value: object) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if not isinstance(value, str):
        raise ValueError("expected a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"not valid base64: {e}") from None


Base64 = Annotated[
    bytes,
    BeforeValidator(_b64decode),
    PlainSerializer(lambda b: base64.b64encode(b).decode("ascii"), return_type=str),
    WithJsonSchema({"type": "string", "contentEncoding": "base64"}),
]

ConditionName = Literal["EQ", "NE", "LT", "GTE"]  # hsa_signal_condition_t
WaitStateName = Literal["BLOCKED", "ACTIVE"]  # hsa_wait_state_t
FenceScopeName = Literal["NONE", "AGENT", "SYSTEM"]  # hsa_fence_scope_t
PacketTypeName = Literal[
    "VENDOR_SPECIFIC", "INVALID", "KERNEL_DISPATCH", "BARRIER_AND", "AGENT_DISPATCH", "BARRIER_OR"
]
NonNegative = Annotated[int, Field(ge=0)]
NodeId = Annotated[int, Field(ge=0, le=0xFFFF, description="KFD topology node of the agent")]


class Request(BaseModel):
    """A request body: unknown fields are refused, so a typo is an error, not a no-op, and
    types are strict: `true` or `"4096"` where a number belongs is refused, not coerced (an
    int is still taken where a float belongs, as JSON has one number type)."""

    model_config = ConfigDict(extra="forbid", strict=True)


# -- errors and limits ---------------------------------------------------------------------------


class LimitInfo(BaseModel):
    name: str = Field(description="the server limit that was exceeded (see GET /v1/limits)")
    value: int | float


class ErrorBody(BaseModel):
    """Every failure: the hsa_status_t a runtime would return, and what to do about it."""

    status: str = Field(description="hsa_status_t enumerator, e.g. HSA_STATUS_ERROR_INVALID_QUEUE")
    code: int = Field(description="its numeric value, e.g. 4103")
    message: str
    limit: LimitInfo | None = None
    detail: list[dict[str, Any]] | None = Field(
        None, description="request validation errors, as FastAPI reports them"
    )


class ServerLimits(Request):
    """What one server allows; a request past a limit gets a 4xx naming the limit."""

    # Read from `--limit NAME=VALUE` strings too, so not strict.
    model_config = ConfigDict(extra="forbid", strict=False)

    max_systems: int = Field(128, ge=1, description="emulated machines alive at once")
    max_systems_per_client: int = Field(
        32,
        ge=1,
        description="systems one client may hold at once; a client is its API key when the "
        "server requires keys (hsaemu serve --require-key), else its IP address",
    )
    create_rate_per_minute: float = Field(
        60.0,
        gt=0,
        description="systems one client may create per minute, on average (token bucket)",
    )
    create_burst: int = Field(
        30, ge=1, description="systems one client may create back to back before the rate applies"
    )
    idle_timeout_s: float = Field(
        1800.0, gt=0, description="a system nobody has used for this long is shut down"
    )
    max_memory_per_system: int = Field(
        128 * MiB,
        ge=1 << 16,
        description="bytes of buffers, queue rings, code objects, signals (with their KFD "
        "events) and trace markers one system may hold",
    )
    max_queues_per_process: int = Field(32, ge=1, description="AQL queues per system")
    max_signals_per_system: int = Field(1024, ge=1, description="signals per system")
    max_body_bytes: int = Field(
        16 * MiB, ge=4096, description="largest request body, and largest single buffer read"
    )
    max_wait_ms: int = Field(
        30_000,
        ge=0,
        description="longest a request may block in real time (a wait's wall_timeout_ms, or "
        "waiting for its system to finish another request)",
    )
    max_gpus: int = Field(8, ge=1, description="GPUs in one system's spec")
    max_compute_units: int = Field(
        4096, ge=1, description="compute units over all GPUs of one system's spec"
    )
    max_trace_events: int = Field(
        200_000, ge=1, description="trace events kept per system (the newest; older are dropped)"
    )
    max_kernels_per_code_object: int = Field(
        1024, ge=1, description="kernels (amdhsa.kernels entries) one code object may declare"
    )
    max_run_ns: float = Field(
        1e10,
        gt=0,
        description="longest simulated time one POST run may cover (duration_ns, or limit_ns "
        "of until_idle): a longer run is refused, a shorter one runs in slices and stops when "
        "its client hangs up",
    )
    max_dispatch_work: int = Field(
        1 << 40,
        ge=1,
        description="largest dispatch: work-items (whole workgroups) times the kernel's wave "
        "instructions (at least 1); a bigger one is refused before it is queued",
    )
    emulation_threads: int = Field(
        8,
        ge=1,
        le=256,
        description="threads that run emulation (one system uses one at a time); the event "
        "loop, /healthz and token checks never wait for them",
    )


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    systems: int
    version: str


# -- systems -------------------------------------------------------------------------------------


class SystemCreate(Request):
    preset: str | None = Field(
        None, description="GPU preset (GET /v1/presets); default: the server's --preset"
    )
    spec: dict[str, Any] = Field(
        default_factory=dict,
        description="overrides of SystemSpec fields, e.g. {'scheduler_policy': 'round_robin', "
        "'num_gpus': 1, 'gpu': {'num_cus': 4, 'hqd_slots': 2}}",
    )
    name: str = Field("", max_length=64, description="process name the KFD shows")
    trace: bool = Field(
        True,
        description="record the machine's timeline for GET .../trace, .../trace/events and "
        "the live view (false: faster dispatches, empty trace); spec {'trace': ...} wins",
    )


class SystemInfo(BaseModel):
    id: str
    preset: str
    name: str
    spec: dict[str, Any]
    host_ns: float = Field(description="the host clock (simulated), as rt.now_ns")
    device_ns: float = Field(description="the device engine's clock (simulated)")
    idle_s: float = Field(description="real seconds since the last request")
    expires_in_s: float
    waiters: int = Field(description="requests blocked in a signal wait on this system")
    buffers: int
    queues: int
    signals: int
    executables: int
    memory_bytes: int = Field(description="bytes counted against max_memory_per_system")


class SystemCreated(BaseModel):
    id: str
    token: str = Field(description="bearer token: send 'Authorization: Bearer <token>'")
    info: SystemInfo


class PresetInfo(BaseModel):
    name: str
    marketing_name: str
    num_cus: int
    hqd_slots: int
    gpu: dict[str, Any]


class KernelArgInfo(BaseModel):
    name: str
    type: str
    offset: int
    size: int


class BuiltinKernelInfo(BaseModel):
    name: str
    args: list[KernelArgInfo]
    kernarg_size: int
    vgprs: int
    sgprs: int
    group_segment_size: int
    private_segment_size: int
    cost: dict[str, int]


# -- agents and pools ----------------------------------------------------------------------------


class AgentInfo(BaseModel):
    """hsa_agent_get_info, under rocminfo's names (rocr.Agent.info())."""

    model_config = ConfigDict(extra="allow")
    node: int
    name: str
    device_type: Literal["CPU", "GPU", "DSP"]
    pools: list[int] = Field(description="ids of the agent's memory pools")


class PoolInfo(BaseModel):
    """hsa_amd_memory_pool_get_info (rocr.MemoryPool.info())."""

    model_config = ConfigDict(extra="allow")
    id: int
    agent: int
    index: int = Field(description="position in the agent's pool list")
    name: str
    segment: str
    global_flags: list[str]
    size: int
    alloc_allowed: bool
    alloc_granule: int
    alloc_alignment: int
    fine_grained: bool
    coarse_grained: bool
    kernarg: bool


# -- buffers -------------------------------------------------------------------------------------


class BufferCreate(Request):
    """hsa_amd_memory_pool_allocate."""

    pool: NonNegative = Field(description="pool id (GET pools)")
    size: int = Field(ge=1, description="bytes (the runtime refuses sizes the pool cannot give)")


class BufferInfo(BaseModel):
    address: int = Field(description="the buffer's VA: what a kernel argument or packet takes")
    size: int
    pool: int
    agents: list[int] = Field(description="GPU nodes given access with allow-access")
    host_accessible: bool


class AllowAccess(Request):
    """hsa_amd_agents_allow_access."""

    agents: list[NodeId] = Field(min_length=1, max_length=64)


class BufferBytes(BaseModel):
    offset: int
    size: int
    data: Base64


class BufferWrite(Request):
    offset: NonNegative = 0
    data: Base64


class BufferWritten(BaseModel):
    offset: int
    size: int


# -- queues --------------------------------------------------------------------------------------


class QueueCreate(Request):
    """hsa_queue_create."""

    agent: NodeId
    size: int = Field(256, description="packets: a power of two within the agent's queue sizes")
    priority: int = Field(0, ge=-3, le=3, description="HSA_QUEUE_PRIORITY, -3..3")
    error_callback: bool = Field(
        False,
        description="true: the queue has an error callback, so after a queue error calls on it "
        "go on (the error is reported on the queue resource); false (ROCr's default): every "
        "later call on the queue fails with the error",
    )


class QueueError(BaseModel):
    status: str
    code: int
    message: str


class QueueInfo(BaseModel):
    id: int = Field(description="hsa_queue_t id (the runtime's)")
    queue_id: int = Field(description="the KFD's queue id")
    agent: int
    size: int
    priority: int
    base_address: int = Field(description="the ring")
    address: int = Field(description="the amd_queue_t")
    doorbell_signal: int = Field(description="handle of the queue's doorbell signal")
    doorbell_address: int = Field(description="VA of the doorbell in the doorbell page")
    doorbell_offset: int = Field(description="byte offset of the doorbell in that page")
    doorbell_value: int | None = Field(description="last value stored to the doorbell")
    write_index: int
    read_index: int = Field(description="read_dispatch_id, advanced by the CP")
    error: QueueError | None = None


class QueueErrorEntry(QueueError):
    queue: int


class IndexValue(Request):
    value: U64


class IndexAdd(Request):
    delta: Annotated[int, Field(ge=0, le=(1 << 63) - 1)] = 1


class IndexCas(Request):
    expected: U64
    value: U64


class Doorbell(Request):
    value: Annotated[int, Field(ge=-(1 << 63), le=(1 << 63) - 1)] = Field(
        description="the packet index being published"
    )


class QueuePriority(Request):
    priority: int = Field(ge=-3, le=3)


class CuMask(Request):
    mask: list[U32] = Field(min_length=1, max_length=64, description="32-bit words; bit i = CU i")


class QueueReport(BaseModel):
    queue: int
    lines: list[str]


class HeaderFields(BaseModel):
    type: str
    barrier: bool
    acquire_fence_scope: str
    release_fence_scope: str


class PacketSlot(BaseModel):
    queue: int
    index: int
    slot: int = Field(description="index modulo the ring size")
    header: int
    header_fields: HeaderFields
    raw: Base64
    hex: str
    packet: dict[str, Any] | None = Field(description="decoded fields; null for an INVALID slot")


class _PacketBody(Request):
    header: U16 | None = Field(
        None,
        description="the raw 16-bit header; when given it is written as is (type bits "
        "included) and barrier/acquire/release are ignored",
    )
    barrier: bool = False
    acquire_fence_scope: FenceScopeName = "SYSTEM"
    release_fence_scope: FenceScopeName = "SYSTEM"
    completion_signal: U64 = 0


class KernelDispatchPacketBody(_PacketBody):
    """hsa_kernel_dispatch_packet_t. Sizes default to a 1-D launch; setup to the dimensions."""

    type: Literal["KERNEL_DISPATCH"]
    setup: U16 | None = Field(None, description="default: the number of dimensions used")
    workgroup_size_x: U16 = 1
    workgroup_size_y: U16 = 1
    workgroup_size_z: U16 = 1
    reserved0: U16 = 0
    grid_size_x: U32 = 1
    grid_size_y: U32 = 1
    grid_size_z: U32 = 1
    private_segment_size: U32 = 0
    group_segment_size: U32 = 0
    kernel_object: U64 = 0
    kernarg_address: U64 = 0
    reserved2: U64 = 0


class _BarrierBody(_PacketBody):
    reserved0: U16 = 0
    reserved1: U32 = 0
    dep_signal: list[U64] = Field(
        default_factory=list, max_length=5, description="up to 5 handles; the rest are 0"
    )
    reserved2: U64 = 0


class BarrierAndPacketBody(_BarrierBody):
    """hsa_barrier_and_packet_t."""

    type: Literal["BARRIER_AND"]


class BarrierOrPacketBody(_BarrierBody):
    """hsa_barrier_or_packet_t."""

    type: Literal["BARRIER_OR"]


class AgentDispatchPacketBody(_PacketBody):
    """hsa_agent_dispatch_packet_t (field `type` of the C struct is `agent_type` here)."""

    type: Literal["AGENT_DISPATCH"]
    agent_type: U16 = 0
    reserved0: U32 = 0
    return_address: U64 = 0
    arg: list[U64] = Field(default_factory=list, max_length=4)
    reserved2: U64 = 0


class AmdBarrierValuePacketBody(_PacketBody):
    """hsa_amd_barrier_value_packet_t (a VENDOR_SPECIFIC packet, AmdFormat 2)."""

    type: Literal["AMD_BARRIER_VALUE"]
    amd_format: U8 = 2
    reserved: U8 = 0
    reserved0: U32 = 0
    signal: U64 = 0
    value: I64 = 0
    mask: I64 = -1
    cond: ConditionName | U32 = "EQ"
    reserved1: U32 = 0
    reserved2: U64 = 0
    reserved3: U64 = 0


PacketBody = Annotated[
    KernelDispatchPacketBody
    | BarrierAndPacketBody
    | BarrierOrPacketBody
    | AgentDispatchPacketBody
    | AmdBarrierValuePacketBody,
    Field(discriminator="type"),
]


class RawPacket(Request):
    raw: Base64 = Field(description="the packet's 64 bytes")


class DispatchRequest(Request):
    """Pack kernargs, write a kernel dispatch packet and ring the doorbell (queue.dispatch)."""

    kernel_object: U64 | None = Field(None, description="a loaded kernel's kernel_object")
    kernel: str | None = Field(None, description="or a loaded kernel's name")
    grid: U32 | list[U32] = Field(description="work-items per dimension (1-3 dimensions)")
    workgroup: U16 | list[U16]
    args: list[int | float] = Field(
        default_factory=list, max_length=64, description="kernel arguments; buffers by address"
    )
    completion_signal: U64 | None = Field(None, description="default: a new signal, value 1")
    group_segment_size: U32 | None = None
    barrier: bool = False
    acquire_fence_scope: FenceScopeName = "SYSTEM"
    release_fence_scope: FenceScopeName = "SYSTEM"

    @model_validator(mode="after")
    def _one_kernel(self) -> DispatchRequest:
        if (self.kernel_object is None) == (self.kernel is None):
            raise ValueError("give exactly one of kernel_object and kernel")
        return self


class DispatchInfo(BaseModel):
    queue: int
    index: int = Field(description="the packet index")
    signal: int = Field(description="handle of the completion signal")
    kernel_object: int


# -- signals -------------------------------------------------------------------------------------


class SignalCreate(Request):
    """hsa_signal_create."""

    initial: I64 = 0
    interrupt: bool = Field(True, description="backed by a KFD event (ROCr's default)")


class SignalInfo(BaseModel):
    handle: int
    value: int
    interrupt: bool
    event_id: int | None


class SignalValue(Request):
    value: I64


class SignalCas(Request):
    expected: I64
    value: I64


class SignalOld(BaseModel):
    old: int = Field(description="the value before the operation")


class SignalWait(Request):
    """hsa_signal_wait_scacquire."""

    condition: ConditionName
    compare_value: I64
    timeout_ns: NonNegative | None = Field(
        None, description="simulated time; null waits until the condition holds"
    )
    wait_state: WaitStateName = "BLOCKED"
    wall_timeout_ms: NonNegative = Field(
        0,
        description="real time this wait may block for another client of the system to act "
        "when the machine has nothing left to do. 0: such a wait can never finish and fails "
        "at once with a diagnosis. At most the server's max_wait_ms",
    )


class SignalWaitResult(BaseModel):
    value: int = Field(description="the value observed (on timeout: the current value)")
    satisfied: bool
    host_ns: float
    attempts: int = Field(description="1, or more when the wait blocked for other clients")
    queue_errors: list[QueueErrorEntry]


class DispatchTime(BaseModel):
    start_ns: float
    end_ns: float


# -- code objects --------------------------------------------------------------------------------


class CodeObjectLoad(Request):
    source: str = Field(
        "builtin",
        max_length=1024,
        description="'builtin' (all built-in kernels) or 'builtin:square,vector_add'; other "
        "code objects are uploaded as application/octet-stream",
    )
    agent: NodeId | None = Field(None, description="default: the first GPU")


class KernelSymbolInfo(BaseModel):
    """hsa_executable_symbol_get_info of a kernel."""

    name: str
    kernel_object: int
    kernarg_segment_size: int
    kernarg_segment_alignment: int
    group_segment_size: int
    private_segment_size: int
    vgpr_count: int
    sgpr_count: int
    args: list[KernelArgInfo]


class ExecutableInfo(BaseModel):
    id: int
    agent: int
    kernels: list[KernelSymbolInfo]


# -- simulation and inspection -------------------------------------------------------------------


class RunRequest(Request):
    """Run the simulation forward: by a duration (the host sleeps), or until the device idles."""

    duration_ns: float | None = Field(None, ge=0, le=1e15)
    duration_ps: NonNegative | None = Field(None, le=10**18)
    until_idle: bool = False
    limit_ns: float | None = Field(None, ge=0, le=1e15, description="bound for until_idle")

    @model_validator(mode="after")
    def _one_mode(self) -> RunRequest:
        given = sum(x is not None for x in (self.duration_ns, self.duration_ps))
        if given + int(self.until_idle) != 1:
            raise ValueError("give exactly one of duration_ns, duration_ps, until_idle")
        return self


class Clock(BaseModel):
    host_ps: int
    device_ps: int
    host_ns: float
    device_ns: float
    pending_events: int


class KfdInfo(BaseModel):
    processes: list[dict[str, Any]] = Field(description="per process: queues, doorbells, events")
    runlist: dict[str, Any]


class RunlistInfo(BaseModel):
    runlist: dict[str, Any] = Field(description="the KFD's view: processes, queues, oversubscribed")
    gpus: list[dict[str, Any]] = Field(
        description="per GPU: the HW scheduler's runlist and which queues hold HQD slots"
    )


class TraceEvents(BaseModel):
    events: list[dict[str, Any]] = Field(description="events with ps timestamps")
    next: int = Field(description="pass as `since` to get only later events")
    total: int = Field(description="events recorded since the system started")
    dropped: int = Field(description="oldest events discarded (the trace is a ring buffer)")


MarkerKey = Annotated[str, Field(min_length=1, max_length=64)]
MarkerValue = Annotated[str, Field(max_length=256)] | int | float | bool


class TraceMarker(Request):
    """A marker in the trace; its strings are bounded and count against the system's memory
    while the trace keeps it."""

    track: str = Field("user", max_length=64)
    name: str = Field(max_length=256)
    args: dict[MarkerKey, MarkerValue] = Field(default_factory=dict, max_length=32)
