"""Lab checks grade from the machine's records and from answers.toml: a solution that games the
result fails, wrong answers are named without their values, and every check fails on its
starter and passes on its reference solution."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

LABS = Path(__file__).resolve().parents[2] / "labs"
NEW_LABS = [
    "05-oversubscription",
    "06-barrier-packets",
    "07-signals-and-interrupts",
    "08-occupancy",
]


def _check(lab: str):
    spec = importlib.util.spec_from_file_location(f"check_{lab[:2]}", LABS / lab / "check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.check


def _student(tmp_path: Path, lab: str, source: str, answers: str | None = None) -> str:
    """A student's copy: `source` as starter.py in tmp_path, with the reference answers (or
    `answers`) as answers.toml beside it."""
    path = tmp_path / "starter.py"
    path.write_text(source)
    ref = (LABS / lab / "solution.answers.toml").read_text()
    (tmp_path / "answers.toml").write_text(ref if answers is None else answers)
    return str(path)


def _solution_copy(tmp_path: Path, lab: str) -> str:
    """The lab's starter and solution copied, so a test can patch the solution's functions."""
    for name in ("starter.py", "solution.py"):
        shutil.copy(LABS / lab / name, tmp_path / name)
    return (tmp_path / "solution.py").read_text()


@pytest.mark.parametrize("lab", NEW_LABS)
def test_new_lab_check_grades_the_starters_code_not_only_its_answers(lab):
    """(tests/labs/test_labs.py runs every check on its solution and starter; this adds that
    the starter fails on its code, with every task named, not just on answers.toml.)"""
    problems = _check(lab)(str(LABS / lab / "starter.py"))
    code = [p for p in problems if not p.startswith("answers:")]
    assert code and all("not done yet" in p for p in code), problems
    assert any(p.startswith("answers:") for p in problems)


def test_lab2_fails_when_the_host_writes_the_result_and_the_signal(tmp_path):
    """The gamed solution: square on the host, store 0 into the completion signal."""
    _solution_copy(tmp_path, "02-stuck-wait")
    gamed = (
        (LABS / "02-stuck-wait" / "starter.py")
        .read_text()
        .replace(
            "SCENARIOS = [scenario_doorbell, scenario_header, scenario_barrier]",
            """def _gamed(scenario):
    def run(rt):
        done, dst = scenario(rt)
        src = np.arange(N, dtype=np.float32)
        dst.view(np.float32)[:] = src**2
        done.store(0)
        return done, dst

    run.__name__ = scenario.__name__
    return run


SCENARIOS = [_gamed(s) for s in (scenario_doorbell, scenario_header, scenario_barrier)]""",
        )
    )
    problems = _check("02-stuck-wait")(_student(tmp_path, "02-stuck-wait", gamed))
    for name in ("scenario_doorbell", "scenario_header", "scenario_barrier"):
        assert any(p.startswith(name) and "CP never retired" in p for p in problems), problems


def test_lab2_fails_when_a_scenario_is_solved_in_a_new_queue(tmp_path):
    """Launching the kernel again in a queue of one's own is not fixing the scenario."""
    source = (
        (LABS / "02-stuck-wait" / "starter.py")
        .read_text()
        .replace(
            "SCENARIOS = [scenario_doorbell, scenario_header, scenario_barrier]",
            """def scenario_doorbell_elsewhere(rt):
    done, dst = scenario_doorbell(rt)
    q, k, ka, _ = _setup(rt)
    q.submit(_dispatch_packet(k, ka, done))
    return done, dst


scenario_doorbell_elsewhere.__name__ = "scenario_doorbell"
SCENARIOS = [scenario_doorbell_elsewhere]""",
        )
    )
    problems = _check("02-stuck-wait")(_student(tmp_path, "02-stuck-wait", source))
    assert any("fix the scenario in its own queue" in p for p in problems), problems


def test_lab2_hints_are_opt_in(capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location(
        "lab2_starter", LABS / "02-stuck-wait" / "starter.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main([])
    plain = capsys.readouterr().out
    assert "ring_doorbell(" not in plain and "hint:" not in plain
    assert "doorbell never rung" in plain  # the fact, read from the machine
    mod.main(["--hint"])
    hinted = capsys.readouterr().out
    assert "ring_doorbell(0)" in hinted and "hint:" in hinted


def test_wrong_answers_are_named_without_their_values(tmp_path):
    lab = "02-stuck-wait"
    _solution_copy(tmp_path, lab)
    answers = (LABS / lab / "solution.answers.toml").read_text()
    answers = answers.replace("barrier_dep_value = 1", "barrier_dep_value = 7")
    answers = answers.replace('real_gpu_header = "hang"', 'real_gpu_header = "memory-fault"')
    answers = answers.replace('header_byte = "0"\n', "")
    path = tmp_path / "solution.py"
    (tmp_path / "solution.answers.toml").write_text(answers)
    problems = [p for p in _check(lab)(str(path)) if p.startswith("answers:")]
    assert sorted(problems) == [
        "answers: barrier_dep_value is wrong",
        "answers: header_byte is not answered in solution.answers.toml",
        "answers: real_gpu_header is wrong",
    ]


def test_lab1_header_first_publishing_launches_the_stale_packet():
    """Task C: the reference header-first store order makes the CP launch slot 0's old body
    (grid 256, the old completion signal decremented again), the body-first order does not."""
    spec = importlib.util.spec_from_file_location("check_01b", LABS / "01-hand-launch" / "check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    bad = mod._race(mod._reference_header_first)
    assert (bad["grid"], bad["old"], bad["done"]) == (256, -1, 1)
    sys.modules.pop("lab1_starter", None)
    sol = importlib.util.spec_from_file_location(
        "lab1_sol", LABS / "01-hand-launch" / "solution.py"
    )
    solution = importlib.util.module_from_spec(sol)
    sol.loader.exec_module(solution)
    good = mod._race(solution.publish_body_first)
    assert (good["grid"], good["done"], good["stalled"], good["correct"]) == (1024, 0, True, True)


def test_lab1_fails_when_publishing_ignores_the_order(tmp_path):
    """Both publishers through write_packet: the header race never happens, and the check
    says which function did not cause it."""
    _solution_copy(tmp_path, "01-hand-launch")
    src = (tmp_path / "solution.py").read_text()
    src = src.replace(
        "    s.store_slot(queue, index, 0, packet[:4])  # the CP, already looking, sees a valid "
        "header\n",
        "    queue.write_packet(index, packet)\n    return\n",
    )
    path = tmp_path / "solution.py"
    path.write_text(src)
    shutil.copy(LABS / "01-hand-launch" / "solution.answers.toml", tmp_path)
    problems = _check("01-hand-launch")(str(path))
    assert problems == [
        "publish_header_first: the CP launched the packet you meant; store the header before "
        "the body, and be preempted between the two stores"
    ]


def _patched_solution(tmp_path: Path, lab: str, old: str, new: str) -> list[str]:
    """Run the lab's check on its reference solution with `old` replaced by `new`."""
    src = _solution_copy(tmp_path, lab)
    assert old in src, old
    (tmp_path / "solution.py").write_text(src.replace(old, new))
    shutil.copy(LABS / lab / "solution.answers.toml", tmp_path)
    return _check(lab)(str(tmp_path / "solution.py"))


def test_lab5_rescue_must_keep_all_the_hog_work(tmp_path):
    problems = _patched_solution(
        tmp_path,
        "05-oversubscription",
        "        for _ in range(HOG_KERNELS):\n            h = q.dispatch(",
        "        for _ in range(HOG_KERNELS // 2):\n            h = q.dispatch(",
    )
    assert len(problems) == 1 and problems[0].startswith("rescue: the GPU ran 11 kernels"), problems


def test_lab5_measurements_come_from_the_runlist(tmp_path):
    """A summary copied from the starter's printout is wrong on the check's own workload."""
    problems = _patched_solution(
        tmp_path,
        "05-oversubscription",
        "    dev = rt.runlist()[0]\n    return {",
        "    return {'context_switches': 2, 'queues': {}}\n    dev = rt.runlist()[0]\n    return {",
    )
    assert "hws_summary: context_switches differs from the KFD's runlist" in problems
    assert "hws_summary: queue 0 is missing" in problems


def test_lab6_host_waits_do_not_pass_for_barriers(tmp_path):
    problems = _patched_solution(
        tmp_path,
        "06-barrier-packets",
        '    g.kernel(q0, "A")\n    q1.submit',
        '    g.kernel(q0, "A")\n    s["A"].wait(starter.rocr.Condition.LT, 1)\n    q1.submit',
    )
    assert problems and problems[0].startswith("pipeline: A finished before pipeline() returned")


def test_lab6_an_and_barrier_for_e_is_caught(tmp_path):
    problems = _patched_solution(
        tmp_path,
        "06-barrier-packets",
        'q3.submit(barrier_packet("or"',
        'q3.submit(barrier_packet("and"',
    )
    assert "pipeline: E waited for both B and C; it needs only the first" in problems
    assert "pipeline: queue 3 must order E with a barrier-OR packet" in problems


def test_lab6_dropping_the_barrier_is_not_a_fix(tmp_path):
    problems = _patched_solution(
        tmp_path,
        "06-barrier-packets",
        '    q1.submit(barrier_packet("and", [s["K1"].handle]))\n',
        "",
    )
    assert any(p.startswith("scenario_deadlock: keep every packet") for p in problems), problems


def test_lab7_the_runtime_wait_is_not_my_wait(tmp_path):
    """hsa_signal_wait spins its own 200 us: the KFD's WAIT_EVENTS ioctl comes too late."""
    problems = _patched_solution(
        tmp_path,
        "07-signals-and-interrupts",
        "def my_wait(rt, signal, spin: float) -> int:\n",
        "def my_wait(rt, signal, spin: float) -> int:\n"
        "    return signal.wait(rocr.Condition.LT, 1)\n",
    )
    assert problems == [
        "my_wait: with spin 30 us on a 400 us kernel it should sleep after ~30 us of spinning",
        "my_wait: with spin 1000 us on a 300 us kernel it should never sleep: the kernel ends "
        "within the spin",
    ]


def test_lab8_a_prediction_without_occupancy_is_off(tmp_path):
    problems = _patched_solution(
        tmp_path,
        "08-occupancy",
        "    per_round = s.CUS * workgroups_per_cu(s.WG, vgprs, sgprs, lds)[0]",
        "    per_round = 20",
    )
    assert problems and all(p.startswith("predict_us:") for p in problems)
    assert any("chase_v64" in p for p in problems)
