"""What every stage shares: typed jobs, content keys, work directories, cache policies, retries, runners.

A stage is a Prefect task (tasks/<stage>.py) whose inputs are spec sections and small typed
records that carry content hashes (a ResolvedModel's sha256, a split's sha256, a FileRef's
sha256). Its cache key is those inputs plus its source, and its result is persisted, so an
identical second run is served from the cache and an edit re-runs what it changes.

The GPU stages (synthesis, training, evaluation, serving) take one `StageJob` and return one
small pydantic output. The job is what travels: in-process it is handed to the job function
directly; on a remote worker (flows/dispatch.py) it goes through `run_deployment` as JSON and
is validated back into its type there. `job.key` names the stage's artifacts and its local
work directory, so a retried stage on the same machine finds its checkpoints.

Concurrent runs: every cache policy here is SERIALIZABLE on ProcessLocks (a flock per cache key
under $STRATOS_HOME/locks/tasks), and a job function holds its work directory with
`locked_work_dir` (under $STRATOS_HOME/locks/work), so a second identical run waits for the first
and reuses what it made. The kernel drops a flock when its process dies, so a killed run never
leaves a lock behind.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import anyio
from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.utilities.hashing import hash_objects
from pydantic import BaseModel, ConfigDict, Field

from stratos.errors import ServiceError
from stratos.files import exclusive, try_lock, unlock, wait_lock
from stratos.storage import stratos_home

J = TypeVar("J", bound="StageJob")
Out = TypeVar("Out", bound=BaseModel)


def digest(*parts: Any) -> str:
    """A short stable hash of JSON-able parts: the key that names a stage's artifacts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


# Job fields that say where and under what budget a stage works, not what it makes.
NOT_IN_KEY = {"store_uri", "budget", "planned_usd"}


class StageJob(BaseModel):
    """The input of a GPU stage: everything it reads, by value or by content-hashed URI."""

    model_config = ConfigDict(frozen=True)
    stage: ClassVar[str]  # the stage's name: its work directory, its runs and results are named by it

    store_uri: str = Field(
        description="Root URI of the artifact store the stage reads from and publishes to."
    )

    @property
    def key(self) -> str:
        """Content key: the job without where its artifacts go and what it may spend (the same work in
        another store, or under a higher budget, is the same work: a re-run resumes it)."""
        return digest(type(self).__name__, self.model_dump(mode="json", exclude=NOT_IN_KEY))


class Ran(BaseModel):
    """Which machine and process ran a stage (tests check that a worker ran it)."""

    host: str
    pid: int

    @classmethod
    def here(cls) -> Ran:
        return cls(host=socket.gethostname(), pid=os.getpid())


def work_dir(stage: str, key: str) -> Path:
    """The local directory a stage works in; the same key finds the same directory after a crash."""
    path = stratos_home() / "work" / stage / key
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def locked_work_dir(stage: str, key: str) -> Iterator[Path]:
    """A stage's work directory, held exclusively for the block.

    A second run with the same STRATOS_HOME that reaches the same work waits here until the
    first is done, then finds its finished output (a resumable stage skips what is there), so it
    never pays for the same prompts twice nor resumes a checkpoint a live process is writing.
    """
    with exclusive(stratos_home() / "locks" / "work" / stage / f"{key}.lock", f"{stage} {key[:12]}"):
        yield work_dir(stage, key)


class ProcessLocks:
    """Prefect's LockManager for task cache keys, on flock: a lock dies with the process that held it.

    With SERIALIZABLE isolation a task takes its cache key's lock before it looks for a cached
    result, so of two runs reaching the same task at once the second waits for the first and is
    then served its result. Prefect's own FileSystemLockManager leaves a lock file behind when its
    holder is killed, and that file would block every later run.
    """

    def __init__(self) -> None:
        self._held: dict[str, tuple[str, int]] = {}  # key -> (holder, descriptor)

    @staticmethod
    def _path(key: str) -> Path:
        name = key if key.isalnum() else hashlib.sha256(key.encode()).hexdigest()
        return stratos_home() / "locks" / "tasks" / f"{name}.lock"

    def acquire_lock(
        self, key: str, holder: str, acquire_timeout: float | None = None, hold_timeout: float | None = None
    ) -> bool:
        if self.is_lock_holder(key, holder):
            return True
        fd = wait_lock(self._path(key), f"task cache key {key[:12]}", acquire_timeout)
        if fd is None:
            return False
        self._held[key] = (holder, fd)
        return True

    async def aacquire_lock(
        self, key: str, holder: str, acquire_timeout: float | None = None, hold_timeout: float | None = None
    ) -> bool:
        return await anyio.to_thread.run_sync(self.acquire_lock, key, holder, acquire_timeout, hold_timeout)

    def release_lock(self, key: str, holder: str) -> None:
        if not self.is_lock_holder(key, holder):
            raise ValueError(f"no lock held by {holder} for the task cache key {key}")
        unlock(self._held.pop(key)[1])

    def is_locked(self, key: str) -> bool:
        if key in self._held:
            return True
        fd = try_lock(self._path(key))
        if fd is None:
            return True
        unlock(fd)
        return False

    def is_lock_holder(self, key: str, holder: str) -> bool:
        return self._held.get(key, ("", -1))[0] == holder

    def wait_for_lock(self, key: str, timeout: float | None = None) -> bool:
        if key in self._held:  # this process holds it: waiting would wait on ourselves
            return True
        fd = wait_lock(self._path(key), f"task cache key {key[:12]}", timeout)
        if fd is None:
            return False
        unlock(fd)
        return True

    async def await_for_lock(self, key: str, timeout: float | None = None) -> bool:
        return await anyio.to_thread.run_sync(self.wait_for_lock, key, timeout)


LOCKS = ProcessLocks()


def serialized(policy: CachePolicy) -> CachePolicy:
    """The policy with cross-process locking: concurrent runs compute a task once (see ProcessLocks)."""
    return policy.configure(isolation_level="SERIALIZABLE", lock_manager=LOCKS)


@dataclass
class SourceOf(CachePolicy):
    """The source of the job function a dispatched stage runs: editing it re-runs the stage.

    TASK_SOURCE covers the task's own body, which for a dispatched stage is one line handing the
    job to a runner; the work is in the job function.
    """

    fn: Callable[..., Any] | None = None

    def compute_key(self, task_ctx, inputs, flow_parameters, **kwargs) -> str | None:
        return hash_objects(inspect.getsource(self.fn), raise_on_failure=True) if self.fn else None


@dataclass
class JobKey(CachePolicy):
    """A dispatched stage's job by its content key: where it runs, which store it writes to and what
    budget it runs under do not change what it makes (StageJob.key leaves them out)."""

    def compute_key(self, task_ctx, inputs, flow_parameters, **kwargs) -> str | None:
        job = (inputs or {}).get("job")
        return job.key if isinstance(job, StageJob) else None


# Inputs identify content (hashes and content-named URIs); the lock makes concurrent runs wait.
CONTENT = serialized(INPUTS + TASK_SOURCE)


def dispatched(fn: Callable[..., Any]) -> CachePolicy:
    """Cache policy of a GPU stage: its job's content key, its source, and its job function's source."""
    return serialized(JobKey() + TASK_SOURCE + SourceOf(fn=fn))


class WorkerLost(ServiceError):
    """The worker running a stage stopped answering; retrying is safe (stages resume)."""


def transient(task, task_run, state) -> bool:
    """Retry lost workers and network trouble; a deterministic error would only fail again."""
    try:
        state.result()
    except (WorkerLost, ConnectionError, TimeoutError, OSError) as err:
        return not isinstance(err, FileNotFoundError | PermissionError)
    except Exception:
        return False
    return False


class Runner(Protocol):
    """Where a GPU stage's job function runs: this process, or the chosen server's worker."""

    def run(self, fn: Callable[[J], Out], job: J) -> Out: ...


class InProcess:
    """The embedded default: run the job function here."""

    def run(self, fn: Callable[[J], Out], job: J) -> Out:
        return fn(job)
