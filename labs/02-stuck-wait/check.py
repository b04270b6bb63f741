"""Lab 2 check: every scenario of the student's file must complete with the right result.

python labs/02-stuck-wait/check.py path/to/starter.py
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

import rocr


def check(path: str) -> list[str]:
    spec = importlib.util.spec_from_file_location("student", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    problems = []
    for scenario in mod.SCENARIOS:
        with rocr.init(preset="teaching") as rt:
            try:
                done, dst = scenario(rt)
                done.wait(rocr.Condition.LT, 1)
            except rocr.HsaError as e:
                first = e.message.splitlines()[-1].strip()
                problems.append(f"{scenario.__name__}: still stuck ({first})")
                continue
            want = np.arange(mod.N, dtype=np.float32) ** 2
            if not np.array_equal(dst.view(np.float32), want):
                problems.append(f"{scenario.__name__}: completes, but the result is wrong")
    return problems


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).with_name("starter.py"))
    problems = check(path)
    for p in problems:
        print(f"FAIL {p}")
    if not problems:
        print("PASS lab 2: every launch completes")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
