"""Child processes that die with the process that started them, and the processes a run leaves behind.

`python -m stratos.lifetime PARENT_PID -- COMMAND...` asks Linux to SIGKILL it when its parent
dies (prctl PR_SET_PDEATHSIG), then becomes COMMAND (exec keeps the request). So a server started
through it cannot outlive a `stratos run` that is killed with SIGKILL, which no cleanup code of the
killed process could arrange. The signal fires when the parent *thread* that started the child
exits, so start such children from the thread that lives for the whole run (the main thread).

Elsewhere (macOS) the request is not available and the command simply runs; the run's own exit
paths still stop it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from contextlib import suppress

import psutil

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send `sig` to this process when its parent dies; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    return libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0


def tied_command(command: list[str]) -> list[str]:
    """`command`, started so that it dies with this process (see the module docstring)."""
    return [sys.executable, "-m", "stratos.lifetime", str(os.getpid()), "--", *command]


def process_key(pid: int) -> str:
    """'pid:start-time', which a recycled pid does not match."""
    return f"{pid}:{psutil.Process(pid).create_time():.2f}"


def is_alive(key: str) -> bool:
    """Whether the process a process_key names still runs (not a zombie, not a recycled pid)."""
    pid, _, started = key.partition(":")
    try:
        proc = psutil.Process(int(pid))
        return f"{proc.create_time():.2f}" == started and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, ValueError):
        return False


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> list[int]:
    """Signal a process and all its descendants; returns the pids signalled."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    for proc in procs:
        with suppress(psutil.Error):
            proc.send_signal(sig)
    return [p.pid for p in procs]


def main(argv: list[str]) -> None:
    parent, separator, *command = argv
    if separator != "--" or not command:
        raise SystemExit("usage: python -m stratos.lifetime PARENT_PID -- COMMAND...")
    die_with_parent()
    if os.getppid() != int(parent):  # the parent died before the request was in place
        raise SystemExit(1)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
