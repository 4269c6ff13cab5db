"""The API's view of the lake: listings, the registry and the live state behind short TTLs.

Every request would otherwise list object-store prefixes and re-read the registry; on S3
each of those is a round trip. The caches are short (seconds) so a newly landed file or a
re-built partition shows up almost at once, and they are per process, so nothing needs
invalidating across workers. What is read or rendered from files is kept longer, in a
memory-bounded LRU keyed by the files' identity (key, size, mtime): a rewritten file has a
new identity, so nothing kept there is ever stale. Every method may block on a miss: call
them from threadpool handlers.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date
from typing import Any, TypeVar

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
from cachetools import Cache, LRUCache, TTLCache

from smartcity.lake import Lake
from smartcity.layout import (
    LANDING,
    LIVE,
    QUALITY,
    check_failures_key,
    landing_dir,
    quality_key,
    table_dir,
)
from smartcity.registry import load_registry
from smartcity.settings import Settings
from smartcity_stream.live import latest_schema

T = TypeVar("T")
MB = 1 << 20
WHOLE_READ_SHARE = 32

LISTING_TTL_S = 5.0
LIVE_TTL_S = 1.0


@dataclass(frozen=True)
class StoredFile:
    """One object of the lake: its key (relative to the root), full path, size and mtime.

    Hashable and changed by any rewrite, so it keys caches of what was read from the file.
    """

    key: str
    path: str
    size: int
    mtime_ns: int = 0


Partition = tuple[StoredFile, ...]
"""The part files of one date partition of a table (one or more, in key order)."""


@dataclass(frozen=True)
class Listing:
    """The files under a prefix at one moment, and views of them computed once per listing
    (every request would otherwise filter the whole listing again)."""

    files: list[StoredFile]
    views: dict[Hashable, Any] = field(default_factory=dict)

    def ending(self, suffix: str) -> list[StoredFile]:
        return [f for f in self.files if f.key.endswith(suffix)]

    def view(self, key: Hashable, compute: Callable[[], T]) -> T:
        if key not in self.views:
            self.views[key] = compute()
        return self.views[key]


_MEMORY_ONLY: ContextVar[bool] = ContextVar("memory_only", default=False)


class WouldBlock(Exception):
    """Raised by a cache miss while `memory_only()` is on: the caller must go to a thread."""


@contextlib.contextmanager
def memory_only() -> Iterator[None]:
    """Within: a cache miss raises `WouldBlock` instead of reading the lake."""
    token = _MEMORY_ONLY.set(True)
    try:
        yield
    finally:
        _MEMORY_ONLY.reset(token)


def _size(value: Any) -> int:
    """Bytes a kept value holds: its `nbytes` (Arrow tables, rendered pages) or its length."""
    return int(getattr(value, "nbytes", None) or len(value))


class LakeReader:
    """Cached, thread-safe reads of the lake shared by every request of one process."""

    def __init__(self, settings: Settings, lake: Lake | None = None) -> None:
        self.settings = settings
        self.lake = lake or Lake.from_settings(settings)
        self._lock = threading.Lock()
        self._flights: dict[Hashable, threading.Lock] = {}
        self._listings: TTLCache[str, Listing] = TTLCache(4096, LISTING_TTL_S)
        self._registry: TTLCache[str, Any] = TTLCache(2, settings.registry_refresh_s)
        self._live: TTLCache[Hashable, Any] = TTLCache(256, LIVE_TTL_S)
        self._derived: TTLCache[Hashable, Any] = TTLCache(1024, LISTING_TTL_S)
        self._kept: LRUCache[Hashable, Any] = LRUCache(settings.api_cache_mb * MB, _size)
        self.whole_read_bytes = settings.api_cache_mb * MB // WHOLE_READ_SHARE
        """A partition stored in at most this many bytes is read whole and kept (its rows in
        memory take several times its compressed size)."""

    def memo(self, cache: Cache[Any, Any], key: Hashable, compute: Callable[[], T]) -> T:
        """`cache[key]`; on a miss one thread computes it while the others asking for the
        same key wait for its result (at start-up every request would otherwise read the
        same partition at once). A value larger than the whole cache is returned without
        being kept.
        """
        with self._lock:
            if key in cache:
                return cache[key]
            if _MEMORY_ONLY.get():
                raise WouldBlock(key)
            flight = self._flights.setdefault(key, threading.Lock())
        try:
            with flight:
                with self._lock:
                    if key in cache:
                        return cache[key]
                value = compute()
                with self._lock, contextlib.suppress(ValueError):
                    cache[key] = value
                return value
        finally:
            with self._lock:
                self._flights.pop(key, None)

    def kept(self, key: Hashable, compute: Callable[[], T]) -> T:
        """A value read or rendered from files named (with their identity) in `key`."""
        return self.memo(self._kept, key, compute)

    def live_view(self, key: Hashable, compute: Callable[[], T]) -> T:
        """A value derived from the live state, as fresh as `latest()`."""
        return self.memo(self._live, key, compute)

    def derived(self, key: Hashable, compute: Callable[[], T]) -> T:
        """A short-lived result derived from lake files (as fresh as the listings)."""
        return self.memo(self._derived, key, compute)

    # listings -------------------------------------------------------------------------

    def listing(self, prefix: str) -> Listing:
        """The files under `prefix` (recursive), at most `LISTING_TTL_S` old."""

        def read() -> Listing:
            found = [
                StoredFile(
                    info.path.removeprefix(self.lake.root + "/"),
                    info.path,
                    info.size or 0,
                    info.mtime_ns or 0,
                )
                for info in self.lake.list_files(prefix)
            ]
            return Listing(
                sorted(
                    (f for f in found if not f.key.rsplit("/", 1)[-1].startswith(".")),
                    key=lambda f: f.key,
                )
            )

        return self.memo(self._listings, prefix, read)

    def files(self, prefix: str, suffix: str = ".parquet") -> list[StoredFile]:
        """Files under `prefix` (recursive), sorted by key; hidden scratch files skipped."""
        listing = self.listing(prefix)
        return listing.view(("suffix", suffix), lambda: listing.ending(suffix))

    def partitions(self, asset: str) -> dict[str, Partition]:
        """Built date partitions of an asset's table: `YYYY-MM-DD` -> its part files."""

        def by_date() -> dict[str, Partition]:
            found: dict[str, list[StoredFile]] = {}
            for file in listing.ending(".parquet"):
                folder = file.key.rsplit("/", 2)[-2]
                if folder.startswith("date="):
                    found.setdefault(folder.removeprefix("date="), []).append(file)
            return {day: tuple(files) for day, files in found.items()}

        listing = self.listing(table_dir(asset))
        return listing.view("partitions", by_date)

    def partition(self, asset: str, day: date) -> Partition | None:
        return self.partitions(asset).get(day.isoformat())

    def landing_dates(self, sensor_type: str) -> list[str]:
        """Event dates with landed files of `sensor_type`."""
        base = f"{LANDING}/{sensor_type}"
        folders = {f.key.removeprefix(base + "/").split("/", 1)[0] for f in self.files(base)}
        return sorted(f.removeprefix("date=") for f in folders if f.startswith("date="))

    def landing_files(self, sensor_type: str, day: date, hours: range) -> tuple[StoredFile, ...]:
        """Landing files of the given event hours of one date (partition pruning by path)."""

        def in_hours() -> tuple[StoredFile, ...]:
            wanted = {f"hour={hour:02d}" for hour in hours}
            return tuple(
                f for f in listing.ending(".parquet") if f.key.rsplit("/", 2)[-2] in wanted
            )

        listing = self.listing(landing_dir(sensor_type, day))
        return listing.view(("hours", hours.start, hours.stop), in_hours)

    # tables ---------------------------------------------------------------------------

    def scan(
        self,
        files: Sequence[StoredFile],
        columns: list[str] | None,
        where: ds.Expression | None = None,
        schema: pa.Schema | None = None,
    ) -> pa.Table:
        """Only `columns` of the rows matching `where`, from exactly these files."""
        if not files and schema is not None and columns is not None:
            return pa.table({name: pa.array([], schema.field(name).type) for name in columns})
        dataset = ds.dataset(
            [f.path for f in files], schema=schema, filesystem=self.lake.filesystem
        )
        return dataset.to_table(columns=columns, filter=where)

    def registry(self) -> pa.Table:
        def read() -> pa.Table:
            found = load_registry(self.lake)
            if found.version == 0:
                self.filesystem_info()  # "none imported" only of a lake that can be read
            return found.table

        return self.memo(self._registry, "table", read)

    def sensors(self) -> dict[str, dict[str, Any]]:
        """sensor_id -> its registry row."""
        return self.memo(
            self._registry,
            "by_id",
            lambda: {row["sensor_id"]: row for row in self.registry().to_pylist()},
        )

    # live state -----------------------------------------------------------------------

    def latest(self) -> pa.Table:
        """The newest reading per sensor over every worker's live state."""

        def merged() -> pa.Table:
            files = [f for f in self.files(LIVE) if f.key.endswith("/latest.parquet")]
            tables = [self._read_quietly(f) for f in files]
            tables = [t for t in tables if t is not None]
            if not tables:
                return latest_schema().empty_table()
            table = pa.concat_tables(tables)
            table = table.take(
                pc.sort_indices(table, [("sensor_id", "ascending"), ("seq", "descending")])
            )
            ids = table.column("sensor_id").to_pylist()
            return table.take([i for i, s in enumerate(ids) if i == 0 or ids[i - 1] != s])

        return self.memo(self._live, "latest", merged)

    def live_statuses(self) -> list[dict[str, Any]]:
        """Every worker's `status.json` (one per worker that ever wrote live state)."""

        def read() -> list[dict[str, Any]]:
            statuses = []
            for file in self.files(LIVE, suffix="/status.json"):
                try:
                    statuses.append(orjson.loads(self.lake.read_bytes(file.key)))
                except (OSError, orjson.JSONDecodeError):
                    continue  # replaced while we read it; the next call sees the new one
            return statuses

        return self.memo(self._live, "statuses", read)

    def _read_quietly(self, file: StoredFile) -> pa.Table | None:
        try:
            return self.lake.read_parquet(file.key)
        except (OSError, pa.ArrowInvalid):
            return None  # replaced between listing and reading

    # quality ----------------------------------------------------------------------------

    def quality_dates(self, asset: str) -> list[str]:
        prefix = f"{QUALITY}/{asset}"
        return [
            f.key.rsplit("date=", 1)[1].removesuffix(".json") for f in self.files(prefix, ".json")
        ]

    def quality_record(self, asset: str, day: str) -> dict[str, Any] | None:
        def read() -> dict[str, Any] | None:
            try:
                return orjson.loads(self.lake.read_bytes(quality_key(asset, day)))
            except (OSError, orjson.JSONDecodeError):
                return None

        return self.derived(("quality", asset, day), read)

    def check_failures(self) -> dict[str, int]:
        """`asset/check/severity` -> failures seen by the alert sensor."""

        def read() -> dict[str, int]:
            try:
                return orjson.loads(self.lake.read_bytes(check_failures_key()))
            except (OSError, orjson.JSONDecodeError):
                return {}

        return self.derived(("check_failures",), read)

    def quality_assets(self) -> list[str]:
        assets = {f.key.split("/")[1] for f in self.files(QUALITY, ".json")}
        return sorted(a for a in assets if not a.startswith("_"))  # `_rejected`: not an asset

    def filesystem_info(self) -> list[pafs.FileInfo]:
        """The root's top level (a fresh lake has none): raises if the store cannot be
        reached or the folder cannot be read. A listing, not the root's own info: a local
        root that cannot be read (a link loop, say) reports only "not found" to a stat."""
        selector = pafs.FileSelector(self.lake.root, allow_not_found=True, recursive=False)
        return self.lake.filesystem.get_file_info(selector)
