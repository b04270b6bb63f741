"""Build AMDGPU code objects from OpenCL C with the packaged LLVM toolchain.

What a ROCm user does by hand (docs/isa.md, "Building a code object"): clang compiles
OpenCL C for `amdgcn-amd-amdhsa` against the ROCm device libraries (ocml, ockl), and lld
links the relocatable object into the shared ELF the loader accepts. Debian packages the
pieces as `clang-15`, `lld-15` and `rocm-device-libs`; nothing here needs a GPU.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

CLANG = "clang-15"
LLD = "ld.lld-15"


class ToolchainError(Exception):
    """The toolchain is missing, or clang/lld refused the source (their message kept)."""


@functools.cache
def device_lib_dir() -> str | None:
    """The directory holding the ROCm device libraries' bitcode (ocml.bc), or None."""
    for d in (
        "/usr/lib/x86_64-linux-gnu/amdgcn/bitcode",
        "/usr/lib/aarch64-linux-gnu/amdgcn/bitcode",
    ):
        if os.path.exists(os.path.join(d, "ocml.bc")):
            return d
    try:
        out = subprocess.run(
            ["dpkg", "-L", "rocm-device-libs"], capture_output=True, text=True, check=False
        ).stdout
    except OSError:
        return None
    hit = next((line for line in out.splitlines() if line.endswith("/ocml.bc")), None)
    return os.path.dirname(hit) if hit else None


def missing() -> list[str]:
    """The Debian packages of the toolchain that are not installed."""
    out = [pkg for tool, pkg in ((CLANG, "clang-15"), (LLD, "lld-15")) if not shutil.which(tool)]
    if device_lib_dir() is None:
        out.append("rocm-device-libs")
    return out


def compile_cl(
    source: Path,
    out: Path,
    *,
    mcpu: str = "gfx900",
    cov: int = 5,
    opt: str = "-O2",
    extra: tuple[str, ...] = (),
) -> list[list[str]]:
    """Compile the OpenCL C file `source` into the code object `out`; returns the two command
    lines run (clang, then lld). Raises ToolchainError naming what is missing or what clang
    or lld said."""
    absent = missing()
    if absent:
        raise ToolchainError(
            f"the AMDGPU toolchain is not installed (missing: {', '.join(absent)}); "
            f"apt-get install -y {' '.join(absent)}"
        )
    obj = out.with_suffix(".o")
    cc = [
        CLANG, "-x", "cl", "-Xclang", "-finclude-default-header",
        f"--rocm-device-lib-path={device_lib_dir()}", "-target", "amdgcn-amd-amdhsa",
        f"-mcpu={mcpu}", f"-mcode-object-version={cov}", "-cl-kernel-arg-info", opt,
        *extra, "-c", str(source), "-o", str(obj),
    ]  # fmt: skip
    link = [LLD, "-shared", str(obj), "-o", str(out)]
    for cmd in (cc, link):
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode:
            raise ToolchainError(f"{cmd[0]} failed:\n{r.stderr.strip()}")
    return [cc, link]
