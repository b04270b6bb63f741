"""HSA runtime status codes (``hsa_status_t``).

Values are those of ``hsa.h`` plus the AMD additions in ``hsa_ext_amd.h`` (ROCm 5.2 headers).
The strings returned by :func:`status_string` follow ROCR-Runtime's ``hsa_status_string``:
the C enumerator name, a colon, then the description that the header's comment gives for
that value.
"""

from enum import IntEnum


class Status(IntEnum):
    """``hsa_status_t``; member names drop the ``HSA_STATUS_`` prefix."""

    SUCCESS = 0x0
    INFO_BREAK = 0x1
    ERROR = 0x1000
    ERROR_INVALID_ARGUMENT = 0x1001
    ERROR_INVALID_QUEUE_CREATION = 0x1002
    ERROR_INVALID_ALLOCATION = 0x1003
    ERROR_INVALID_AGENT = 0x1004
    ERROR_INVALID_REGION = 0x1005
    ERROR_INVALID_SIGNAL = 0x1006
    ERROR_INVALID_QUEUE = 0x1007
    ERROR_OUT_OF_RESOURCES = 0x1008
    ERROR_INVALID_PACKET_FORMAT = 0x1009
    ERROR_RESOURCE_FREE = 0x100A
    ERROR_NOT_INITIALIZED = 0x100B
    ERROR_REFCOUNT_OVERFLOW = 0x100C
    ERROR_INCOMPATIBLE_ARGUMENTS = 0x100D
    ERROR_INVALID_INDEX = 0x100E
    ERROR_INVALID_ISA = 0x100F
    ERROR_INVALID_ISA_NAME = 0x1017
    ERROR_INVALID_CODE_OBJECT = 0x1010
    ERROR_INVALID_EXECUTABLE = 0x1011
    ERROR_FROZEN_EXECUTABLE = 0x1012
    ERROR_INVALID_SYMBOL_NAME = 0x1013
    ERROR_VARIABLE_ALREADY_DEFINED = 0x1014
    ERROR_VARIABLE_UNDEFINED = 0x1015
    ERROR_EXCEPTION = 0x1016
    ERROR_INVALID_CODE_SYMBOL = 0x1018
    ERROR_INVALID_EXECUTABLE_SYMBOL = 0x1019
    ERROR_INVALID_FILE = 0x1020
    ERROR_INVALID_CODE_OBJECT_READER = 0x1021
    ERROR_INVALID_CACHE = 0x1022
    ERROR_INVALID_WAVEFRONT = 0x1023
    ERROR_INVALID_SIGNAL_GROUP = 0x1024
    ERROR_INVALID_RUNTIME_STATE = 0x1025
    ERROR_FATAL = 0x1026
    # hsa_ext_amd.h additions; note they are small decimal numbers, not in the 0x1000 range.
    ERROR_INVALID_MEMORY_POOL = 40
    ERROR_MEMORY_APERTURE_VIOLATION = 41
    ERROR_ILLEGAL_INSTRUCTION = 42
    ERROR_MEMORY_FAULT = 43
    CU_MASK_REDUCED = 44

    @property
    def c_name(self) -> str:
        """The C enumerator, e.g. ``HSA_STATUS_ERROR_INVALID_ARGUMENT``."""
        return status_c_name(self)


_DESCRIPTIONS: dict[Status, str] = {
    Status.SUCCESS: "The function has been executed successfully.",
    Status.INFO_BREAK: (
        "A traversal over a list of elements has been interrupted by the application before "
        "completing."
    ),
    Status.ERROR: "A generic error has occurred.",
    Status.ERROR_INVALID_ARGUMENT: (
        "One of the actual arguments does not meet a precondition stated in the documentation "
        "of the corresponding formal argument."
    ),
    Status.ERROR_INVALID_QUEUE_CREATION: "The requested queue creation is not valid.",
    Status.ERROR_INVALID_ALLOCATION: "The requested allocation is not valid.",
    Status.ERROR_INVALID_AGENT: "The agent is invalid.",
    Status.ERROR_INVALID_REGION: "The memory region is invalid.",
    Status.ERROR_INVALID_SIGNAL: "The signal is invalid.",
    Status.ERROR_INVALID_QUEUE: "The queue is invalid.",
    Status.ERROR_OUT_OF_RESOURCES: (
        "The HSA runtime failed to allocate the necessary resources. This error may also occur "
        "when the HSA runtime needs to spawn threads or create internal OS-specific events."
    ),
    Status.ERROR_INVALID_PACKET_FORMAT: "The AQL packet is malformed.",
    Status.ERROR_RESOURCE_FREE: "An error has been detected while releasing a resource.",
    Status.ERROR_NOT_INITIALIZED: (
        "An API other than hsa_init has been invoked while the reference count of the HSA "
        "runtime is 0."
    ),
    Status.ERROR_REFCOUNT_OVERFLOW: "The maximum reference count for the object has been reached.",
    Status.ERROR_INCOMPATIBLE_ARGUMENTS: "The arguments passed to a functions are not compatible.",
    Status.ERROR_INVALID_INDEX: "The index is invalid.",
    Status.ERROR_INVALID_ISA: "The instruction set architecture is invalid.",
    Status.ERROR_INVALID_ISA_NAME: "The instruction set architecture name is invalid.",
    Status.ERROR_INVALID_CODE_OBJECT: "The code object is invalid.",
    Status.ERROR_INVALID_EXECUTABLE: "The executable is invalid.",
    Status.ERROR_FROZEN_EXECUTABLE: "The executable is frozen.",
    Status.ERROR_INVALID_SYMBOL_NAME: "There is no symbol with the given name.",
    Status.ERROR_VARIABLE_ALREADY_DEFINED: "The variable is already defined.",
    Status.ERROR_VARIABLE_UNDEFINED: "The variable is undefined.",
    Status.ERROR_EXCEPTION: "An HSAIL operation resulted in a hardware exception.",
    Status.ERROR_INVALID_CODE_SYMBOL: "The code object symbol is invalid.",
    Status.ERROR_INVALID_EXECUTABLE_SYMBOL: "The executable symbol is invalid.",
    Status.ERROR_INVALID_FILE: "The file descriptor is invalid.",
    Status.ERROR_INVALID_CODE_OBJECT_READER: "The code object reader is invalid.",
    Status.ERROR_INVALID_CACHE: "The cache is invalid.",
    Status.ERROR_INVALID_WAVEFRONT: "The wavefront is invalid.",
    Status.ERROR_INVALID_SIGNAL_GROUP: "The signal group is invalid.",
    Status.ERROR_INVALID_RUNTIME_STATE: "The HSA runtime is not in the configuration state.",
    Status.ERROR_FATAL: "The queue received an error that may require process termination.",
    Status.ERROR_INVALID_MEMORY_POOL: "The memory pool is invalid.",
    Status.ERROR_MEMORY_APERTURE_VIOLATION: (
        "Agent accessed memory beyond the maximum legal address."
    ),
    Status.ERROR_ILLEGAL_INSTRUCTION: "Agent executed an invalid shader instruction.",
    Status.ERROR_MEMORY_FAULT: "Agent attempted to access an inaccessible address.",
    Status.CU_MASK_REDUCED: (
        "The CU mask was successfully set but the mask attempted to enable a CU which was "
        "disabled for the process.  CUs disabled for the process remain disabled."
    ),
}


def status_c_name(status: Status | int) -> str:
    """The C enumerator name of ``status``; ``ValueError`` if it is not an hsa_status_t."""
    return "HSA_STATUS_" + Status(status).name


def status_string(status: Status | int) -> str:
    """What ``hsa_status_string`` reports for ``status``.

    Raises ``ValueError`` for a value that is not an ``hsa_status_t``, where the C function
    returns ``HSA_STATUS_ERROR_INVALID_ARGUMENT``.
    """
    member = Status(status)
    return f"{status_c_name(member)}: {_DESCRIPTIONS[member]}"
