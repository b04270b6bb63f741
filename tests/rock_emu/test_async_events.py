"""A thread of the process asleep in AMDKFD_IOC_WAIT_EVENTS (ROCr's async events thread)
returns when any event it waits on is set, not only on a VM fault (kfd_events.c set_event
wakes every waiter of the event)."""

from __future__ import annotations

import rocr


def test_setting_a_signal_event_wakes_the_async_thread():
    rt = rocr.init(preset="teaching")
    try:
        th = rt.thunk
        ev, other = th.create_event(), th.create_event()
        woke: list[int] = []
        assert th.wait_on_multiple_events_async([ev], lambda e: woke.append(e.EventId))
        th.set_event(other)
        assert woke == []
        th.set_event(ev)
        assert woke == [ev.EventId]
        th.set_event(ev)  # that wait has returned: once only
        assert woke == [ev.EventId]
    finally:
        rt.shutdown()


def test_destroying_the_only_event_of_a_wait_forgets_it():
    rt = rocr.init(preset="teaching")
    try:
        th = rt.thunk
        ev = th.create_event()
        woke: list[int] = []
        th.wait_on_multiple_events_async([ev], lambda e: woke.append(e.EventId))
        proc = rt.transport.process
        waiting = len(proc._async_waiters)
        th.destroy_event(ev)
        assert len(proc._async_waiters) == waiting - 1
        again = th.create_event()  # may reuse the id: must not wake the forgotten wait
        th.set_event(again)
        assert woke == []
    finally:
        rt.shutdown()
