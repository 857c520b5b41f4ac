"""Locks that die with their process: concurrent runs wait for each other, a killed run blocks nobody.

A holder is a real second process (python -c), killed with SIGKILL as a crashed run would be;
the kernel releases its flock, and the next acquirer gets the lock at once. The zoo's builds
use the same locks: a build in progress keeps its temporary directory, a dead one's is removed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from stratos import zoo
from stratos.files import describe_holder, try_lock, unlock, wait_lock
from stratos.jobs import LOCKS, locked_work_dir

HOLD = """
import sys, time
from pathlib import Path
from stratos.files import try_lock
assert try_lock(Path(sys.argv[1])) is not None
print("held", flush=True)
time.sleep(600)
"""


def hold_in_another_process(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_lock_held_elsewhere_blocks_until_its_holder_is_killed(tmp_path):
    path = tmp_path / "locks" / "stage.lock"
    holder = hold_in_another_process(path)
    try:
        assert try_lock(path) is None
        assert wait_lock(path, "test", timeout_s=0.5) is None
        assert describe_holder(path).startswith(f"pid {holder.pid} on ") and "`-c " in describe_holder(path)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        started = time.monotonic()
        fd = wait_lock(path, "test", timeout_s=5)
        assert fd is not None and time.monotonic() - started < 1
        unlock(fd)
    finally:
        holder.kill()


def test_prefect_cache_key_locks_wait_for_another_process_and_free_on_its_death(tmp_path, monkeypatch):
    monkeypatch.setenv("STRATOS_HOME", str(tmp_path))
    key = "a" * 32
    holder = hold_in_another_process(LOCKS._path(key))
    try:
        assert LOCKS.is_locked(key)
        assert not LOCKS.acquire_lock(key, "me", acquire_timeout=0.3)
        holder.kill()
        holder.wait()
        assert LOCKS.acquire_lock(key, "me", acquire_timeout=5) and LOCKS.is_lock_holder(key, "me")
        assert LOCKS.wait_for_lock(key, 0.1)  # this process holds it: no waiting on itself
        LOCKS.release_lock(key, "me")
        assert not LOCKS.is_locked(key)
    finally:
        holder.kill()


def test_a_stage_work_directory_is_used_by_one_run_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setenv("STRATOS_HOME", str(tmp_path))
    events: list[str] = []

    def stage(name: str) -> None:
        with locked_work_dir("train", "k" * 20) as out:
            events.append(f"{name} in")
            (out / "marker").write_text(name)
            time.sleep(0.3)
            events.append(f"{name} out")

    threads = [threading.Thread(target=stage, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert events == ["a in", "a out", "b in", "b out"]


def test_a_killed_builds_temporary_directory_goes_and_a_live_ones_stays(zoo_dir):
    dead = zoo_dir / ".tokenizer-custom-0123456789abcdef.x1y2z3"
    live = zoo_dir / ".model-nano-fedcba9876543210.a1b2c3"
    for path in (dead, live):
        path.mkdir()
        (path / "partial.bin").write_bytes(b"half")
    holder = hold_in_another_process(zoo_dir / zoo.LOCK_DIR / "model-nano-fedcba9876543210.lock")
    try:
        removed = zoo.remove_stale_builds("tokenizer-other-0000")
    finally:
        holder.kill()
        holder.wait()
    assert removed == [dead] and not dead.exists() and live.exists()
    assert zoo.remove_stale_builds("tokenizer-other-0000") == [live]  # its builder is gone now


def test_concurrent_builds_of_one_zoo_name_build_once(zoo_dir):
    builds: list[int] = []

    def build(tmp: Path) -> dict:
        builds.append(1)
        time.sleep(0.3)
        (tmp / "weights").write_text("w")
        return {}

    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(zoo.cached_build("test-once", {"n": 1}, build)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and results[0] == results[1] and (results[0] / "meta.json").is_file()


def test_tokenizer_text_is_bounded_and_short_text_is_untouched():
    short = ["a few words", "1+2 = 3"]
    assert zoo.bounded_texts(short) == short
    long = ["x" * 5_000_000, *short]
    bounded = zoo.bounded_texts(long)
    assert [len(t) for t in bounded] == [zoo.MAX_TEXT_CHARS, len(short[0]), len(short[1])]
    many = ["y" * zoo.MAX_TEXT_CHARS] * 2000
    assert sum(map(len, zoo.bounded_texts(many))) <= zoo.MAX_TOTAL_CHARS
