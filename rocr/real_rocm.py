"""`hsaemu exec`: run an unmodified ROCm program (rocminfo, an hsa.h program) on the emulated KFD.

It joins the KFD service at a socket (or starts one and stops it at the end), writes the
service's sysfs KFD topology into a temporary directory, and runs the command with the
LD_PRELOAD interposer (roct/interposer/hsaemu_preload.c) that sends the real libhsakmt's
open/ioctl/mmap of /dev/kfd to the service. docs/real-rocm.md tells the whole story.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

# How long a service started here may take to listen (Python start-up and the preset's System;
# a guess with a wide margin for a loaded 2-core machine).
SERVICE_START_TIMEOUT_S = 60.0
SERVICE_STOP_TIMEOUT_S = 10.0
# rocminfo's CheckInitialState runs `lsmod | grep amdgpu`: the module list it is shown.
FAKE_LSMOD = """#!/bin/sh
# hsaemu exec: the emulated KFD stands in for the amdgpu kernel module.
echo "Module                  Size  Used by"
echo "amdgpu               9203712  0"
"""
_SYSFS_TOPOLOGY = "/sys/devices/virtual/kfd/kfd/topology"


class ExecError(Exception):
    """Something `hsaemu exec` needs is missing or failed; the message says what and why."""


def _listening(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError:
        return False
    finally:
        s.close()
    return True


@contextlib.contextmanager
def kfd_service(path: str | None, preset: str, log: Path) -> Iterator[str]:
    """The socket of a KFD service: the one listening at `path`, else one started here (and
    stopped when the block ends)."""
    if path is not None and _listening(path):
        yield path
        return
    with contextlib.ExitStack() as stack:
        if path is None:
            path = os.path.join(stack.enter_context(tempfile.TemporaryDirectory()), "kfd.sock")
        cmd = [sys.executable, "-m", "rocr.cli", "kfd", "--socket", path, "--preset", preset]
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + SERVICE_START_TIMEOUT_S
            while not _listening(path):
                if proc.poll() is not None:
                    raise ExecError(
                        f"the KFD service ({' '.join(cmd[2:])}) exited with status "
                        f"{proc.returncode} before listening: {log.read_text().strip()[-2000:]}"
                    )
                if time.monotonic() > deadline:
                    raise ExecError(
                        f"the KFD service did not listen on {path} within "
                        f"{SERVICE_START_TIMEOUT_S:.0f} s"
                    )
                time.sleep(0.05)
            yield path
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(SERVICE_STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _properties(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _marketing_name(name: str, props: dict[str, int]) -> str | None:
    """The preset behind a topology node (same name, device id and SIMD count)."""
    from hw_model.config import PRESETS

    for spec in PRESETS.values():
        if (
            spec.name == name
            and spec.device_id == props.get("device_id")
            and spec.num_cus * spec.simds_per_cu == props.get("simd_count")
        ):
            return spec.marketing_name
    return None


def materialise_sysfs(tree: dict[str, str], root: Path) -> None:
    """Write the service's sysfs files under `root` (the interposer redirects the KFD topology
    paths there). amdgpu's `/sys/class/drm/renderD<minor>/device/product_name`, which the
    interposer's amdgpu_get_marketing_name answers from, is added for GPU nodes without one."""
    files = dict(tree)
    # The thunk reads /sys/devices/virtual/kfd/kfd/topology; /sys/class/kfd/kfd is a link to it.
    for path, text in tree.items():
        for alias in ("/sys/class/kfd/kfd/topology", _SYSFS_TOPOLOGY):
            other = _SYSFS_TOPOLOGY if alias != _SYSFS_TOPOLOGY else "/sys/class/kfd/kfd/topology"
            if path.startswith(alias + "/"):
                files.setdefault(other + path[len(alias) :], text)
    for path, text in list(files.items()):
        if not (path.startswith(_SYSFS_TOPOLOGY + "/nodes/") and path.endswith("/properties")):
            continue
        rel = path[len(_SYSFS_TOPOLOGY + "/nodes/") :].split("/")
        if len(rel) != 2:
            continue
        props = _properties(text)
        minor = props.get("drm_render_minor", 0)
        if not minor or props.get("simd_count", 0) == 0:
            continue
        name = files.get(f"{_SYSFS_TOPOLOGY}/nodes/{rel[0]}/name", "").strip()
        key = f"/sys/class/drm/renderD{minor}/device/product_name"
        if key not in files:
            files[key] = (_marketing_name(name, props) or name) + "\n"
    dirs = {path[:i] for path in files for i in range(1, len(path)) if path[i] == "/"}
    for path, text in files.items():
        if path in dirs:
            continue  # a listing of a directory (`topology/nodes`): the directory itself is it
        dest = root / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text)


def sysfs_tree(sock: str) -> dict[str, str]:
    from roct.socket_transport import SocketTransport

    t = SocketTransport(sock, name="hsaemu exec")
    try:
        return t.sysfs_tree()
    finally:
        close = getattr(t, "close", None)
        if close is not None:
            close()


def run(command: list[str], preset: str, sock: str | None, quiet: bool = False) -> int:
    """Run `command` under the interposer on a KFD service; returns its exit status (128 + N
    when a signal N ended it, as shells report)."""
    from roct.interposer import InterposerBuildError, library_path

    try:
        lib = library_path()
    except InterposerBuildError as e:
        raise ExecError(str(e)) from None
    with tempfile.TemporaryDirectory(prefix="hsaemu-exec-") as tmp:
        work = Path(tmp)
        with kfd_service(sock, preset, work / "kfd-service.log") as path:
            root = work / "sysfs"
            materialise_sysfs(sysfs_tree(path), root)
            bin_dir = work / "bin"
            bin_dir.mkdir()
            lsmod = bin_dir / "lsmod"
            lsmod.write_text(FAKE_LSMOD)
            lsmod.chmod(0o755)
            env = dict(os.environ)
            env["HSAEMU_KFD"] = f"unix:{path}"
            env["HSAEMU_SYSFS_ROOT"] = str(root)
            env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', os.defpath)}"
            pre = env.get("LD_PRELOAD", "")
            env["LD_PRELOAD"] = f"{lib} {pre}".strip()
            try:
                proc = subprocess.Popen(command, env=env)
            except FileNotFoundError:
                raise ExecError(f"{command[0]}: command not found") from None
            except PermissionError:
                raise ExecError(f"{command[0]}: permission denied") from None
            try:
                rc = proc.wait()
            except KeyboardInterrupt:
                proc.send_signal(signal.SIGINT)
                rc = proc.wait()
    return rc if rc >= 0 else 128 - rc
