"""Two identical `stratos run` with one STRATOS_HOME, started together, pay for one run's teacher requests.

Both are real subprocesses with their own temporary Prefect servers on the same database. The
teacher is a loopback OpenAI-compatible server that records every question: one run asks each
probe, training and test question exactly once, so together the two may ask no more. The
second run waits on the first's locks (a task's cache key, a stage's work directory) and is
then served its results; both print the same artifacts.
"""

from __future__ import annotations

from collections import Counter

import pytest
from cli_runs import CliRun, CountingTeacher, sums_spec

TRAIN, PROBE, TEST = 96, 16, 24


@pytest.mark.e2e  # out of the default suite; .ci/run runs it (-m e2e)
def test_two_identical_runs_started_together_ask_the_teacher_what_one_run_asks(tmp_path):
    with CountingTeacher(delay_s=0.05) as teacher:
        spec = sums_spec(teacher.url, train_size=TRAIN)
        runs = [CliRun.start(spec, tmp_path, "--json") for _ in range(2)]
        try:
            codes = [run.finish() for run in runs]
        finally:
            for run in runs:
                run.kill()
        asked = list(teacher.asked)

    assert codes == [0, 0], "\n---\n".join(run.tail() for run in runs)
    repeated = {q: n for q, n in Counter(asked).items() if n > 1}
    assert not repeated, f"{len(repeated)} questions asked more than once, e.g. {list(repeated.items())[:3]}"
    assert len(asked) == PROBE + TRAIN + TEST  # what one run asks: each question of each split once
    first, second = (run.result() for run in runs)
    assert first["status"] == second["status"] == "trained"  # serving is off in this spec
    assert first["artifacts"] == second["artifacts"] and first["artifacts"]["model"]
    assert any("is already producing this" in run.text() for run in runs), "the runs never met at a lock"
    print(f"two runs at once: {len(asked)} teacher requests, {len(set(asked))} distinct questions")
