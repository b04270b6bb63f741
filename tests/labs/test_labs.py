"""Every lab's check passes on its reference solution and fails on the untouched starter."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

LABS = Path(__file__).resolve().parents[2] / "labs"


def _check_module(lab: Path):
    spec = importlib.util.spec_from_file_location(f"check_{lab.name}", lab / "check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    "lab", sorted(p for p in LABS.iterdir() if (p / "check.py").exists()), ids=lambda p: p.name
)
def test_lab_check(lab):
    check = _check_module(lab).check
    assert check(str(lab / "solution.py")) == []
    problems = check(str(lab / "starter.py"))
    assert problems, "the starter must not pass before the student's work"
    assert all(":" in p for p in problems), "each problem names where it is"
