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


# -- occupancy -------------------------------------------------------------------------------


def _occupancy_setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="gfx900", choices=sorted(PRESETS))
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

    spec = PRESETS[args.preset]
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
        print(f"hsaemu occupancy: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(occ.model_dump_json(indent=2))
    else:
        print(format_occupancy(occ, f"{args.preset} ({spec.marketing_name}, {spec.name})"))
    return 0


# -- serve -----------------------------------------------------------------------------------


def _serve_setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--preset", default="gfx900", choices=sorted(PRESETS), help="default for new systems"
    )
    p.add_argument(
        "--limit",
        action="append",
        metavar="NAME=VALUE",
        help="a server limit, e.g. max_systems=100 or idle_timeout_s=3600 (GET /v1/limits)",
    )
    p.add_argument("--admin-token", help="a token that may list and delete every system")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info"])


@command("serve", "HTTP API: an emulated machine per client, interactive docs at /docs")
@arguments(_serve_setup)
def cmd_serve(args: argparse.Namespace) -> int:
    from rocr.service.server import parse_limits, serve

    try:
        limits = parse_limits(args.limit)
    except ValueError as e:
        print(f"hsaemu serve: {e}", file=sys.stderr)
        return 2
    print(f"hsaemu API on http://{args.host}:{args.port} (docs: /docs)", file=sys.stderr)
    serve(
        args.host,
        args.port,
        preset=args.preset,
        limits=limits,
        admin_token=args.admin_token,
        log_level=args.log_level,
    )
    return 0


# -- hws -------------------------------------------------------------------------------------


def _hws_setup(p: argparse.ArgumentParser) -> None:
    from hw_model.scheduler import SCHEDULER_POLICIES

    p.add_argument("--preset", default="teaching", choices=sorted(PRESETS))
    p.add_argument("--policy", default="round_robin", choices=sorted(SCHEDULER_POLICIES))
    p.add_argument("--processes", type=int, default=1, help="rocr processes (default 1)")
    p.add_argument("--queues", type=int, default=3, help="queues per process (default 3)")
    p.add_argument("--kernels", type=int, default=2, help="kernels per queue (default 2)")
    p.add_argument("-n", type=int, default=1 << 14, help="elements per kernel (default 16384)")


@command("hws", "watch the HW queue scheduler map, swap and unmap oversubscribed queues")
@arguments(_hws_setup)
def cmd_hws(args: argparse.Namespace) -> int:
    import json

    from hw_model.config import system_spec
    from hw_model.scheduler import SCHEDULER_POLICIES

    if min(args.processes, args.queues, args.kernels, args.n) < 1:
        print("hsaemu hws: --processes, --queues, --kernels and -n must be at least 1")
        return 2
    first = rocr.init(spec=system_spec(args.preset))
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
        for _ in range(args.queues):
            q = rt.gpus[0].create_queue(64)
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
