"""Tracing is off unless asked for: rocr.init(trace=...), $HSAEMU_TRACE, the commands that
show a timeline, and the HTTP service's systems (whose trace routes read it)."""

from __future__ import annotations

import os

import pytest

import rocr
from rocr.service.testing import in_process_client


def _one_dispatch(rt) -> None:
    k = rt.load_code_object("builtin:empty").kernel("empty")
    rt.gpus[0].create_queue(64).dispatch(k, grid=64, workgroup=64).wait()


def _names(rt) -> list[str]:
    return [e.name for e in rt.system.tracer.events]


def test_a_machine_is_untraced_by_default_and_traced_when_asked(monkeypatch):
    monkeypatch.delenv("HSAEMU_TRACE", raising=False)
    with rocr.init(preset="teaching") as rt:
        _one_dispatch(rt)
        assert rt.system.tracer.enabled is False
        assert _names(rt) == []
        assert rt.system.gpus[0].kernel_records, "kernel records are kept either way"
    with rocr.init(preset="teaching", trace=True) as rt:
        _one_dispatch(rt)
        names = _names(rt)
        assert "hsa_init" in names and "ring doorbell" in names and "doorbell" in names


def test_the_spec_and_the_argument_decide_and_the_argument_wins(monkeypatch):
    from hw_model.config import system_spec

    monkeypatch.delenv("HSAEMU_TRACE", raising=False)
    with rocr.init(spec=system_spec("teaching", trace=True)) as rt:
        assert "hsa_init" in _names(rt)
    with rocr.init(spec=system_spec("teaching", trace=True), trace=False) as rt:
        _one_dispatch(rt)
        assert _names(rt) == []


def test_hsaemu_trace_env_turns_it_on_and_an_explicit_argument_still_wins(monkeypatch):
    monkeypatch.setenv("HSAEMU_TRACE", "1")
    with rocr.init(preset="teaching") as rt:
        assert "hsa_init" in _names(rt)
    with rocr.init(preset="teaching", trace=False) as rt:
        assert _names(rt) == []
    monkeypatch.setenv("HSAEMU_TRACE", "0")
    with rocr.init(preset="teaching") as rt:
        assert _names(rt) == []


def test_attaching_with_trace_true_traces_the_shared_machine(monkeypatch):
    monkeypatch.delenv("HSAEMU_TRACE", raising=False)
    with rocr.init(preset="teaching") as first:
        second = rocr.init(system=first.system, trace=True)
        try:
            _one_dispatch(first)
            assert "ring doorbell" in _names(first)  # one machine, one trace
        finally:
            second.shutdown()


def test_bad_trace_values_are_named(monkeypatch):
    monkeypatch.delenv("HSAEMU_TRACE", raising=False)
    with pytest.raises(rocr.HsaError, match=r"trace='yes': must be True, False or None") as e:
        rocr.init(preset="teaching", trace="yes")
    assert e.value.status == rocr.Status.ERROR_INVALID_ARGUMENT
    monkeypatch.setenv("HSAEMU_TRACE", "maybe")
    with pytest.raises(rocr.HsaError, match=r"HSAEMU_TRACE='maybe': must be 1 or 0") as e:
        rocr.init(preset="teaching")
    assert e.value.status == rocr.Status.ERROR_INVALID_ARGUMENT


def test_hsaemu_trace_traces_the_script_and_restores_the_environment(tmp_path, monkeypatch, capsys):
    from rocr.cli import main

    monkeypatch.delenv("HSAEMU_TRACE", raising=False)
    script = tmp_path / "s.py"
    script.write_text(
        "import rocr\n"
        "rt = rocr.init(preset='teaching')\n"
        "k = rt.load_code_object('builtin:empty').kernel('empty')\n"
        "rt.gpus[0].create_queue(64).dispatch(k, grid=64, workgroup=64).wait()\n"
        "print('traced events', len(rt.system.tracer.events))\n"
    )
    assert main(["trace", "-d", str(tmp_path / "out"), str(script)]) == 0
    out = capsys.readouterr().out
    assert int(out.split("traced events")[1].split()[0]) > 10
    assert "hsa_init" in (tmp_path / "out" / "trace.json").read_text()
    assert "HSAEMU_TRACE" not in os.environ


def test_served_systems_are_traced_unless_created_with_trace_false():
    with in_process_client() as c:
        counts = {}
        for body in ({}, {"trace": False}, {"trace": False, "spec": {"trace": True}}):
            r = c.post("/v1/systems", json={"preset": "teaching", **body})
            assert r.status_code == 201, r.text
            d = r.json()
            auth = {"Authorization": f"Bearer {d['token']}"}
            base = f"/v1/systems/{d['id']}"
            ev = c.get(f"{base}/trace/events", headers=auth).json()
            counts[str(body)] = ev["total"]
            c.delete(base, headers=auth)
    assert counts["{}"] > 0  # hsa_init at least
    assert counts["{'trace': False}"] == 0
    assert counts["{'trace': False, 'spec': {'trace': True}}"] > 0
