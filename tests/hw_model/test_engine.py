"""The event engine: integer picoseconds, (tick, priority, sequence) order, determinism."""

from hw_model.engine import Engine


def test_events_fire_in_tick_priority_sequence_order():
    e = Engine()
    fired = []
    e.schedule(10, fired.append, "t10-p0-a")
    e.schedule(10, fired.append, "t10-p0-b")
    e.schedule(10, fired.append, "t10-p-1", priority=-1)
    e.schedule(5, fired.append, "t5")
    e.run_until(100)
    assert fired == ["t5", "t10-p-1", "t10-p0-a", "t10-p0-b"]
    assert e.now == 100


def test_run_until_stops_at_tick_and_keeps_later_events():
    e = Engine()
    fired = []
    e.schedule(10, fired.append, 1)
    e.schedule(20, fired.append, 2)
    e.run_until(15)
    assert fired == [1] and e.now == 15 and e.peek() == 20


def test_cancelled_events_do_not_fire_and_idle_engine_is_detected():
    e = Engine()
    fired = []
    ev = e.schedule(10, fired.append, 1)
    ev.cancel()
    assert e.peek() is None and e.idle
    assert not e.step()
    assert fired == []


def test_run_while_stops_when_predicate_turns_false_or_engine_dries():
    e = Engine()
    state = {"n": 0}

    def bump():
        state["n"] += 1
        e.schedule(7, bump)

    e.schedule(7, bump)
    assert e.run_while(lambda: state["n"] < 3)
    assert state["n"] == 3 and e.now == 21
    assert not e.run_while(lambda: True, limit=30)  # limit reached
    assert e.now == 28


def test_same_inputs_same_order():
    def run():
        e = Engine()
        out = []
        for i in range(50):
            e.schedule((i * 37) % 11, out.append, i, priority=i % 3)
        e.run_until(1000)
        return out

    assert run() == run()


def test_quiet_means_nothing_pending_does_work():
    e = Engine()
    assert e.quiet(4)  # idle
    e.schedule(10, print, "quantum", housekeeping=True)
    assert e.quiet(4)
    work = e.schedule(10, list)
    assert not e.quiet(4)
    assert e.quiet(4, brief=(list,))  # the caller knows this one starts no work
    work.cancel()
    assert e.quiet(4)
    for _ in range(4):
        e.schedule(10, print, "quantum", housekeeping=True)
    assert not e.quiet(4)  # past max_pending: not looked through


def test_a_new_queue_leaves_no_fetch_pending():
    """CREATE_QUEUE maps the queue at once; the CP has nothing rung to fetch from it, so no
    event is left pending for it (the device is quiet), and a dispatch is fetched as ever."""
    import rocr

    with rocr.init(preset="teaching") as rt:
        engine = rt.system.engine
        q = rt.gpus[0].create_queue(64)
        assert engine.pending() == 0
        k = rt.load_code_object("builtin:empty").kernel("empty")
        h = q.dispatch(k, grid=64, workgroup=64).wait()
        assert h.done and h.signal.load() == 0
