"""Registry versions in the lake: an import writes a new immutable version, then points
`registry/current.json` at it.

Readers load the version the pointer names, so a reader sees a whole version or the one
before, never a mix: the version file is complete before the pointer moves, and the pointer
is one object written whole. Re-importing the same sensors adds no version (the digest of
the rows decides), so an import can be repeated safely, by a person or by the simulator at
every start.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa

from smartcity.lake import Lake
from smartcity.layout import registry_current_key, registry_key, registry_version_key
from smartcity.registry.contract import REGISTRY_SCHEMA, table_rows

VERSION_METADATA = b"smartcity.registry_version"
"""The Parquet schema metadata key a published registry table carries its version in."""


@dataclass(frozen=True)
class RegistryVersion:
    """One version of the registry: its number (0: none imported yet) and its table."""

    version: int
    table: pa.Table
    digest: str = ""
    imported_at: str | None = None

    def sensors(self) -> dict[str, dict[str, Any]]:
        """Every sensor, decommissioned ones included (their history keeps its place)."""
        return sensors_by_id(self.table)

    def active_sensors(self) -> dict[str, dict[str, Any]]:
        """The sensors whose new readings are taken."""
        return sensors_by_id(self.table.filter(self.table.column("active")))

    def active_ids(self) -> frozenset[str]:
        return frozenset(
            self.table.filter(self.table.column("active")).column("sensor_id").to_pylist()
        )

    def counts(self) -> dict[str, int]:
        rows = self.table.group_by("sensor_type").aggregate([("sensor_id", "count")])
        return {row["sensor_type"]: row["sensor_id_count"] for row in rows.to_pylist()}

    def tagged(self) -> pa.Table:
        """The table with its version in the schema metadata, as it is published."""
        metadata = {**(self.table.schema.metadata or {}), VERSION_METADATA: str(self.version)}
        return self.table.replace_schema_metadata(metadata)


EMPTY = RegistryVersion(0, REGISTRY_SCHEMA.empty_table())


class RegistryUnavailable(RuntimeError):
    """No registry to work with (none imported, or the lake unreadable); one line."""


def sensors_by_id(table: pa.Table) -> dict[str, dict[str, Any]]:
    """sensor_id -> its registry row (capacity, nominal voltage, district...)."""
    return {row["sensor_id"]: row for row in table.to_pylist()}


def digest(table: pa.Table) -> str:
    """A digest of the sensors themselves (not of their file's bytes)."""
    return hashlib.sha256(orjson.dumps(table_rows(table.sort_by("sensor_id")))).hexdigest()


def current_pointer(lake: Lake) -> dict[str, Any] | None:
    key = registry_current_key()
    return orjson.loads(lake.read_bytes(key)) if lake.exists(key) else None


def load_registry(lake: Lake) -> RegistryVersion:
    """The registry in force, or `EMPTY` (version 0, no sensors) if none was imported."""
    pointer = current_pointer(lake)
    if pointer is None:
        return EMPTY
    table = lake.read_parquet(registry_version_key(pointer["version"]))
    return RegistryVersion(
        pointer["version"],
        table.cast(REGISTRY_SCHEMA).replace_schema_metadata(None),
        pointer["digest"],
        pointer["imported_at"],
    )


def registry_in_force(lake: Lake) -> RegistryVersion:
    """The version in force, or `RegistryUnavailable` saying what to do: a reader that
    went on without one would refuse every reading as an unknown sensor."""
    try:
        found = load_registry(lake)
    except OSError as error:
        raise RegistryUnavailable(f"the sensor registry could not be read: {error}") from None
    if found.version == 0:
        raise RegistryUnavailable(
            "no sensor registry in the lake yet: `smartcity sensors import FILE` adds one "
            "(`smartcity simulate` imports its city)"
        )
    return found


def import_registry(lake: Lake, table: pa.Table) -> tuple[RegistryVersion, bool]:
    """Make `table` (already validated) the registry in force; returns its version and
    whether it is a new one (False: the lake already had exactly these sensors)."""
    pointer = current_pointer(lake)
    rows_digest = digest(table)
    if pointer is not None and pointer["digest"] == rows_digest:
        return load_registry(lake), False
    version = 1 + (pointer["version"] if pointer else 0)
    imported_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lake.ensure_root()
    lake.write_parquet(registry_version_key(version), table)
    pointer = {
        "version": version,
        "sensors": table.num_rows,
        "digest": rows_digest,
        "imported_at": imported_at,
    }
    lake.write_bytes(registry_current_key(), orjson.dumps(pointer))
    return RegistryVersion(version, table, rows_digest, imported_at), True


def publish_registry(lake: Lake, registry: RegistryVersion) -> int:
    """Write `registry` as the published `sensor_registry` table; returns its size."""
    return lake.write_parquet(registry_key(), registry.tagged())


def published_registry(lake: Lake) -> RegistryVersion:
    """The version the `sensor_registry` asset last published, which the batch layer joins
    (the one in force if none was published yet)."""
    if not lake.exists(registry_key()):
        return load_registry(lake)
    table = lake.read_parquet(registry_key())
    version = int((table.schema.metadata or {}).get(VERSION_METADATA, b"0"))
    return RegistryVersion(version, table.cast(REGISTRY_SCHEMA).replace_schema_metadata(None))


@dataclass
class RegistryFollower:
    """The registry in force, looked up again at most every `every_s` seconds.

    For long-running readers (the stream worker, the ingest paths): a city that imports
    new sensors is heard without a restart. A failed look-up keeps the version in hand.
    """

    lake: Lake
    every_s: float = 10.0
    current: RegistryVersion = EMPTY
    _checked_at: float = field(default=float("-inf"), repr=False)

    @classmethod
    def start(cls, lake: Lake, every_s: float = 10.0) -> RegistryFollower:
        """A follower holding the version in force now (`RegistryUnavailable` if there is
        none); later look-ups that fail keep the version in hand."""
        follower = cls(lake, every_s, registry_in_force(lake))
        follower._checked_at = time.monotonic()
        return follower

    def refresh(self) -> bool:
        """Load the registry again if it is time; True when the version changed."""
        now = time.monotonic()
        if now - self._checked_at < self.every_s:
            return False
        self._checked_at = now
        try:
            pointer = current_pointer(self.lake)
            if pointer is None or pointer["version"] == self.current.version:
                return False
            self.current = load_registry(self.lake)
        except OSError:
            return False
        return True
