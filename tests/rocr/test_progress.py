"""Progress of long runs: off a terminal, one line per step with done, failed and time left."""

from __future__ import annotations

import io

from rocr.progress import Progress, fmt_time


def test_off_a_terminal_each_step_is_a_line_with_done_failed_and_eta():
    out = io.StringIO()  # not a tty: no rich bar, plain lines (CI logs, pipes)
    with Progress(3, "cells", stream=out) as p:
        p.advance(1, "cell 0 ok")
        p.advance(1, "cell 1 FAILED: boom", ok=False)
        p.advance(1)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("[1/3] done 1, failed 0, ETA ") and lines[0].endswith("cell 0 ok")
    assert lines[1].startswith("[2/3] done 1, failed 1, ETA ")
    assert lines[2].startswith("[3/3] done 2, failed 1, ETA 0:00")
    assert (p.done, p.failed) == (2, 1)


def test_quiet_counts_without_printing():
    out = io.StringIO()
    p = Progress(10, stream=out, quiet=True)
    p.advance(4)
    assert out.getvalue() == "" and p.done == 4


def test_time_left_reads_as_a_clock():
    assert fmt_time(59) == "0:59"
    assert fmt_time(61) == "1:01"
    assert fmt_time(3725) == "1:02:05"


def test_machine_status_reads_kernels_and_simulated_time_of_the_machines():
    import rocr
    from rocr.progress import MachineStatus

    out = io.StringIO()
    with rocr.init(preset="teaching") as rt:
        k = rt.load_code_object("builtin:empty").kernel("empty")
        q = rt.gpus[0].create_queue(64)
        for _ in range(3):
            q.dispatch(k, grid=64, workgroup=64).wait()
        with MachineStatus([rt.system], stream=out) as st:  # not a tty: no live line
            assert st._thread is None
            line = st.line()
        assert line.startswith("1 machine · 3 kernels · ")
        assert f"{rt.system.engine.now / 1e6:,.3f} µs simulated" in line
    assert out.getvalue() == ""
