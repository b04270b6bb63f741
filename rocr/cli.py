"""`hsaemu`: the command line — a narrated kernel launch, agent info, and more.

Each subcommand is one function `cmd_<name>(args)` registered in `COMMANDS` with its
argument parser setup; `main()` dispatches.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import numpy as np

import rocr
from hw_model import aql
from hw_model.config import PRESETS

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
        events = self.system.tracer.events[self.seen :]
        self.seen += len(events)
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
    p.add_argument("--preset", default="gfx900", choices=sorted(PRESETS))
    p.add_argument("-n", type=int, default=1 << 20, help="elements (default 1048576)")
    p.add_argument("--workgroup", type=int, default=256)
    p.add_argument("--trace", metavar="FILE", help="write a Perfetto/Chrome trace JSON")


@command("demo", "narrated kernel launch through every layer")
@arguments(_demo_setup)
def cmd_demo(args: argparse.Namespace) -> int:
    wall = time.perf_counter()
    n = args.n
    rt = rocr.init(preset=args.preset)
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
    kernarg = rt._kernarg(k.pack_args(dst, src, n))
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


# -- info ------------------------------------------------------------------------------------


def _info_setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="gfx900", choices=sorted(PRESETS))


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
        help="where trace.json, kernel_trace.csv and stats.txt go",
    )
    p.add_argument("script", help="a Python script that uses rocr")
    p.add_argument("script_args", nargs=argparse.REMAINDER)


@command("trace", "run a rocr script and write trace.json, kernel_trace.csv, stats.txt")
@arguments(_trace_setup)
def cmd_trace(args: argparse.Namespace) -> int:
    import os
    import runpy

    os.environ["HSAEMU_TRACE_DIR"] = args.output_directory
    sys.argv = [args.script, *args.script_args]
    try:
        runpy.run_path(args.script, run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    else:
        code = 0
    print(
        f"reports in {args.output_directory}/: trace.json (Perfetto), kernel_trace.csv, stats.txt",
        file=sys.stderr,
    )
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hsaemu", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, (_, setup, help_) in COMMANDS.items():
        setup(sub.add_parser(name, help=help_))
    args = parser.parse_args(argv)
    fn = COMMANDS[args.cmd][0]
    return fn(args) or 0


if __name__ == "__main__":
    raise SystemExit(main())
