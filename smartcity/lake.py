"""The lake: one code path for a local folder and an S3 bucket.

Everything that reads or writes the lake goes through a `Lake`, which turns the
`SMARTCITY_LAKE_URI` into a pyarrow filesystem and a root path, so the stream worker,
the assets and the API address objects by the same relative keys on either storage.
"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from smartcity.settings import Settings

PARQUET_COMPRESSION = "zstd"


def s3_filesystem(settings: Settings) -> pafs.S3FileSystem:
    """A pyarrow S3 filesystem for the configured endpoint (MinIO or any S3)."""
    endpoint = urlsplit(settings.s3_endpoint) if settings.s3_endpoint else None
    return pafs.S3FileSystem(
        access_key=settings.s3_access_key.get_secret_value() if settings.s3_access_key else None,
        secret_key=settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None,
        region=settings.s3_region,
        endpoint_override=endpoint.netloc if endpoint else None,
        scheme=endpoint.scheme if endpoint else "https",
        connect_timeout=5,
        request_timeout=30,
        allow_bucket_creation=True,
    )


@dataclass(frozen=True)
class Lake:
    """A filesystem plus the root under which every table and landing file lives."""

    filesystem: pafs.FileSystem
    root: str
    uri: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Lake:
        parts = urlsplit(settings.lake_uri)
        if parts.scheme == "s3":
            root = f"{parts.netloc}{parts.path}".rstrip("/")
            return cls(s3_filesystem(settings), root, settings.lake_uri)
        return cls(pafs.LocalFileSystem(), parts.path.rstrip("/"), settings.lake_uri)

    @property
    def bucket(self) -> str:
        return self.root.split("/", 1)[0]

    @property
    def is_local(self) -> bool:
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    def path(self, key: str) -> str:
        return f"{self.root}/{key.lstrip('/')}"

    def ensure_root(self) -> None:
        self.filesystem.create_dir(self.root if self.is_local else self.bucket, recursive=True)

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write an object whole: readers see the old or the new content, never a part."""
        target = self.path(key)
        if not self.is_local:
            with self.filesystem.open_output_stream(target) as out:
                out.write(data)
            return
        parent = target.rsplit("/", 1)[0]
        self.filesystem.create_dir(parent, recursive=True)
        scratch = f"{parent}/.{uuid.uuid4().hex}.tmp"
        with self.filesystem.open_output_stream(scratch) as out:
            out.write(data)
        self.filesystem.move(scratch, target)

    def read_bytes(self, key: str) -> bytes:
        with self.filesystem.open_input_stream(self.path(key)) as source:
            return source.read()

    def exists(self, key: str) -> bool:
        return self.filesystem.get_file_info(self.path(key)).type != pafs.FileType.NotFound

    def write_parquet(self, key: str, table: pa.Table) -> int:
        """Write `table` as one zstd Parquet object at `key`; returns its size in bytes."""
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression=PARQUET_COMPRESSION)
        data = buffer.getvalue()
        self.write_bytes(key, data)
        return len(data)

    def read_parquet(self, key: str) -> pa.Table:
        return pq.read_table(self.path(key), filesystem=self.filesystem)

    def copy_into(self, target: Lake) -> None:
        """Every file of this lake into `target`, at the same keys: a lake folder moved to
        an object store, for example."""
        pafs.copy_files(
            self.root,
            target.root,
            source_filesystem=self.filesystem,
            destination_filesystem=target.filesystem,
        )

    def list_files(self, prefix: str) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(self.path(prefix), recursive=True, allow_not_found=True)
        return [info for info in self.filesystem.get_file_info(selector) if info.is_file]
