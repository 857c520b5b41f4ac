"""Killing and interrupting `stratos run`: nothing survives it, the flow run ends Crashed, the next run resumes.

Real subprocesses and the run's own temporary Prefect server; the teacher is a loopback
OpenAI-compatible server that answers slowly enough (0.3 or 2 s a request, 8 in flight) for a
signal to land in the middle of synthesis. Processes are checked by pid (psutil), flow run
states in the Prefect database itself.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from cli_runs import CliRun, CountingTeacher, alive, attempts_ids, flow_run_states, sums_spec

from stratos.domains.common import stable_id
from stratos.terminal import INTERRUPTED

TRAIN = 160  # five synthesis chunks of 32: the kill lands after the first


@pytest.mark.e2e  # out of the default suite; .ci/run runs it (-m e2e)
def test_sigkill_leaves_no_process_and_the_next_run_marks_it_crashed_and_resumes(tmp_path):
    with CountingTeacher(delay_s=0.3) as teacher:
        spec = sums_spec(teacher.url, train_size=TRAIN)
        first = CliRun.start(spec, tmp_path)
        try:
            first.wait_for(
                lambda: len(attempts_ids(tmp_path / "stratos")) >= 32, 300, "a synthesis chunk logged"
            )
            tree = first.tree()
            assert any("uvicorn" in " ".join(p.cmdline()) for p in tree[1:]), "no temporary Prefect server"
            killed = time.monotonic()
            os.kill(first.proc.pid, signal.SIGKILL)  # the run's process only, as `kill -9 PID` does
            first.proc.wait(timeout=10)
            while alive(tree) and time.monotonic() - killed < 10:  # gone now is gone 10 s later too
                time.sleep(0.2)
            gone_after = time.monotonic() - killed
            survivors = alive(tree)
        finally:
            first.kill()
        assert not survivors, f"still running 10 s after SIGKILL: {[(p.pid, p.cmdline()) for p in survivors]}"
        print(f"SIGKILL: pids {[p.pid for p in tree]}: none alive {gone_after:.1f} s later")

        logged = attempts_ids(tmp_path / "stratos")
        assert 32 <= len(logged) < TRAIN
        before = teacher.count()
        second = CliRun.start(spec, tmp_path)
        try:
            assert second.finish() == 0, second.tail()
        finally:
            second.kill()
        asked = teacher.since(before)

    assert not logged & {stable_id("arithmetic", q) for q in asked}, "a logged prompt was asked again"
    # Synthesis asks only what was not logged, the probe is served from the cache, the test set once.
    assert len(asked) == (TRAIN - len(logged)) + 24
    print(f"resume: {len(logged)} logged prompts, {len(asked)} asked by the next run, 0 of them logged")
    assert [state for _, state in flow_run_states(tmp_path / "prefect")] == ["CRASHED", "COMPLETED"]
    assert "marked 1 flow run(s) of killed runs as crashed" in second.text()


@pytest.mark.parametrize("presses", [1, pytest.param(2, marks=pytest.mark.e2e)])  # 2: e2e tier
def test_ctrl_c_exits_130_with_one_line_and_leaves_nothing_running(tmp_path, presses):
    # Each request takes 2 s, so a clean stop waits ~2 s for the requests in flight: long enough
    # for a second Ctrl-C to land during it and cut it short.
    with CountingTeacher(delay_s=2.0) as teacher:
        run = CliRun.start(sums_spec(teacher.url, train_size=TRAIN), tmp_path)
        try:
            run.wait_for(lambda: teacher.count() > 16, 300, "synthesis requests")  # the probe asks 16
            tree = run.tree()
            first = last = run.now()
            os.kill(run.proc.pid, signal.SIGINT)
            if presses == 2:
                time.sleep(0.3)
                last = run.now()
                os.kill(run.proc.pid, signal.SIGINT)
            code = run.finish(timeout_s=10)
            took = run.now() - last
        finally:
            run.kill()
    time.sleep(1)
    assert code == 130
    assert took < (10 if presses == 1 else 1.5), f"exit took {took:.1f} s after the last Ctrl-C"
    after = [line for t, line in run.lines if t >= first + 0.02 and line.strip()]
    assert after == [INTERRUPTED], run.tail()
    assert "Traceback" not in run.text()
    assert not alive(tree), [p.cmdline() for p in alive(tree)]
    print(
        f"Ctrl-C x{presses}: exit {code} {took:.2f} s after the last press; pids {[p.pid for p in tree]} gone"
    )
    if presses == 1:  # a clean stop tells Prefect; an immediate exit leaves it to the next start
        assert flow_run_states(tmp_path / "prefect")[-1][1] == "CRASHED"
