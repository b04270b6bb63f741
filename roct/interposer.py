"""The LD_PRELOAD interposer that runs the real ROCm user space on the KFD service.

`hsaemu_preload.c` (next to this module) is built with gcc on first use and cached under
`$XDG_CACHE_HOME/hsaemu` (else `~/.cache/hsaemu`), keyed by a hash of its source and the
compiler command, so an edited source is rebuilt and concurrent builders never see a
half-written library (each writes a temporary file and renames it into place).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("interposer") / "hsaemu_preload.c"
# kfd_ioctl.h includes <drm/drm.h> only for the _IOC macros' types; linux-libc-dev does not
# always ship it, so the build supplies this stand-in.
_DRM_STUB = "#include <linux/types.h>\n#include <linux/ioctl.h>\n"
_CFLAGS = ["-O2", "-g", "-Wall", "-shared", "-fPIC", "-fvisibility=default"]
_LIBS = ["-ldl", "-lpthread"]


class InterposerBuildError(RuntimeError):
    """The shim could not be built: no C compiler, or the compiler failed (its output inside)."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hsaemu"


def _compiler() -> str:
    cc = os.environ.get("CC") or "gcc"
    path = shutil.which(cc)
    if path is None:
        raise InterposerBuildError(
            f"building the LD_PRELOAD interposer needs a C compiler: {cc!r} is not on PATH "
            "(install gcc, e.g. `apt-get install gcc`, or set CC)"
        )
    return path


def library_path(rebuild: bool = False) -> Path:
    """The built `hsaemu_preload.so` (built now if the cache has no copy for this source)."""
    cc = _compiler()
    src = SOURCE.read_bytes()
    key = hashlib.sha256(src + "\0".join([cc, *_CFLAGS, *_LIBS]).encode()).hexdigest()[:16]
    out_dir = cache_dir()
    lib = out_dir / f"hsaemu_preload-{key}.so"
    if lib.exists() and not rebuild:
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".build-") as tmp:
        inc = Path(tmp) / "include" / "drm"
        inc.mkdir(parents=True)
        (inc / "drm.h").write_text(_DRM_STUB)
        tmp_lib = Path(tmp) / lib.name
        cmd = [cc, *_CFLAGS, "-I", str(Path(tmp) / "include"), "-o", str(tmp_lib), str(SOURCE)]
        proc = subprocess.run([*cmd, *_LIBS], capture_output=True, text=True)
        if proc.returncode != 0:
            raise InterposerBuildError(
                f"{Path(cc).name} failed to build {SOURCE.name} "
                f"(exit {proc.returncode}):\n{proc.stderr.strip()}"
            )
        os.replace(tmp_lib, lib)
    return lib
