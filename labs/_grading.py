"""Grading of a lab's written answers: the `answers.toml` next to the student's file.

A lab's check imports this module (it sits in `labs/`, one level above the check). The
student writes numbers and choices into `answers.toml` beside their copy of the starter (for
a file `foo.py`, `foo.answers.toml` is read first when it exists, so a reference solution can
sit in the same folder as the starter). The check knows the true answers without showing
them to the student: numbers it measures on the machine itself, fixed choices as salted
digests. A wrong answer is reported by name only, never with the value expected.
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path


def answers_path(student_file: str) -> Path:
    """`<stem>.answers.toml` beside the student's file if it exists, else `answers.toml`."""
    p = Path(student_file)
    own = p.with_name(f"{p.stem}.answers.toml")
    return own if own.exists() else p.with_name("answers.toml")


def digest(lab: str, name: str, value: object) -> str:
    """The salted digest a check stores for a fixed answer (a choice) instead of the answer."""
    text = f"{lab}:{name}:{_norm(value)}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _norm(value: object) -> str:
    if isinstance(value, str):
        return value.strip().lower().replace("_", "-").replace(" ", "-")
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float) and float(value).is_integer():
        return str(int(value))
    return str(value)


@dataclass
class Number:
    """A numeric answer, measured by the check; right within `rel` (relative) or `abs`."""

    name: str
    truth: float
    rel: float = 0.05
    abs: float = 0.0

    def wrong(self, given: object) -> str | None:
        if isinstance(given, bool) or not isinstance(given, int | float):
            return f"{self.name} must be a number, not {given!r}"
        tol = max(self.abs, self.rel * abs(self.truth))
        if not math.isfinite(given) or abs(given - self.truth) > tol:
            return f"{self.name} is wrong"
        return None


@dataclass
class Choice:
    """One of `options`; the right one is given either as `truth` (measured by the check) or
    as the `key` digest of a fixed answer (see `digest`)."""

    name: str
    options: tuple[str, ...]
    truth: str | None = None
    key: str | None = None
    lab: str = ""

    def wrong(self, given: object) -> str | None:
        opts = ", ".join(repr(o) for o in self.options)
        if isinstance(given, bool) or not isinstance(given, str | int):
            return f"{self.name} must be one of {opts}, not {given!r}"
        if _norm(given) not in {_norm(o) for o in self.options}:
            return f"{self.name} must be one of {opts}, not {given!r}"
        if self.truth is not None:
            ok = _norm(given) == _norm(self.truth)
        else:
            ok = digest(self.lab, self.name, given) == self.key
        return None if ok else f"{self.name} is wrong"


def grade(student_file: str, questions: list[Number | Choice]) -> list[str]:
    """Problems with the student's answers (empty when all are right), each starting with
    'answers:' and naming the question, never the expected value."""
    path = answers_path(student_file)
    if not path.exists():
        return [f"answers: no {path.name} next to {Path(student_file).name} (copy the lab's)"]
    try:
        given = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        return [f"answers: {path.name} is not valid TOML: {e}"]
    problems = []
    for q in questions:
        if q.name not in given:
            problems.append(f"answers: {q.name} is not answered in {path.name}")
            continue
        why = q.wrong(given[q.name])
        if why:
            problems.append(f"answers: {why}")
    return problems


def report(lab: str, problems: list[str], passed: str) -> int:
    """Print a check's verdict; the exit status."""
    for p in problems:
        print(f"FAIL {p}")
    if not problems:
        print(f"PASS {lab}: {passed}")
    return 1 if problems else 0
