"""The GPU server catalogs a deployment chooses from, as a Prefect Block."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field

from stratos.spec import BUILTIN_CATALOG, ServerSettings
from stratos.storage import ArtifactStore, fetch


class ServerCatalogBlock(Block):
    """Catalog files of GPU servers with prices (SkyPilot CSV/YAML) and the Pareto Front Grid size."""

    _block_type_name = "Stratos Server Catalog"
    _block_type_slug = "stratos-server-catalog"

    catalogs: list[str] = Field(
        default_factory=lambda: [BUILTIN_CATALOG],
        description="Catalog paths, file:// or s3:// URIs, or 'builtin' for the shipped multi-cloud catalogs.",
    )
    grid_k: int = Field(10, ge=1, le=100, description="Pareto Front Grid cells per objective (K; K^3 cells).")

    def server_settings(self, store: ArtifactStore | None = None) -> ServerSettings:
        """ServerSettings with every URI fetched to a local file (S3 through `store` when it holds it)."""
        paths = []
        for entry in self.catalogs:
            if "://" not in entry:
                paths.append(entry)
            elif store is not None and entry.startswith(store.uri_for("").rstrip("/") + "/"):
                paths.append(str(store.get_file(store.key_for(entry))))
            else:
                paths.append(str(fetch(entry)))  # S3 credentials from the worker's AWS environment
        return ServerSettings(catalogs=paths, grid_k=self.grid_k)
