"""The torch thread rule (stratos/threads.py): the setting, the standard variable, else the idle cores."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from stratos.threads import OMP_ENV, THREADS_ENV, busy_cores, thread_count


def test_stratos_threads_wins_over_omp_and_the_load():
    assert thread_count({THREADS_ENV: "3", OMP_ENV: "8"}, cores=2, load=5.0) == 3


def test_omp_num_threads_is_used_when_stratos_threads_is_unset():
    assert thread_count({OMP_ENV: "4"}, cores=2, load=0.0) == 4
    assert thread_count({OMP_ENV: "2,1"}, cores=8, load=0.0) == 2  # OpenMP's nested list: first level
    assert thread_count({THREADS_ENV: " ", OMP_ENV: "2"}, cores=8, load=0.0) == 2  # blank is unset


@pytest.mark.parametrize(
    ("cores", "load", "expected"),
    [
        (2, 0.0, 2),  # idle: every core
        (2, 0.3, 2),  # a little background noise still leaves both cores
        (2, 0.6, 1),  # more than half a core busy: one thread
        (2, 1.9, 1),  # the shared machine with another heavy job
        (2, 3.7, 1),  # overloaded: never below one
        (16, 4.2, 12),
        (4, -1.0, 4),  # never above the cores
    ],
)
def test_without_a_setting_the_count_is_the_idle_cores(cores, load, expected):
    assert thread_count({}, cores, load) == expected


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_bad_setting_names_the_variable_the_value_and_the_fix(value):
    with pytest.raises(ValueError, match=rf"{THREADS_ENV} = '{value}' is not a thread count; set it"):
        thread_count({THREADS_ENV: value}, cores=2, load=0.0)


def test_a_bad_setting_at_import_is_skipped_with_a_warning_not_a_traceback():
    env = {**os.environ, THREADS_ENV: "lots", OMP_ENV: "1"}
    code = "import stratos; print(stratos.THREADS)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["1"], done.stderr[-2000:]
    assert "STRATOS_THREADS = 'lots' is not a thread count" in done.stderr and "Traceback" not in done.stderr


def test_importing_stratos_applies_the_rule_to_torch_and_to_child_processes():
    code = (
        "import torch, stratos, os, subprocess, sys; "
        "child = subprocess.run([sys.executable, '-c', 'import torch; print(torch.get_num_threads())'], "
        "capture_output=True, text=True).stdout.strip(); "
        "print(stratos.THREADS, torch.get_num_threads(), os.environ['OMP_NUM_THREADS'], child)"
    )
    env = {**os.environ, THREADS_ENV: "1", OMP_ENV: "2"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    # torch imported before stratos is set directly; a child without stratos inherits OMP_NUM_THREADS.
    assert done.stdout.split() == ["1", "1", "1", "1"]


def test_busy_cores_sees_a_core_spinning_now() -> None:
    """The live sample run.sh uses: a child spinning for a second is at least most of one core."""
    spinner = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass"]
    )
    try:
        time.sleep(0.3)
        busy = busy_cores(0.5)
    finally:
        spinner.wait(timeout=10)
    assert busy is not None and busy >= 0.8, busy


def test_the_live_count_keeps_what_the_user_set_before_import() -> None:
    """Importing stratos writes its count into OMP_NUM_THREADS; the live count still reads the user's."""
    code = "from stratos.threads import live_thread_count; print(live_thread_count())"
    env = {**os.environ, "OMP_NUM_THREADS": "3"}
    env.pop("STRATOS_THREADS", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "3", done.stderr
