"""The artifact store as a Prefect Block: where a deployment's stages read and write artifacts."""

from __future__ import annotations

from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, model_validator

from stratos.storage import ArtifactStore, LocalStore


class ArtifactStoreBlock(Block):
    """Where Stratos stages keep their artifacts: a local directory or an S3 (compatible) bucket."""

    _block_type_name = "Stratos Artifact Store"
    _block_type_slug = "stratos-artifact-store"

    kind: Literal["local", "s3"] = Field("local", description="local: a directory; s3: a bucket via boto3.")
    root: str | None = Field(
        None, description="local: the directory (default $STRATOS_HOME/artifacts or ./.stratos/artifacts)."
    )
    bucket: str | None = Field(None, description="s3: the bucket name.")
    prefix: str = Field("", description="s3: key prefix inside the bucket, e.g. 'stratos/prod'.")
    endpoint_url: str | None = Field(
        None, description="s3: URL of an S3-compatible server (MinIO, Ceph); empty for AWS."
    )
    region: str | None = Field(None, description="s3: region, e.g. 'eu-west-1'.")
    aws_access_key_id: SecretStr | None = Field(
        None, description="s3: access key ID; empty to use the worker's AWS environment/profile."
    )
    aws_secret_access_key: SecretStr | None = Field(
        None, description="s3: secret access key; empty to use the worker's AWS environment/profile."
    )

    @model_validator(mode="after")
    def _s3_needs_bucket(self) -> ArtifactStoreBlock:
        if self.kind == "s3" and not self.bucket:
            raise ValueError("bucket is empty but kind is 's3'; set bucket, or use kind 'local'")
        return self

    def store(self) -> ArtifactStore:
        """The stratos.storage store this block describes."""
        if self.kind == "local":
            return LocalStore(self.root)
        from stratos.storage_s3 import S3Store  # boto3 is only imported when S3 is used

        assert self.bucket is not None  # checked by _s3_needs_bucket
        return S3Store(
            self.bucket,
            self.prefix,
            endpoint_url=self.endpoint_url,
            region=self.region,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
        )
