"""Stratos blocks."""

import stratos  # noqa: F401  (sets the offline environment before any library import)
from blocks.catalog import ServerCatalogBlock
from blocks.storage import ArtifactStoreBlock
from blocks.teacher import TeacherEndpointBlock
from blocks.workers import WorkerPoolBlock, WorkTarget

__all__ = [
    "ArtifactStoreBlock",
    "ServerCatalogBlock",
    "TeacherEndpointBlock",
    "WorkTarget",
    "WorkerPoolBlock",
]
