"""The KFD's signal-event interrupt (kfd_signal_event_interrupt): the event page slot first,
then the event, then acknowledge_signal and set_event; anything else is left as it was."""

from __future__ import annotations

import pytest

import rocr
from hw_model.gpu import IRQ_SIGNAL_EVENT
from rock_emu.kfd import UNSIGNALED_EVENT_SLOT


@pytest.fixture
def machine():
    rt = rocr.init(preset="gfx900")
    yield rt, rt.transport.process
    rt.shutdown()


def _interrupt(rt, p, event_id: int) -> None:
    rt.system.deliver_interrupt(rt.gpus[0].node, IRQ_SIGNAL_EVENT, p.pasid, {"event_id": event_id})


def test_an_interrupt_sets_the_event_whose_slot_the_cp_wrote_once(machine):
    rt, p = machine
    eid = rt.create_signal(1).event.EventId
    page = p.event_page.data
    _interrupt(rt, p, eid)  # its slot still unsignaled: not this event's interrupt
    assert not p.events[eid].signaled
    p.event_slots[eid] = eid  # what the CP writes to the signal's event mailbox
    _interrupt(rt, p, eid)
    assert p.events[eid].signaled
    assert bytes(page[eid * 8 : eid * 8 + 8]) == UNSIGNALED_EVENT_SLOT.to_bytes(8, "little")
    p.events[eid].signaled = False
    _interrupt(rt, p, eid)  # acknowledged already: nothing to set
    assert not p.events[eid].signaled


def test_an_interrupt_for_no_signal_event_changes_nothing(machine):
    rt, p = machine
    assert p.event_page is None  # no signal event yet: no page to look at
    _interrupt(rt, p, 0)
    rt.create_signal(1)
    free = 4000  # a slot no event holds
    p.event_slots[free] = free
    _interrupt(rt, p, free)
    assert p.event_slots[free] == free  # not acknowledged: no event to set
    memory = rt._vm_fault_event.EventId  # a memory event: no slot in the page
    assert memory >= len(p.event_slots)
    _interrupt(rt, p, memory)
    assert not p.events[memory].signaled
    before = bytes(p.event_page.data)
    _interrupt(rt, p, 1 << 31 | 5)
    assert bytes(p.event_page.data) == before
