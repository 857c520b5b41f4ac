"""Stratos blocks."""

import stratos  # noqa: F401  (sets the offline environment before any library import)
from blocks.storage import ArtifactStoreBlock
from blocks.teacher import TeacherEndpointBlock
from blocks.workers import WorkerPoolBlock, WorkTarget

__all__ = [
    "ArtifactStoreBlock",
    "TeacherEndpointBlock",
    "WorkTarget",
    "WorkerPoolBlock",
]
