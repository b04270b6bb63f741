"""Fixtures shared by the hw_model tests."""

from __future__ import annotations

import pytest

from hw_model.memory import Memory


@pytest.fixture
def mem() -> Memory:
    """A memory model of 1 GiB on node 0 with the VM of pasid 1."""
    m = Memory({0: 1 << 30})
    m.create_vm(1)
    return m
