"""How many CPU threads torch gets: one rule, applied once when `stratos` is imported.

    STRATOS_THREADS   if set: that many (the Stratos setting; it wins over everything)
    OMP_NUM_THREADS   else, if set: that many (the standard OpenMP variable users already know)
    otherwise         the cores this process may run on minus the 1-minute load average, rounded,
                      at least 1 and at most the cores

Why not every core: on the shared 2-core machine two torch threads ran ~5x slower than one while
two other heavy jobs were running (each thread waits for the other at every parallel region, and
a busy core stalls both), while on an idle machine two threads beat one by 1.6-1.9x. The idle
cores are the threads that can actually run, so that is the default; a machine with a steady
load it does not see (a job about to start) wants STRATOS_THREADS set.

`live_thread_count()` is the same rule with the load sampled now from /proc/stat (half a second),
for a job about to start: scripts/run.sh uses it, since right after its install the 1-minute
average still reads a core busy.

`apply_threads()` writes the count into OMP_NUM_THREADS, so the processes Stratos starts (the
CPU serving endpoint, Prefect workers, subprocesses of the tests) use the same count without
measuring the load again, and sets torch's intra-op threads when torch is already imported.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping

THREADS_ENV = "STRATOS_THREADS"
OMP_ENV = "OMP_NUM_THREADS"
# What the user set, before apply_threads writes its count into OMP_NUM_THREADS.
_USER_ENV = {name: os.environ[name] for name in (THREADS_ENV, OMP_ENV) if name in os.environ}


class ThreadSettingError(ValueError):
    """A thread variable that is not a count; `name` is the variable."""

    def __init__(self, name: str, value: str):
        super().__init__(f"{name} = {value!r} is not a thread count; set it to a whole number of at least 1")
        self.name = name


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity; a container's cpuset is honoured)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def load_average() -> float:
    """The 1-minute load average, or 0 where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def busy_cores(seconds: float = 0.5) -> float | None:
    """Cores busy over the next `seconds`, from /proc/stat; None where there is no /proc/stat.

    The load average trails by a minute: right after `pip install` it still reads one core busy on
    an idle machine, and the main job then started with one thread instead of two (measured here).
    """

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return sum(values), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    elapsed = total1 - total0
    if elapsed <= 0:
        return None
    return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / elapsed)


def _positive_int(name: str, value: str) -> int:
    try:
        count = int(value.split(",")[0])  # OpenMP also takes a list for nested levels: the first is ours
    except ValueError:
        count = 0
    if count < 1:
        raise ThreadSettingError(name, value)
    return count


def thread_count(env: Mapping[str, str], cores: int, load: float) -> int:
    """The rule above, for explicit inputs (the environment, usable cores, 1-minute load)."""
    for name in (THREADS_ENV, OMP_ENV):
        if env.get(name, "").strip():
            return _positive_int(name, env[name].strip())
    idle = int(cores - load + 0.5)  # round half up: 0.5 of a core counts as free
    return max(1, min(cores, idle))


def apply_threads() -> int:
    """Decide the count for this process (and its children) and hand it to torch; returns it.

    A variable that is not a count is skipped with a one-line warning on stderr: this runs when
    `stratos` is imported, where an exception would be a traceback in every entry point and worker.
    """
    env = dict(os.environ)
    while True:
        try:
            count = thread_count(env, usable_cores(), load_average())
            break
        except ThreadSettingError as err:
            env.pop(err.name)
            print(f"stratos: warning: {err}; ignoring it", file=sys.stderr)
    os.environ[OMP_ENV] = str(count)  # read by torch at import, and inherited by child processes
    torch = sys.modules.get("torch")  # imported before stratos: set it directly (never import it here)
    if torch is not None:
        torch.set_num_threads(count)
    return count


def live_thread_count() -> int:
    """The rule with the load measured now (half a second of /proc/stat) instead of the trailing
    1-minute average: what scripts/run.sh starts the main job with, right after its install."""
    busy = busy_cores()
    load = load_average() if busy is None else busy
    return thread_count(_USER_ENV, usable_cores(), load)
