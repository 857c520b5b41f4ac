"""Failure classes that say what kind of thing went wrong, so the CLI can give each an exit code.

SpecError (stratos.spec) is a bad input; ServiceError is a service the run depends on that
failed or does not answer: a teacher endpoint, the artifact store, a worker, the Prefect server.
Both carry messages written for the user (what, where, the fix; never a secret).
"""

from __future__ import annotations


class ServiceError(RuntimeError):
    """A service the run depends on failed for good, or does not answer."""


class Unreachable(ServiceError):
    """Nothing answers where the service should be (connection refused, timeout, no server)."""
