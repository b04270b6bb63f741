"""`hsaemu`: the command line — a narrated kernel launch, agent info, and more.

Each subcommand is one function `cmd_<name>(args)` registered in `COMMANDS` with its
argument parser setup; `main()` dispatches. Arguments are checked before anything runs: a bad
one is a single `hsaemu <command>: error: ...` line on stderr and exit status 2, naming the
argument, its value and the limit. An `HsaError` a command runs into is one line too, led by
its status name, with exit status 1 (`HSAEMU_DEBUG=1` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import rocr  # its names load on first use: `hsaemu --help` loads neither numpy nor pydantic
from hw_model.default_preset import DEFAULT_PRESET

if TYPE_CHECKING:
    from hw_model.config import GpuSpec

COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], Callable, str]] = {}


def command(name: str, help_: str):
    def deco(fn):
        def setup(p: argparse.ArgumentParser) -> None:
            return None

        COMMANDS[name] = (fn, getattr(fn, "_setup", setup), help_)
        return fn

    return deco


def arguments(setup: Callable[[argparse.ArgumentParser], None]):
    def deco(fn):
        fn._setup = setup
        return fn

    return deco


# -- argument checking -----------------------------------------------------------------------

EXIT_USAGE = 2  # argparse's status for a usage error; every bad argument exits with it
EXIT_RUNTIME_ERROR = 1  # an HsaError the command ran into
# amdkfd kfd_priv.h: KFD_MAX_NUM_OF_PROCESSES, the processes one device's scheduler can hold.
KFD_MAX_NUM_OF_PROCESSES = 512
# ROCr amd_gpu_agent.cpp MAX_WAVE_SCRATCH: COMPUTE_TMPRING_SIZE.WAVESIZE is 13 bits of 1 KiB on
# gfx9, so one wave gets at most 8387584 bytes of scratch.
MAX_WAVE_SCRATCH = 8387584
KFD_MAX_QUEUE_PRIORITY = 15  # kfd_ioctl.h: queue priorities are 0..15


class CliError(Exception):
    """A bad argument or environment variable: `main` prints it as one line and exits 2."""

    def __init__(self, message: str, prog: str | None = None) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (the usage itself is in --help)."""

    def error(self, message: str) -> NoReturn:
        raise CliError(message, self.prog)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def check_range(
    flag: str, value: int, low: int | None = None, high: int | None = None, why: str = ""
) -> None:
    """`flag` must lie in [low, high]; `why` explains the upper limit."""
    if low is not None and value < low:
        raise CliError(f"{flag} must be at least {low} (got {value})")
    if high is not None and value > high:
        raise CliError(f"{flag} must be at most {high} (got {value})" + (f": {why}" if why else ""))


def _presets() -> dict[str, GpuSpec]:
    """The GPU presets (pydantic specs: imported by the commands that use them)."""
    from hw_model.config import PRESETS

    return PRESETS


def resolve_preset(preset: str | None) -> str:
    """One rule for every subcommand: --preset, else $HSAEMU_PRESET, else gfx900 (the
    runtime's default, as `rocr.init()` picks it)."""
    if preset is not None:
        return preset
    env = os.environ.get("HSAEMU_PRESET", "")
    if not env:
        return DEFAULT_PRESET
    if env not in _presets():
        raise CliError(
            f"HSAEMU_PRESET={env!r} is not a GPU preset; "
            f"choose one of {', '.join(sorted(_presets()))}"
        )
    return env


def _add_preset(p: argparse.ArgumentParser, what: str = "GPU preset") -> None:
    p.add_argument(
        "--preset",
        default=None,
        choices=sorted(_presets()),
        help=f"{what} (default: $HSAEMU_PRESET if set, else {DEFAULT_PRESET})",
    )


def _host_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_elements(flag: str, n: int, buffers: int, spec: GpuSpec, pool_size: int) -> None:
    """`n` floats per kernel in `buffers` buffers of 4n bytes: within the grid limit, the
    system pool, and the host memory that backs the emulated memory."""
    check_range(
        flag,
        n,
        1,
        spec.max_grid_size,
        f"one work-item per element, and a grid holds at most {spec.max_grid_size} work-items "
        "(HSA_AGENT_INFO_GRID_MAX_SIZE)",
    )
    gib = 1 << 30
    check_range(
        flag,
        n,
        high=pool_size // (4 * buffers),
        why=f"{buffers} buffers of 4 bytes per element must fit the {pool_size / gib:g} GiB "
        "system fine-grained pool",
    )
    host = _host_memory()
    # The emulated memory is numpy arrays in this process, and each buffer is also built
    # and checked on the host, so a run needs about twice its buffers in real memory.
    if host is not None:
        check_range(
            flag,
            n,
            high=host // (8 * buffers),
            why=f"the emulator keeps the {buffers} buffers of 4 bytes per element (and host "
            f"copies of them) in this computer's memory, {host / gib:.1f} GiB",
        )


def check_output_file(flag: str, path: str) -> None:
    """A file the command will write at the end: fail now rather than after the run."""
    p = Path(path)
    if p.is_dir():
        raise CliError(f"{flag} {path}: is a directory")
    parent = p.absolute().parent
    if not parent.is_dir():
        raise CliError(f"{flag} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise CliError(f"{flag} {path}: not writable")


def prepare_output_directory(flag: str, path: str) -> Path:
    d = Path(path)
    if d.exists() and not d.is_dir():
        raise CliError(f"{flag} {path}: exists and is not a directory")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"{flag} {path}: cannot create the directory: {e.strerror}") from None
    if not os.access(d, os.W_OK | os.X_OK):
        raise CliError(f"{flag} {path}: directory not writable")
    return d


# -- demo ------------------------------------------------------------------------------------


class Narrator:
    """Prints the trace events that each step produced, layer by layer."""

    LAYER = {"rocr": "rocr", "kfd": "KFD", "HWS": "HWS", "CP": "CP", "dispatcher": "SPI"}

    def __init__(self, system, out=None) -> None:
        self.system = system
        self.seen = 0
        self.out = out

    def say(self, text: str) -> None:
        print(text, file=self.out or sys.stdout)

    def step(self, title: str) -> None:
        self.say(f"\n== {title}")
        self.flush()

    def flush(self) -> None:
        log = self.system.tracer.events
        events = log.since(self.seen)
        self.seen = log.total
        wgs: dict[str, list] = {}
        lines: list[tuple[int, str]] = []
        for ev in events:
            if ev.cat == "wg":
                wgs.setdefault(ev.name, []).append(ev)
                continue
            if ev.ph not in ("i", "X"):
                continue
            layer = self.LAYER.get(ev.track, ev.track)
            args = ""
            if ev.args:
                args = "  " + " ".join(f"{k}={v}" for k, v in ev.args.items() if k != "pasid")
            lines.append((ev.ts, f"{layer:<9} {ev.name}{args}"))
        for name, evs in wgs.items():
            cus = {e.track for e in evs}
            first = min(e.ts for e in evs)
            last = max(e.ts + e.dur for e in evs)
            lines.append(
                (
                    first,
                    f"{'CUs':<9} {len(evs)} workgroups of {name} ran on "
                    f"{len(cus)} CUs, the last finishing at {last / 1e6:.3f} us",
                )
            )
        for ts, text in sorted(lines, key=lambda x: x[0]):
            self.say(f"  [{ts / 1e6:10.3f} us] {text}")


def _demo_setup(p: argparse.ArgumentParser) -> None:
    _add_preset(p)
    p.add_argument("-n", type=int, default=1 << 20, help="elements (default 1048576)")
    p.add_argument(
        "--workgroup",
        type=int,
        default=256,
        help="work-items per workgroup, up to the agent's limit (1024 on gfx9; default 256)",
    )
    p.add_argument("--trace", metavar="FILE", help="write a Perfetto/Chrome trace JSON")
    p.add_argument(
        "--vram",
        action="store_true",
        help="copy the input to VRAM through an SDMA queue, square it there, copy it back",
    )
    p.add_argument(
        "--kernel",
        metavar="FILE",
        help="your own kernel instead: an OpenCL C file (compiled with clang-15) or a code "
        "object; shows its descriptor, initial wave state and first instructions, then runs it",
    )
    p.add_argument("--name", help="with --kernel: which kernel of the file (default: the first)")
    p.add_argument(
        "--instructions",
        type=int,
        default=12,
        help="with --kernel: how many instructions to disassemble (default 12)",
    )


@command("demo", "narrated kernel launch through every layer")
@arguments(_demo_setup)
def cmd_demo(args: argparse.Namespace) -> int:
    import numpy as np

    from hw_model import aql
    from hw_model.config import system_spec

    spec = system_spec(args.preset)
    check_elements("-n", args.n, 2, spec.gpu, spec.system_memory)
    check_range(
        "--workgroup",
        args.workgroup,
        1,
        spec.gpu.max_workgroup_size,
        f"{args.preset} runs at most {spec.gpu.max_workgroup_size} work-items per workgroup "
        "(HSA_AGENT_INFO_WORKGROUP_MAX_SIZE)",
    )
    if args.trace:
        check_output_file("--trace", args.trace)
    if args.kernel:
        from rocr import demo_kernel

        return demo_kernel.run(args, Narrator, CliError)
    wall = time.perf_counter()
    n = args.n
    rt = rocr.init(preset=args.preset, trace=True)  # the narration reads the trace
    nar = Narrator(rt.system)
    gpu = rt.gpus[0]
    nar.say(
        f"hsaemu demo: square over {n} floats on {gpu.name} ({args.preset} preset, "
        f"{gpu.compute_unit_count} CUs)"
    )
    nar.step("1. hsa_init: the runtime opens /dev/kfd through the thunk")
    nar.say(f"  agents: {', '.join(repr(a) for a in rt.agents())}")

    fine = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
    src, dst = fine.allocate(4 * n), fine.allocate(4 * n)
    rt.allow_access([gpu], src)
    rt.allow_access([gpu], dst)
    x = np.arange(n, dtype=np.float32) / 1024
    src.view(np.float32)[:] = x
    nar.step("2. buffers: ALLOC_MEMORY_OF_GPU + mmap, then MAP_MEMORY_TO_GPU (allow_access)")
    nar.say(f"  in  = {src.address:#x}, out = {dst.address:#x} ({4 * n} bytes each)")
    k_in, k_out = src, dst  # the kernel's buffers
    if args.vram:
        vram = gpu.pools()[0]
        k_in, k_out = vram.allocate(4 * n), vram.allocate(4 * n)
        nar.step("2b. VRAM: ALLOC_MEMORY_OF_GPU (VRAM, not host-visible), MAP_MEMORY_TO_GPU")
        nar.say(f"  vram in = {k_in.address:#x}, vram out = {k_out.address:#x}")
        rt.profiling_async_copy_enable(True)
        _demo_copy(nar, rt, "2c. copy in", k_in, gpu, src, rt.cpu, 4 * n)

    exe = rt.load_code_object("builtin:square")
    k = exe.kernel("square")
    nar.step("3. code object: the loader writes the kernel descriptor into GPU memory")
    nar.say(
        f"  kernel_object = {k.kernel_object:#x}: {k.kernarg_size} kernarg bytes, "
        f"{k.vgprs} VGPRs, {k.sgprs} SGPRs"
    )

    q = gpu.create_queue(256)
    nar.step("4. hsa_queue_create: ring + amd_queue_t in memory, CREATE_QUEUE, doorbell")
    nar.say(
        f"  ring at {q.base_address:#x}, amd_queue_t at {q.address:#x}, doorbell at "
        f"{q.doorbell_signal.doorbell_address:#x} (KFD queue id {q.queue_id})"
    )

    done = rt.create_signal(1)
    nar.step("5. hsa_signal_create: amd_signal_t + a KFD signal event (interrupt signal)")

    i = q.add_write_index(1)
    kernarg = rt._kernarg(k.pack_args(k_out, k_in, n))
    pkt = aql.KernelDispatchPacket(
        header=aql.make_header(aql.PacketType.KERNEL_DISPATCH),
        setup=1,
        workgroup_size_x=args.workgroup,
        workgroup_size_y=1,
        workgroup_size_z=1,
        grid_size_x=n,
        grid_size_y=1,
        grid_size_z=1,
        kernel_object=k.kernel_object,
        kernarg_address=kernarg,
        completion_signal=done.handle,
    )
    q.write_packet(i, pkt)
    nar.step(f"6. write the AQL packet into slot {i} (body first, header last)")
    raw = q.packet_bytes(i)
    for off in range(0, 64, 16):
        nar.say(f"  +{off:02d}: {raw[off : off + 16].hex(' ')}")
    nar.say(f"  header {pkt.header:#06x}: type KERNEL_DISPATCH, acquire/release SYSTEM scope")

    q.ring_doorbell(i)
    nar.step("7. ring the doorbell: one MMIO store, no system call")

    done.wait(rocr.Condition.LT, 1)
    nar.step(
        "8. hsa_signal_wait: the GPU works; the host polls the signal (ROCr spins up to "
        "200 us, then sleeps in AMDKFD_IOC_WAIT_EVENTS until the interrupt)"
    )
    start, end = done.dispatch_time()
    nar.say(
        f"  kernel ran {start / 1000:.3f} .. {end / 1000:.3f} us of system time "
        f"({(end - start) / 1000:.3f} us); host woke at {rt.now_ns / 1000:.3f} us"
    )
    link = rt.system.spec.gpu
    if args.vram:
        nar.say(
            f"  in and out are in VRAM: the kernel's {8 * n} bytes went at the memory "
            f"bandwidth ({link.memory_bandwidth_gbps:g} GB/s)"
        )
    else:
        nar.say(
            f"  in and out are fine-grained host memory: the kernel's {8 * n} bytes crossed "
            f"{link.host_link} ({link.link_bandwidth_gbps:g} GB/s), not VRAM "
            f"({link.memory_bandwidth_gbps:g} GB/s); --vram copies to VRAM first"
        )

    if args.vram:
        _demo_copy(nar, rt, "8b. copy back", dst, rt.cpu, k_out, gpu, 4 * n)
    out = dst.view(np.float32)
    ok = bool(np.array_equal(out, x * x))
    nar.say(
        f"\n== 9. result: out[i] == in[i]^2 for all {n} elements: {'CORRECT' if ok else 'WRONG'}"
    )
    if args.trace:
        with open(args.trace, "w") as f:
            f.write(rt.system.tracer.dumps())
        nar.say(f"trace written to {args.trace} (open it in https://ui.perfetto.dev)")
    rt.shutdown()
    nar.say(f"wall time {time.perf_counter() - wall:.2f} s")
    return 0 if ok else 1


def _demo_copy(nar: Narrator, rt, title: str, dst, dst_agent, src, src_agent, size: int) -> None:
    """One narrated hsa_amd_memory_async_copy: queue creation on first use, SDMA packets, and
    the copy's GPU time against the host link."""
    h = rt.memory_async_copy(dst, dst_agent, src, src_agent, size)
    h.wait()
    nar.step(
        f"{title}: hsa_amd_memory_async_copy writes SDMA packets into the process's SDMA "
        "queue (created by AMDKFD_IOC_CREATE_QUEUE, type SDMA, on first use) and rings its "
        "doorbell"
    )
    start, end = rt.async_copy_time(h.signal)
    spec = rt.system.spec.gpu
    us = (end - start) / 1000
    nar.say(
        f"  {size} bytes by {h.engine} in {us:.3f} us ({size / (us * 1000):.2f} GB/s; "
        f"{spec.host_link} in the model: {spec.link_bandwidth_gbps:g} GB/s + "
        f"{spec.link_latency_ns / 1000:g} us)"
    )


# -- info ------------------------------------------------------------------------------------


def _info_setup(p: argparse.ArgumentParser) -> None:
    _add_preset(p)


@command("info", "agents and their properties, laid out like rocminfo")
@arguments(_info_setup)
def cmd_info(args: argparse.Namespace) -> int:
    with rocr.init(preset=args.preset) as rt:
        print("=" * 50)
        print("HSA Agents")
        print("=" * 50)
        for i, agent in enumerate(rt.agents()):
            print("*" * 7)
            print(f"Agent {i + 1}")
            print("*" * 7)
            for key, value in agent.info().items():
                print(f"  {key.replace('_', ' ').title() + ':':<28}{value}")
            print("  Pools:")
            for p in agent.pools():
                for key, value in p.info().items():
                    print(f"    {key.replace('_', ' ').title() + ':':<26}{value}")
                print()
    return 0


def _trace_setup(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-d",
        "--output-directory",
        default="hsaemu-trace",
        help="where trace.json, kernel_trace.csv and stats.txt go (one subdirectory "
        "machine-N per machine when the script creates several)",
    )
    _add_script(p)


@command("trace", "run a rocr script and write trace.json, kernel_trace.csv, stats.txt")
@arguments(_trace_setup)
def cmd_trace(args: argparse.Namespace) -> int:
    """Run the script as `python script` would, then write the reports of every machine it
    created, however it ended, and exit with the script's status. Like rocprofv3, which ROCr
    loads into the process through HSA_TOOLS_LIB, this collects each runtime at hsa_init
    (`rocr.runtime.INIT_HOOKS`), so the script needs no hsa_shut_down. Processes attached
    with `rocr.init(system=...)` share their machine and so its reports."""

    # The script's rocr.init() reads $HSAEMU_PRESET: a bad value fails here, not mid-script.
    resolve_preset(None)
    _script(args, "hsaemu trace [-d DIR] script.py [args ...]")
    out = prepare_output_directory("-d", args.output_directory)

    machines: list[Any] = []  # every System, in creation order; dropped after the reports

    def collect(rt: Any) -> None:
        system = rt.system
        if system is not None and not any(m is system for m in machines):
            machines.append(system)

    from rocr.progress import MachineStatus

    with MachineStatus(machines):  # a live line on a terminal: kernels, simulated time
        status = _run_as_main(args.command, collect)
    try:
        ok = _write_trace_reports(machines, out)
    finally:
        machines.clear()
    return status if status or ok else 1


def _add_script(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="script [args ...]",
        help="a Python script that uses rocr, and its arguments",
    )


def _script(args: argparse.Namespace, usage: str) -> str:
    """The script of `hsaemu trace/view ... script.py [args]`, checked before anything runs."""
    if not args.command:
        raise CliError(f"no script to run: {usage}")
    script = args.command[0]
    sp = Path(script)
    if not (sp.is_file() or (sp / "__main__.py").is_file()):
        what = "no such file" if not sp.exists() else "not a script (no __main__.py)"
        raise CliError(f"script {script}: {what}")
    return script


def _run_as_main(command: list[str], hook: Callable[[Any], None]) -> int:
    """Run `command` (script and its arguments) as `python script args` would, with `hook`
    called on every runtime it initialises (rocr.runtime.INIT_HOOKS); its exit status."""
    from rocr import runtime

    script = command[0]
    sp = Path(script)
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = list(command)
    sys.path.insert(0, str(sp.absolute() if sp.is_dir() else sp.absolute().parent))
    runtime.INIT_HOOKS.append(hook)
    # The script's machines are traced (its reports and the live view read the trace), as
    # rocprofv3 turns tracing on for the process it runs; an explicit rocr.init(trace=False)
    # still wins. Set in the environment, so processes the script starts trace too.
    saved_trace = os.environ.get(runtime.TRACE_ENV)
    os.environ[runtime.TRACE_ENV] = "1"
    try:
        return _run_script(script)
    finally:
        runtime.INIT_HOOKS.remove(hook)
        if saved_trace is None:
            os.environ.pop(runtime.TRACE_ENV, None)
        else:
            os.environ[runtime.TRACE_ENV] = saved_trace
        sys.argv = saved_argv
        sys.path[:] = saved_path


def _run_script(script: str) -> int:
    """Run `script` as __main__ and return the exit status `python script` would have."""
    import runpy

    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        # Python's handling of SystemExit: None is 0, an int is the status, anything else is
        # printed to stderr and exits 1.
        if e.code is None:
            return 0
        if isinstance(e.code, int):
            return e.code
        print(e.code, file=sys.stderr)
        return 1
    except BaseException as e:
        sys.stdout.flush()
        # Print from the script's own first frame, as `python script` would, not from here.
        tb = e.__traceback__
        target = os.path.abspath(script)
        if os.path.isdir(target):  # a directory runs its __main__.py
            target = os.path.join(target, "__main__.py")
        while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) != target:
            tb = tb.tb_next
        sys.excepthook(type(e), e.with_traceback(tb), tb)
        # Python's exit status: 1 for an uncaught exception, 128 + SIGINT for Ctrl-C.
        return 130 if isinstance(e, KeyboardInterrupt) else 1
    return 0


# -- view ------------------------------------------------------------------------------------


def _view_setup(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--port",
        type=int,
        default=0,
        help="TCP port on 127.0.0.1, 0..65535 (default 0: a free one)",
    )
    _add_script(p)


@command("view", "run a rocr script, then show its machine live in the browser (/ui)")
@arguments(_view_setup)
def cmd_view(args: argparse.Namespace) -> int:
    """Run the script as `hsaemu trace` does, its hsa_shut_down held back, then serve each
    machine it made on 127.0.0.1 with the live view (the page's URL is printed, the token in
    its fragment) until Ctrl-C; exit with the script's status."""
    from rocr.view import LocalView, listen, serve

    resolve_preset(None)
    check_range("--port", args.port, 0, 65535, "TCP ports are 16-bit")
    _script(args, "hsaemu view [--port N] script.py [args ...]")
    try:
        sock = listen(args.port)  # before the script: a port in use is one line, up front
    except OSError as e:
        raise CliError(f"--port {args.port}: cannot listen: {e.strerror or e}") from None
    local = LocalView()
    status = _run_as_main(args.command, local.hook)
    try:
        if not local.runtimes:
            sock.close()
            print("hsaemu view: the script created no rocr runtime (rocr.init)", file=sys.stderr)
            return status or 1
        app = local.app()
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        for url in local.urls(base):
            print(f"live view: {url}", flush=True)
        print("hsaemu view: Ctrl-C ends the view", file=sys.stderr, flush=True)
        serve(app, sock)
    finally:
        local.close()
    return status


def _write_trace_reports(machines: list[Any], out: Path) -> bool:
    """Write each machine's reports; name only files that were written. False on a failure."""
    from hw_model.reports import write_reports

    if not machines:
        print(
            "hsaemu trace: the script created no rocr runtime (rocr.init); no reports written",
            file=sys.stderr,
        )
        return True
    ok = True
    for i, system in enumerate(machines):
        d = out if len(machines) == 1 else out / f"machine-{i}"
        errors: list[tuple[Path, Exception]] = []
        written = [p for p in write_reports(system, d, errors) if p.is_file()]
        for path, e in errors:
            ok = False
            print(f"hsaemu trace: could not write {path}: {_one_line(str(e))}", file=sys.stderr)
        if written:
            names = ", ".join(
                f"{p.name} (Perfetto)" if p.suffix == ".json" else p.name for p in written
            )
            gpus = ", ".join(g.spec.name for g in system.gpus)
            print(f"reports in {d}/ ({gpus}): {names}", file=sys.stderr)
    return ok


# -- plot ------------------------------------------------------------------------------------


def _plot_setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("trace", help="a trace.json written by hsaemu trace, demo --trace or /trace")
    p.add_argument(
        "-o",
        "--output",
        default=None,
        help="the picture to write; its suffix picks the format (png, svg, pdf; default: the "
        "trace's name with .png)",
    )


@command("plot", "draw a trace.json: kernels per queue, workgroups per CU, copies, occupancy")
@arguments(_plot_setup)
def cmd_plot(args: argparse.Namespace) -> int:
    # rocr.plot (and matplotlib, the `plot` extra) load only for this command.
    from rocr import plot

    trace = Path(args.trace)
    if not trace.is_file():
        raise CliError(
            f"trace {args.trace}: {'no such file' if not trace.exists() else 'not a file'}"
        )
    out = args.output or str(trace.with_suffix(".png"))
    check_output_file("-o", out)
    try:
        data = plot.plot_data(plot.load_trace(trace))
    except plot.TraceFormatError as e:
        raise CliError(f"trace {args.trace}: {e}") from None
    try:
        fig = plot.figure(data, f"{trace.name}: kernels, workgroups, copies")
    except ImportError:
        raise CliError(
            f"plotting needs matplotlib, which is not installed: {plot.INSTALL_HINT}"
        ) from None
    try:
        fig.savefig(out, dpi=plot.DPI)
    except ValueError as e:  # matplotlib: a suffix it has no writer for
        raise CliError(f"-o {out}: {e}") from None
    wgs = sum(b.kind == "wg" for b in data.bars)
    kernels = sum(b.kind == "kernel" for b in data.bars)
    copies = sum(b.kind == "copy" for b in data.bars)
    print(f"{out}: {kernels} kernels, {wgs} workgroups, {copies} copies on {len(data.rows)} rows")
    return 0


# -- occupancy -------------------------------------------------------------------------------


def _occupancy_setup(p: argparse.ArgumentParser) -> None:
    _add_preset(p)
    p.add_argument("--vgprs", type=int, required=True, help="VGPRs per work-item (.vgpr_count)")
    p.add_argument("--sgprs", type=int, default=16, help="SGPRs per wave (.sgpr_count)")
    p.add_argument("--lds", type=int, default=0, help="LDS bytes per workgroup")
    p.add_argument("--workgroup", type=int, default=256, help="work-items per workgroup")
    p.add_argument("--scratch", type=int, default=0, help="private segment bytes per work-item")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


@command("occupancy", "waves and workgroups per CU for a kernel's resources, and what limits them")
@arguments(_occupancy_setup)
def cmd_occupancy(args: argparse.Namespace) -> int:
    # hw_model.occupancy is pure spec arithmetic (like hw_model.config), the one hw_model
    # module besides the format modules that rocr imports; the dispatcher uses the same rules.
    from hw_model.occupancy import format_occupancy, occupancy

    spec = _presets()[args.preset]
    max_scratch = MAX_WAVE_SCRATCH // spec.wavefront_size
    check_range(
        "--scratch",
        args.scratch,
        0,
        max_scratch,
        f"a wave of {spec.wavefront_size} work-items gets at most {MAX_WAVE_SCRATCH} bytes of "
        "scratch (ROCr MAX_WAVE_SCRATCH, COMPUTE_TMPRING_SIZE.WAVESIZE)",
    )
    try:
        occ = occupancy(
            spec,
            workgroup_size=args.workgroup,
            vgprs=args.vgprs,
            sgprs=args.sgprs,
            lds=args.lds,
            private_segment_size=args.scratch,
        )
    except ValueError as e:
        raise CliError(str(e)) from None
    if args.json:
        print(occ.model_dump_json(indent=2))
    else:
        print(format_occupancy(occ, f"{args.preset} ({spec.marketing_name}, {spec.name})"))
    return 0


# -- kernels ---------------------------------------------------------------------------------


def _kernels_setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="an AMDGPU code object (.hsaco) or a clang offload bundle")
    _add_preset(p, "GPU preset to compute occupancy on (and to pick from a bundle)")
    p.add_argument("--json", action="store_true", help="print the kernels as JSON")
    p.add_argument(
        "--disasm", action="store_true", help="list each kernel's instructions as decoded"
    )


@command("kernels", "a code object's kernels: arguments, registers, LDS, scratch, occupancy")
@arguments(_kernels_setup)
def cmd_kernels(args: argparse.Namespace) -> int:
    import json

    from hw_model.isa.decoder import DecodeError, decode
    from hw_model.isa.disasm import operands
    from hw_model.occupancy import occupancy
    from rocr import elf
    from rocr.loader import parse_code_object, unbundle

    try:
        blob = Path(args.file).read_bytes()
    except OSError as e:
        raise CliError(f"cannot read {args.file}: {e.strerror or e}") from None
    spec = _presets()[args.preset]
    if blob.startswith(elf.OFFLOAD_BUNDLE_MAGIC):
        blob = unbundle(blob, spec.name)
    if not blob.startswith(elf.ELF_MAGIC):
        raise CliError(f"{args.file} is not an AMDGPU code object (no ELF header)")
    if len(blob) >= 20 and int.from_bytes(blob[18:20], "little") != elf.EM_AMDGPU:
        raise CliError(f"{args.file} is an ELF but not an AMDGPU code object (e_machine)")
    co = parse_code_object(blob)
    rows = []
    for k in co.kernels:
        wg = min(k.max_flat_workgroup_size, spec.max_workgroup_size)
        try:
            occ = occupancy(
                spec,
                workgroup_size=wg,
                vgprs=k.vgprs + k.agprs,
                sgprs=k.sgprs,
                lds=k.group_segment_size,
                private_segment_size=k.private_segment_size,
            )
            fit: dict[str, Any] = {
                "workgroup_size": wg,
                "waves_per_simd": occ.waves_per_simd,
                "max_waves_per_simd": occ.max_waves_per_simd,
                "workgroups_per_cu": occ.workgroups_per_cu,
                "limited_by": occ.limited_by,
            }
        except ValueError as e:
            fit = {"workgroup_size": wg, "error": str(e)}
        rows.append(
            {
                "name": k.name,
                "kernel_object_offset": k.kd_vaddr,
                "code_offset": k.code_vaddr,
                "code_size": k.code_size,
                "args": [
                    {"name": a.name, "offset": a.offset, "size": a.size, "value_kind": a.kind}
                    | ({"type_name": a.type_name} if a.type_name else {})
                    for a in (*k.args, *k.hidden_args)
                ],
                "kernarg_segment_size": k.kernarg_size,
                "vgpr_count": k.vgprs,
                "agpr_count": k.agprs,
                "sgpr_count": k.sgprs,
                "group_segment_fixed_size": k.group_segment_size,
                "private_segment_fixed_size": k.private_segment_size,
                "wavefront_size": k.wavefront_size,
                "max_flat_workgroup_size": k.max_flat_workgroup_size,
                "occupancy": fit,
            }
        )
        if args.disasm:
            try:
                code = co.read_va(k.code_vaddr, k.code_size)
                listing = [
                    {
                        "pc": i.pc,
                        "mnemonic": i.mnemonic,
                        "operands": operands(i, co.processor),
                        "words": [f"{w:08X}" for w in i.words],
                    }
                    for i in decode(code, co.processor, k.code_vaddr)
                ]
            except (DecodeError, ValueError) as e:
                listing = [{"error": str(e)}]
            rows[-1]["disassembly"] = listing
    if args.json:
        print(json.dumps({"target": co.target, "code_object_version": co.version,
                          "preset": args.preset, "kernels": rows}, indent=2))  # fmt: skip
        return 0
    note = "" if co.processor == spec.name else f" (not this preset's {spec.name}: won't load)"
    print(f"{args.file}: code object v{co.version}, target {co.target}{note}")
    for r in rows:
        print(f"\nkernel {r['name']}  ({r['code_size']} bytes of code at {r['code_offset']:#x})")
        print(f"  {'argument':<24} {'offset':>6} {'size':>5}  value kind")
        for a in r["args"]:
            tn = f" ({a['type_name']})" if "type_name" in a else ""
            name = "(hidden)" if a["name"] == a["value_kind"] else a["name"]
            print(f"  {name:<24} {a['offset']:>6} {a['size']:>5}  {a['value_kind']}{tn}")
        print(
            f"  kernarg {r['kernarg_segment_size']} B, VGPRs {r['vgpr_count']}"
            + (f" + AGPRs {r['agpr_count']}" if r["agpr_count"] else "")
            + f", SGPRs {r['sgpr_count']}, LDS {r['group_segment_fixed_size']} B, scratch "
            f"{r['private_segment_fixed_size']} B per work-item, wavefront {r['wavefront_size']}"
            f", max workgroup {r['max_flat_workgroup_size']}"
        )
        o = r["occupancy"]
        if "error" in o:
            print(f"  occupancy on {args.preset}: does not fit: {o['error']}")
        else:
            print(
                f"  occupancy on {args.preset} at {o['workgroup_size']} work-items per "
                f"workgroup: {o['waves_per_simd']:g}/{o['max_waves_per_simd']} waves per SIMD, "
                f"{o['workgroups_per_cu']} workgroups per CU, limited by "
                f"{', '.join(o['limited_by'])}"
            )
        for i in r.get("disassembly", []):
            if "error" in i:
                print(f"  cannot decode: {i['error']}")
                continue
            # As llvm-objdump -d prints it: the instruction, then its words as a comment.
            text = i["mnemonic"] or "<unknown to the decoder>"
            text += f" {i['operands']}" if i.get("operands") else ""
            print(f"  {i['pc']:#08x}  {text:<50} // {' '.join(i['words'])}")
    return 0


# -- serve -----------------------------------------------------------------------------------


def check_listen(host: str, port: int) -> None:
    """Bind once before the server starts, so a bad host or a busy port is one error line
    (uvicorn would log it after startup and exit 3). Like uvicorn, with SO_REUSEADDR."""
    import socket

    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise CliError(f"--host {host}: {getattr(e, 'strerror', None) or e}") from None
    try:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
    except OSError as e:
        raise CliError(f"--host {host} --port {port}: cannot listen: {e.strerror or e}") from None


def _serve_setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="TCP port, 1..65535 (default 8000)")
    _add_preset(p, "GPU preset of new systems")
    p.add_argument(
        "--limit",
        action="append",
        metavar="NAME=VALUE",
        help="a server limit, e.g. max_systems=100 or idle_timeout_s=3600 (GET /v1/limits)",
    )
    admin = p.add_mutually_exclusive_group()
    admin.add_argument(
        "--admin-token",
        help="a token that may list and delete every system (visible in ps: prefer "
        "--admin-token-file or $HSAEMU_ADMIN_TOKEN)",
    )
    admin.add_argument(
        "--admin-token-file",
        metavar="FILE",
        help="read the admin token from the first line of FILE",
    )
    p.add_argument(
        "--require-key",
        metavar="FILE",
        help="creating a system needs an API key (header X-API-Key) from FILE: one key a line, "
        "or 'sha256:<hex>' of a key; '#' starts a comment",
    )
    p.add_argument(
        "--state",
        metavar="DIR",
        help="checkpoint every system to DIR (periodically and at shutdown) and restore them "
        "from it at start, same ids and tokens; without it systems live in memory only",
    )
    p.add_argument(
        "--checkpoint-s",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with --state: seconds between checkpoints of a system in use (default 60)",
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info"])


@command("serve", "HTTP API: a machine per client; interactive docs at /docs, live view at /ui")
@arguments(_serve_setup)
def cmd_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from rocr.service.server import admin_token, parse_limits, serve
    from rocr.service.systems import read_api_keys

    check_range("--port", args.port, 1, 65535, "TCP ports are 16-bit")
    try:
        token = admin_token(args.admin_token, args.admin_token_file, os.environ)
        keys = None if args.require_key is None else read_api_keys(args.require_key)
    except ValueError as e:
        raise CliError(str(e)) from None
    except OSError as e:
        raise CliError(f"{e.filename}: {e.strerror or e}") from None
    try:
        limits = parse_limits(args.limit)
    except ValidationError as e:
        # Name the limit and its value, not the pydantic model.
        err = e.errors()[0]
        name = ".".join(str(x) for x in err["loc"])
        raise CliError(f"--limit {name}={err.get('input')}: {err['msg']}") from None
    except ValueError as e:
        raise CliError(str(e)) from None
    if args.checkpoint_s is not None:
        if args.state is None:
            raise CliError("--checkpoint-s needs --state DIR")
        if not 1.0 <= args.checkpoint_s <= 86400.0:
            raise CliError(f"--checkpoint-s {args.checkpoint_s}: use 1 to 86400 seconds")
    if args.state is not None:
        from rocr.service.state import CheckpointError, SystemStore

        try:
            SystemStore(args.state)  # a directory it cannot use is one error line, up front
        except CheckpointError as e:
            raise CliError(e.message) from None
    check_listen(args.host, args.port)
    url = f"http://{args.host}:{args.port}"
    print(f"hsaemu API on {url} (docs: /docs, live view: /ui)", file=sys.stderr)
    serve(
        args.host,
        args.port,
        preset=args.preset,
        limits=limits,
        admin_token=token,
        api_keys=keys,
        log_level=args.log_level,
        state_dir=args.state,
        checkpoint_s=args.checkpoint_s,
    )
    return 0


# -- hws -------------------------------------------------------------------------------------


def _hws_setup(p: argparse.ArgumentParser) -> None:
    from hw_model.scheduler import SCHEDULER_POLICIES

    _add_preset(p)
    p.add_argument("--policy", default="round_robin", choices=sorted(SCHEDULER_POLICIES))
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help=f"rocr processes, 1..{KFD_MAX_NUM_OF_PROCESSES} (default 1)",
    )
    p.add_argument(
        "--queues",
        type=int,
        default=None,
        help="queues per process, up to the agent's HSA_AGENT_INFO_QUEUES_MAX (default: one "
        "queue more in all than the preset has HQDs, so the scheduler must swap: 3 on "
        "teaching, 25 on gfx900)",
    )
    p.add_argument("--kernels", type=int, default=2, help="kernels per queue (default 2)")
    p.add_argument("-n", type=int, default=1 << 14, help="elements per kernel (default 16384)")
    p.add_argument(
        "--priorities",
        metavar="P[,P...]",
        help="KFD queue priorities (0..15), one per queue of a process or cycled over them, "
        f"e.g. 15,7,0; libhsakmt can ask for {', '.join(map(str, _kfd_priorities()))} "
        "(default 7, NORMAL, for every queue)",
    )


def _kfd_priorities() -> list[int]:
    """libhsakmt queues.c priority_map's KFD queue priorities (0..15), in order."""
    from roct.thunk import QUEUE_PRIORITY_MAP

    return sorted(QUEUE_PRIORITY_MAP.values())


def _hsa_priority_of() -> dict[int, int]:
    """libhsakmt queues.c priority_map: HSA_QUEUE_PRIORITY (-3..3) -> KFD queue priority,
    inverted, because the scheduler and the runlist speak KFD priorities."""
    from roct.thunk import QUEUE_PRIORITY_MAP

    return {kfd: hsa for hsa, kfd in QUEUE_PRIORITY_MAP.items()}


def parse_priorities(text: str, queues: int) -> list[int]:
    """`--priorities 15,7,0`: KFD priorities, checked; returns them as HSA_QUEUE_PRIORITY."""
    values = []
    for item in text.split(","):
        try:
            values.append(int(item.strip()))
        except ValueError:
            raise CliError(f"--priorities {text}: {item.strip()!r} is not an integer") from None
    if len(values) > queues:
        raise CliError(
            f"--priorities {text}: {len(values)} priorities for {queues} queue(s) per process "
            "(give at most one per queue; fewer are cycled)"
        )
    for v in values:
        if not 0 <= v <= KFD_MAX_QUEUE_PRIORITY:
            raise CliError(
                f"--priorities {text}: {v} is outside 0..{KFD_MAX_QUEUE_PRIORITY} "
                "(KFD_MAX_QUEUE_PRIORITY)"
            )
        if v not in _hsa_priority_of():
            raise CliError(
                f"--priorities {text}: KFD priority {v} cannot be asked for through "
                f"hsaKmtCreateQueue; use one of {', '.join(map(str, _kfd_priorities()))} "
                "(libhsakmt priority_map of HSA_QUEUE_PRIORITY -3..3)"
            )
    return [_hsa_priority_of()[v] for v in values]


@command("hws", "watch the HW queue scheduler map, swap and unmap oversubscribed queues")
@arguments(_hws_setup)
def cmd_hws(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from hw_model.config import system_spec
    from hw_model.scheduler import SCHEDULER_POLICIES

    spec0 = system_spec(args.preset)
    gpu0 = spec0.gpu
    check_range(
        "--processes",
        args.processes,
        1,
        KFD_MAX_NUM_OF_PROCESSES,
        "amdkfd schedules at most KFD_MAX_NUM_OF_PROCESSES processes on a device",
    )
    if args.queues is None:
        args.queues = max(1, -(-(gpu0.hqd_slots + 1) // args.processes))
    check_range(
        "--queues",
        args.queues,
        1,
        gpu0.queues_max,
        f"ROCr lets a process create at most {gpu0.queues_max} queues on a {args.preset} agent "
        "(HSA_AGENT_INFO_QUEUES_MAX)",
    )
    check_range(
        "--kernels",
        args.kernels,
        1,
        gpu0.queue_max_packets - 1,
        f"each queue's ring holds at most {gpu0.queue_max_packets} packets "
        "(HSA_AGENT_INFO_QUEUE_MAX_SIZE)",
    )
    check_elements("-n", args.n, 2 * args.processes * args.queues, gpu0, spec0.system_memory)
    priorities = [0]  # HSA_QUEUE_PRIORITY_NORMAL, KFD priority 7
    if args.priorities is not None:
        priorities = parse_priorities(args.priorities, args.queues)
    # Room for every kernel of a queue at once (ROCr rings are powers of two).
    ring = max(gpu0.queue_min_packets, 1 << args.kernels.bit_length())
    first = rocr.init(spec=spec0, trace=True)  # the HWS timeline is read from the trace
    sched = first.system.gpus[0].scheduler
    sched.set_policy(SCHEDULER_POLICIES[args.policy]())
    rts = [first] + [rocr.init(system=first.system) for _ in range(args.processes - 1)]
    spec = first.system.spec.gpu
    print(
        f"HW scheduler: {args.preset} preset, {spec.hqd_slots} HQDs, quantum "
        f"{spec.quantum_ps / 1e6:g} us, policy {args.policy}; {args.processes} process(es) x "
        f"{args.queues} queue(s) x {args.kernels} kernel(s) of square over {args.n} floats"
    )
    n = args.n
    handles = []
    for rt in rts:
        k = rt.load_code_object("builtin:square").kernel("square")
        pool = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
        for j in range(args.queues):
            q = rt.gpus[0].create_queue(ring, priority=priorities[j % len(priorities)])
            a, b = pool.allocate(4 * n), pool.allocate(4 * n)
            rt.allow_access(rt.gpus, a)
            rt.allow_access(rt.gpus, b)
            a.view(np.float32)[:] = 2
            for _ in range(args.kernels):
                handles.append((b, q.dispatch(k, grid=n, workgroup=256, args=(b, a, n))))
    for _, h in handles:
        h.wait()
    ok = all(np.all(b.view(np.float32) == 4) for b, _ in handles)
    print("\ntimeline (HWS events):")
    for ev in first.system.tracer.events:
        if ev.track == "HWS":
            print(f"  [{ev.ts / 1e6:10.3f} us] {ev.name}  (pasid {ev.args['pasid']:#x})")
    dev = json.loads(first.thunk.read_debugfs("rls"))[0]
    print("\nrunlist (from /sys/kernel/debug/kfd/rls):")
    print(
        f"  {'pasid':>7} {'queue':>5} {'prio':>4} {'HQD':>4} {'state':<19}{'mapped us':>10}"
        f"{'ready-unmapped us':>18}{'in/out':>8}{'packets':>8}"
    )
    for q in dev["queues"]:
        hqd = "-" if q["hqd"] is None else q["hqd"]
        print(
            f"  {q['pasid']:>#7x} {q['queue_id']:>5} {q['priority']:>4} {hqd:>4} "
            f"{q['state']:<19}{q['mapped_ps'] / 1e6:>10.1f}{q['runnable_unmapped_ps'] / 1e6:>18.1f}"
            f"{str(q['swaps_in']) + '/' + str(q['swaps_out']):>8}{q['packets']:>8}"
        )
    st = dev["stats"]
    util = ", ".join(f"HQD {h['hqd']} {100 * h['utilization']:.0f}%" for h in st["hqd_stats"])
    print(
        f"\ncontext switches {st['context_switches']}, oversubscribed for "
        f"{st['oversubscribed_ps'] / 1e6:.1f} of {st['elapsed_ps'] / 1e6:.1f} us; "
        f"busy: {util}"
    )
    print(f"results: {'CORRECT' if ok else 'WRONG'}")
    for rt in reversed(rts):
        rt.shutdown()
    return 0 if ok else 1


# -- sweep -----------------------------------------------------------------------------------


def _sweep_setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="the sweep spec (TOML): workload, axes, seeds (docs/sweeps.md)")
    p.add_argument("--local", action="store_true", help="a local process pool instead of Ray")
    p.add_argument("--workers", type=int, default=None, help="cells at once (default: every core)")
    p.add_argument("--address", default=None, help="join this Ray cluster (e.g. ray://host:10001)")
    p.add_argument("--out", default=None, help="the table, .csv or .parquet (default: the spec's)")
    p.add_argument("--plot", action="store_true", help="figures of the table (needs matplotlib)")
    p.add_argument(
        "--speedup",
        type=int,
        default=0,
        metavar="K",
        help="first time the first K cells with 1 worker, then with --workers, and print both",
    )


@command("sweep", "run a grid of experiments, each cell a fresh machine, locally or on Ray")
@arguments(_sweep_setup)
def cmd_sweep(args: argparse.Namespace) -> int:
    # Imported here: `import rocr.cli` stays light, and Ray loads only when a sweep runs.
    from rocr import sweep

    if args.workers is not None:
        check_range("--workers", args.workers, 1, 4096)
    check_range("--speedup", args.speedup, 0)
    if args.local and args.address:
        raise CliError("--address joins a Ray cluster; it cannot go with --local")
    executor = "local" if args.local else "ray"
    if executor == "ray" and not sweep.ray_available():
        raise CliError(f"Ray is not installed: {sweep.INSTALL_HINT}; or run with --local")
    if args.out is not None and Path(args.out).suffix not in (".csv", ".parquet"):
        raise CliError(f"--out {args.out!r} must end in .csv or .parquet")
    try:
        plan = sweep.load_spec(args.spec)
    except sweep.SweepError as e:
        raise CliError(e.message) from None
    out = Path(args.out) if args.out else plan.out
    workers = args.workers or (os.cpu_count() or 1 if executor == "local" else None)
    where = executor if not args.address else f"ray at {args.address}"
    print(
        f"sweep {plan.spec.name or Path(args.spec).stem}: {len(plan.cells)} cells "
        f"({plan.shape()}), "
        f"workload {plan.spec.workload}, {where}, {workers or 'all'} workers -> {out}"
    )
    if args.speedup:
        n = workers or 2
        s = sweep.measure_speedup(plan, args.speedup, executor, n, args.address)
        print(
            f"speed-up on the first {s['cells']} cells: 1 worker {s['t1_s']:.1f} s, {n} workers "
            f"{s['tn_s']:.1f} s: {s['speedup']:.2f}x; figures "
            f"{'identical' if s['identical'] else 'DIFFER'}"
        )
    try:
        res = sweep.run_sweep(
            plan, executor, workers, args.address, out=out, plot=args.plot, progress=True
        )
    except KeyboardInterrupt:
        print(f"interrupted; the cells that finished are in {out}: rerun to resume")
        return 130
    tables = ", ".join(str(p) for p in (res.csv_path, res.parquet_path) if p is not None)
    print(
        f"{res.ran} cells run ({res.failed} failed), {res.skipped} already in the table, "
        f"{res.wall_s:.1f} s; table: {tables}"
    )
    for r in res.rows:
        if r["status"] != "ok":
            print(f"  cell {r['cell']} failed: {r['error']}")
    for p in res.plots:
        print(f"  plot: {p}")
    return 1 if any(r["status"] != "ok" for r in res.rows) else 0


# -- exec ------------------------------------------------------------------------------------


def _exec_setup(p: argparse.ArgumentParser) -> None:
    _add_preset(p, "GPU preset of a service started here")
    p.add_argument(
        "--socket",
        metavar="PATH",
        help="join the KFD service listening at PATH (`hsaemu kfd --socket PATH`), or start "
        "one there; default: start one on a temporary socket, stopped at the end",
    )
    p.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND ...",
        help="the program to run on the emulated GPU, e.g. -- rocminfo",
    )


@command("exec", "run an unmodified ROCm program (rocminfo, an hsa.h program) on the emulated KFD")
@arguments(_exec_setup)
def cmd_exec(args: argparse.Namespace) -> int:
    from rocr.real_rocm import ExecError, run

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise CliError("COMMAND is missing: hsaemu exec [--preset P] -- COMMAND ...")
    try:
        return run(command, args.preset, args.socket)
    except ExecError as e:
        print(f"hsaemu exec: {e}", file=sys.stderr)
        return EXIT_RUNTIME_ERROR


def version() -> str:
    """The installed hsaemu's version, else the source tree's pyproject.toml."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("hsaemu")
    except PackageNotFoundError:
        import tomllib

        try:
            with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as f:
                return str(tomllib.load(f)["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


# -- kfd: the KFD as a service -----------------------------------------------------------------


def _kfd_setup(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--socket", required=True, metavar="PATH", help="Unix socket to serve on (mode 0600)"
    )
    _add_preset(p, "GPU preset of the machine")
    p.add_argument(
        "--idle-lease-ms",
        type=float,
        default=50.0,
        metavar="MS",
        help="a client silent this long (wall ms) stops holding the device clock back (default 50)",
    )
    p.add_argument(
        "--trace",
        action="store_true",
        help="record the machine's trace (clients write it with SocketTransport.write_reports)",
    )
    p.add_argument(
        "--status",
        action="store_true",
        help="print the STATUS of the service already running at --socket, as JSON, and exit",
    )


@command("kfd", "the KFD as a daemon on a Unix socket that OS processes share (HSAEMU_KFD)")
@arguments(_kfd_setup)
def cmd_kfd(args: argparse.Namespace) -> int:
    import json
    import logging

    if args.status:
        from rock_emu.service import peek_status

        try:
            print(json.dumps(peek_status(args.socket), indent=1))
        except OSError as e:
            raise CliError(f"--socket {args.socket}: {e.strerror or e}") from None
        return 0
    if not 0 < args.idle_lease_ms <= 3_600_000:
        raise CliError(f"--idle-lease-ms {args.idle_lease_ms}: use 0 < MS <= 3600000 (one hour)")
    parent = os.path.dirname(os.path.abspath(args.socket))
    if not os.path.isdir(parent):
        raise CliError(f"--socket {args.socket}: directory {parent} does not exist")
    if os.path.exists(args.socket) and not os.path.isdir(args.socket):
        import stat

        if not stat.S_ISSOCK(os.lstat(args.socket).st_mode):
            raise CliError(f"--socket {args.socket}: exists and is not a socket")
    from rock_emu.service import KfdService

    logging.basicConfig(level=logging.INFO, format="hsaemu kfd: %(message)s")
    svc = KfdService(
        args.socket,
        preset=args.preset,
        idle_lease_ms=args.idle_lease_ms,
        trace=True if args.trace else None,
    )
    try:
        svc.bind()
    except OSError as e:
        raise CliError(f"--socket {args.socket}: cannot listen: {e.strerror or e}") from None
    print(
        f"hsaemu kfd: {args.preset} on unix:{args.socket} (clients: HSAEMU_KFD=unix:{args.socket})",
        file=sys.stderr,
        flush=True,
    )
    # The imports and the daemon's one machine live as long as the process: out of the
    # collector's sight, a full collection no longer stalls every client's request for
    # tens of ms (as `hsaemu serve` does, rocr.service.server.freeze_imports).
    import gc

    gc.collect()
    gc.freeze()
    svc.serve_forever()
    return 0


EPILOG = (
    f"Every command with --preset defaults to $HSAEMU_PRESET if set, else {DEFAULT_PRESET} "
    "(as rocr.init() does). A bad argument is one error line and exit status 2; an HSA error "
    "while running is one line naming its status and exit status 1 (HSAEMU_DEBUG=1 shows "
    "the traceback)."
)


class _Version(argparse.Action):
    """--version, looked up only when asked for (importlib.metadata is not free)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
        print(f"{parser.prog} {version()}")
        parser.exit()


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="hsaemu", description=__doc__.splitlines()[0], epilog=EPILOG)
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    # Only the subcommands named on the command line get their arguments: setting one up may
    # import what its choices come from (presets, policies), which `hsaemu --help` skips.
    words = set(sys.argv[1:] if argv is None else argv)
    for name, (_, setup, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_, epilog=EPILOG)
        if name in words:
            setup(p)
    cmd = "hsaemu"
    try:
        try:
            args, extra = parser.parse_known_args(argv)
        except SystemExit as e:  # --help, --version
            return e.code if isinstance(e.code, int) else 0
        cmd = f"hsaemu {args.cmd}"
        if extra:
            raise CliError(f"unrecognized arguments: {' '.join(extra)}")
        if hasattr(args, "preset"):
            args.preset = resolve_preset(args.preset)
        return COMMANDS[args.cmd][0](args) or 0
    except CliError as e:
        print(f"{e.prog or cmd}: error: {_one_line(str(e))}", file=sys.stderr)
        return EXIT_USAGE
    except rocr.HsaError as e:
        if os.environ.get("HSAEMU_DEBUG", "") not in ("", "0"):
            raise
        lines = str(e).strip().splitlines() or [e.status.c_name]
        more = " (HSAEMU_DEBUG=1 shows the rest and the traceback)" if len(lines) > 1 else ""
        print(f"{cmd}: {lines[0].strip()}{more}", file=sys.stderr)
        return EXIT_RUNTIME_ERROR
    except BrokenPipeError:
        # The reader went away (`hsaemu hws | head`): stop quietly, as `cat` does; point
        # stdout at /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_RUNTIME_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
