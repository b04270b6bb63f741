"""The real ROCm user space on the emulated KFD (docs/real-rocm.md): Debian's unmodified
rocminfo, libhsa-runtime64 and libhsakmt (5.2.3) under `hsaemu exec`, through the LD_PRELOAD
interposer and the KFD service.

Skipped when the packages or gcc are missing, unless HSAEMU_REQUIRE_REAL_ROCM=1 (CI), which
makes a missing piece a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hw_model.config import PRESETS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "real_rocm" / "hsa_basics.c"
LIBDIR = Path("/usr/lib/x86_64-linux-gnu")
# Each run is a few seconds of wall time (the real runtime's start-up against the service).
RUN_TIMEOUT_S = 120


def _missing() -> list[str]:
    missing = []
    if not (LIBDIR / "libhsakmt.so.1").exists():
        missing.append("libhsakmt1")
    if not (LIBDIR / "libhsa-runtime64.so.1").exists():
        missing.append("libhsa-runtime64-1")
    if not Path("/usr/include/hsa/hsa.h").exists():
        missing.append("libhsa-runtime-dev")
    if shutil.which("rocminfo") is None:
        missing.append("rocminfo")
    if shutil.which("gcc") is None:
        missing.append("gcc")
    return missing


@pytest.fixture(scope="module", autouse=True)
def real_rocm():
    absent = _missing()
    if absent:
        why = f"real ROCm user space not installed (missing: {', '.join(absent)})"
        if os.environ.get("HSAEMU_REQUIRE_REAL_ROCM") == "1":
            pytest.fail(f"HSAEMU_REQUIRE_REAL_ROCM=1 but {why}", pytrace=False)
        pytest.skip(why)


def hsaemu(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "HSAEMU_DEBUG"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "rocr.cli", *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=ROOT,
        env=full_env,
    )


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """One KFD service (gfx900) the hsa.h runs join with --socket."""
    sock = tmp_path_factory.mktemp("kfd") / "kfd.sock"
    log = sock.with_name("service.log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rocr.cli", "kfd", "--socket", str(sock), "--preset", "gfx900"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        for _ in range(600):  # the service imports numpy and builds the machine first
            if sock.exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert sock.exists(), f"the KFD service did not start: {log.read_text()}"
        yield str(sock)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def hsa_basics(tmp_path_factory):
    out = tmp_path_factory.mktemp("hsa") / "hsa_basics"
    subprocess.run(
        ["gcc", "-O1", "-Wall", str(EXAMPLE), "-o", str(out), "-lhsa-runtime64"], check=True
    )
    return out


def field(text: str, name: str) -> list[str]:
    """Every value rocminfo prints for `name:` (its lines are `  Name:   value`)."""
    return [m.strip() for m in re.findall(rf"^\s*{re.escape(name)}:\s*(.*?)\s*$", text, re.M)]


def test_rocminfo_lists_the_cpu_and_the_presets_gpu_agent_and_pools():
    spec = PRESETS["gfx900"]
    r = hsaemu("exec", "--preset", "gfx900", "--", "rocminfo")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "ROCk module is loaded" in out  # its `lsmod | grep amdgpu` check passed
    assert "Unable to open /dev/kfd" not in out
    assert field(out, "Device Type") == ["CPU", "GPU"]
    gpu = out[out.index("Agent 2") :]
    assert field(gpu, "Name")[0] == spec.name
    assert field(gpu, "Marketing Name") == [spec.marketing_name]
    assert field(gpu, "Compute Unit")[0] == str(spec.num_cus)
    assert field(gpu, "SIMDs per CU")[0] == str(spec.simds_per_cu)
    assert field(gpu, "Shader Engines")[0] == str(spec.shader_engines)
    assert field(gpu, "Wavefront Size")[0].startswith(f"{spec.wavefront_size}(")
    assert field(gpu, "Chip ID")[0] == f"{spec.device_id}({spec.device_id:#x})"
    assert field(gpu, "Max Clock Freq. (MHz)")[0] == str(spec.engine_clock_mhz)
    assert field(gpu, "L2")[0].startswith(f"{spec.l2_size // 1024}(")
    assert "amdgcn-amd-amdhsa--gfx900" in gpu
    # pools: the GPU's VRAM (coarse grained), the CPU's system memory (fine grained, kernarg)
    sizes = field(gpu, "Size")
    assert sizes[0].startswith(f"{spec.vram_size // 1024}(")
    cpu = out[out.index("Agent 1") : out.index("Agent 2")]
    assert "KERNARG, FINE GRAINED" in cpu
    assert field(cpu, "Size")[0].startswith(f"{64 * 1024 * 1024}(")  # SystemSpec: 64 GiB


def test_hsa_program_runs_init_agents_pools_signals_and_a_queue(service, hsa_basics):
    r = hsaemu("exec", "--socket", service, "--", str(hsa_basics))
    assert r.returncode == 0, r.stdout + r.stderr
    for call in (
        "hsa_init()",
        "hsa_iterate_agents(",
        "hsa_amd_memory_pool_allocate(gpu_pools.coarse",
        "hsa_amd_agents_allow_access(",
        "hsa_signal_create(",
        "hsa_queue_create(",
        "hsa_queue_destroy(",
        "hsa_shut_down()",
    ):
        assert f"ok {call}" in r.stdout, r.stdout
    assert "FAIL" not in r.stdout
    assert "gpu agent gfx900: 64 compute units, wavefront 64" in r.stdout
    assert "ok signal 7 - 2 = 5" in r.stdout
    assert r.stdout.rstrip().endswith("ALL OK")


def test_real_runtime_loads_a_clang_code_object_and_runs_saxpy(service, hsa_basics, compile_cl):
    # ROCr 5.2 predates code object v5 (its implicit kernel arguments): build v4
    co = compile_cl((ROOT / "examples" / "kernels" / "saxpy.cl").read_text(), cov=4)
    r = hsaemu("exec", "--socket", service, "--", str(hsa_basics), "--dispatch", str(co))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok hsa_executable_freeze(exe, NULL)" in r.stdout  # its PM4 cache invalidate ran
    assert "ok saxpy results: y[i] = 2 * i + 1 for all 1000 elements" in r.stdout
    assert "FAIL" not in r.stdout


@pytest.mark.parametrize("sdma", ["1", "0"], ids=["sdma", "blit_kernels"])
def test_async_copy_through_the_real_runtime(service, hsa_basics, sdma):
    # ROCr's BlitSdma (its SDMA packets on our SDMA engines), or with HSA_ENABLE_SDMA=0 its
    # BlitKernel (its own copy shaders on the ISA interpreter)
    env = {"HSAEMU_DEBUG": "1", "HSA_ENABLE_SDMA": sdma}
    r = hsaemu("exec", "--socket", service, "--", str(hsa_basics), "--copy", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok 1048576 bytes copied system -> VRAM -> system" in r.stdout
    assert "FAIL" not in r.stdout
    queues = re.findall(r"KFD_IOC_QUEUE_TYPE_(\w+),", r.stderr)  # the interposer's debug lines
    assert ("SDMA" in queues) == (sdma == "1"), queues


KFD_FDS_C = r"""
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>
struct ver { uint32_t major, minor; };  /* kfd_ioctl_get_version_args */
static int version(int fd) {
	struct ver v = {0, 0};
	if (ioctl(fd, _IOR('K', 0x01, struct ver), &v)) return -errno;
	return (int)(v.major * 100 + v.minor);
}
int main(void) {
	int a = open("/dev/kfd", O_RDWR | O_CLOEXEC), b = open("/dev/kfd", O_RDWR);
	printf("versions %d %d\n", version(a), version(b));
	close(a);
	printf("after close(a) %d\n", version(b));
	fflush(stdout);
	if (fork() == 0) {
		printf("child %s\n", version(b) == -EBADF ? "EBADF" : "works");
		fflush(stdout);
		_exit(0);
	}
	wait(NULL);
	printf("parent %d\n", version(b));
	close(b);
	printf("after close(b) %s\n", version(b) == -EBADF ? "EBADF" : "works");
	return 0;
}
"""


def test_kfd_fds_of_a_process_share_one_kfd_process_and_a_child_gets_ebadf(service, tmp_path):
    # kfd_open: every open of /dev/kfd in a process is the same kfd_process; an fd used by
    # another process (after fork) is EBADF (kfd_ioctl checks the lead thread)
    src, exe = tmp_path / "kfd_fds.c", tmp_path / "kfd_fds"
    src.write_text(KFD_FDS_C)
    subprocess.run(["gcc", "-Wall", str(src), "-o", str(exe)], check=True)
    r = hsaemu("exec", "--socket", service, "--", str(exe))
    assert r.returncode == 0, r.stdout + r.stderr
    v = 100 + 11  # KFD_IOCTL_MAJOR_VERSION 1, minor 11 (linux/kfd_ioctl.h)
    assert r.stdout.splitlines() == [
        f"versions {v} {v}",
        f"after close(a) {v}",
        "child EBADF",
        f"parent {v}",
        "after close(b) EBADF",
    ]


def test_exec_reports_the_commands_exit_status_and_a_missing_command(service, capsys):
    from rocr.cli import main

    assert main(["exec", "--socket", service, "--", "sh", "-c", "exit 3"]) == 3
    assert main(["exec", "--socket", service, "--", "sh", "-c", "kill -TERM $$"]) == 128 + 15
    assert main(["exec", "--socket", service, "--", "no-such-program-hsaemu"]) == 1
    assert "no-such-program-hsaemu: command not found" in capsys.readouterr().err
    assert main(["exec", "--socket", service]) == 2
    assert "COMMAND is missing" in capsys.readouterr().err


def test_interposer_build_is_cached_and_needs_a_compiler(tmp_path, monkeypatch):
    from roct import interposer

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    lib = interposer.library_path()
    assert lib.parent == tmp_path / "hsaemu" and lib.exists()
    mtime = lib.stat().st_mtime_ns
    assert interposer.library_path() == lib and lib.stat().st_mtime_ns == mtime  # cached
    monkeypatch.setenv("CC", "no-such-cc-hsaemu")
    with pytest.raises(interposer.InterposerBuildError, match="no-such-cc-hsaemu"):
        interposer.library_path()
