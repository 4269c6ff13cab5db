"""Asset tables in the lake: one Parquet file per date partition, written, then published.

The file is written by an executor: the partition's DataFrame keeps the parallelism of its
own stages, and one exchange (`repartition(1)`) hands its rows to a single task, which
sorts them by the table's order (so a re-run writes the same rows in the same order,
whatever order the exchange delivered them in) and writes them with Spark's Parquet writer
into a staging folder. Its one part file is then moved to the staged key (a rename on a
local folder, an object copy inside the store on S3), and only `publish_partition` moves it
on to `tables/<asset>/date=D/part-0.parquet`, so readers (the API, DuckDB, the next asset)
see the old file or the new one at a fixed key, never a mix or nothing. A version that fails
a blocking check is moved aside instead (`set_aside`) and the published one stays.

No table passes through the driver: it lists the staging folder, moves files by name and
reads a staged file's footer and first five rows (`describe`).

A re-run writes the same bytes only once the footer is made canonical (`canonical_footer`):
Spark's Parquet writer lists each column chunk's encodings in an order that differs from
one JVM to the next.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyspark.sql import DataFrame

from smartcity.lake import Lake
from smartcity.layout import staged_key, staging_dir, table_partition_key
from smartcity_dagster.spark import spark_url


@dataclass(frozen=True)
class TableWrite:
    """What one partition write produced, for the checks and the materialization's metadata;
    `key` is where the file is now (staged, published or set aside)."""

    key: str
    rows: int
    bytes: int
    uncompressed_bytes: int
    preview: list[dict[str, Any]]
    schema: pa.Schema
    footer: pq.FileMetaData

    @property
    def compression_ratio(self) -> float:
        return self.uncompressed_bytes / self.bytes if self.bytes else 0.0


PREVIEW_BUFFER = 1 << 16


def _token() -> str:
    return uuid.uuid4().hex[:8]


def write_partition(
    frame: DataFrame,
    lake: Lake,
    asset: str,
    day: str,
    order: Sequence[str],
    *,
    exchange: bool = True,
    placed: Callable[[DataFrame], DataFrame] | None = None,
) -> TableWrite:
    """A new version of the partition, staged (see `publish_partition`): `frame` written as
    one file by one task, its rows sorted by `order` (columns that make a row's place
    unique, so a re-run writes the same file).

    With `exchange` (`repartition(1)`), the frame's last stage keeps its tasks and one
    exchange brings their rows to the writing task: for a last stage that computes (a
    window, a join). Without it (`coalesce(1)`), the last stage itself runs as that task:
    for a scan of files, whose rows an exchange would only copy once more (8.64 M landed
    energy readings: 18 s instead of 55 s; a day's clean energy, whose last stage is the
    dedup window: 54 s with the exchange, 161 s without; the 2-core machine, busy, on
    2026-12-04).

    `placed`, when given, is what the writing task makes of its sorted rows before they are
    written (a projection or a broadcast join, which keep their order): the clean tables'
    rows are sorted by their sensor's number and get the registry's strings only then."""
    token = _token()
    parts_dir = f"{staging_dir(asset, day, token)}/parts"
    single = (frame.repartition(1) if exchange else frame.coalesce(1)).sortWithinPartitions(*order)
    if placed is not None:
        single = placed(single)
    single.write.mode("overwrite").parquet(spark_url(lake, parts_dir))
    parts = [info.path for info in lake.list_files(parts_dir) if info.path.endswith(".parquet")]
    if len(parts) != 1:
        raise RuntimeError(f"Spark wrote {len(parts)} Parquet files into {parts_dir}, not one")
    key = staged_key(asset, day, token)
    move_canonical(lake, parts[0], lake.path(key))
    lake.filesystem.delete_dir(lake.path(parts_dir))
    return describe(lake, key)


TAIL = 8
"""A Parquet file ends with its footer's length (4 bytes, little-endian) and `PAR1`."""
MAGIC = b"PAR1"
COPY_CHUNK = 8 << 20
ENCODINGS = (4, 1, 3, 2)
"""Where the footer (Thrift `FileMetaData`) lists a column chunk's encodings, as field ids:
`row_groups` -> `columns` -> `meta_data` -> `encodings` (a list of i32)."""
TRUE, FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(1, 13)
"""The type ids of Thrift's compact protocol, which the footer is written in."""
FIXED_WIDTH = {TRUE: 0, FALSE: 0, BYTE: 1, DOUBLE: 8}
"""Bytes of a value of fixed size (a boolean field's value is in its header)."""


def move_canonical(lake: Lake, source: str, target: str) -> None:
    """Move the Parquet file `source` to `target` (paths of the lake), its footer made
    canonical on the way (`canonical_footer`).

    Only the order inside some lists changes, never a length, so a local file is patched
    where it lies before the rename. An object cannot be changed in place: its body is
    copied, through the driver, with the new footer, which the move's server-side copy
    would otherwise have done. A footer that is canonical already (the JVM's order happened
    to be sorted) is moved as it is.
    """
    fs = lake.filesystem
    with fs.open_input_file(source) as file:
        size = file.size()
        tail = file.read_at(TAIL, size - TAIL)
        if tail[4:] != MAGIC:
            raise RuntimeError(f"{source}: not a Parquet file with a plain footer")
        start = size - TAIL - int.from_bytes(tail[:4], "little")
        footer = file.read_at(size - TAIL - start, start)
    canonical = canonical_footer(footer)
    if canonical == footer:
        fs.move(source, target)
    elif lake.is_local:
        with open(source, "r+b") as file:
            file.seek(start)
            file.write(canonical)
        fs.move(source, target)
    else:
        with fs.open_input_stream(source) as body, fs.open_output_stream(target) as out:
            left = start
            while left:
                chunk = body.read(min(left, COPY_CHUNK))
                if not chunk:
                    raise RuntimeError(f"{source}: ended {left} bytes before its footer")
                out.write(chunk)
                left -= len(chunk)
            out.write(canonical + tail)
        fs.delete_file(source)


def canonical_footer(footer: bytes) -> bytes:
    """The Parquet footer with every column chunk's list of encodings sorted.

    parquet-java (Spark 4.3's writer) collects a chunk's encodings in a `HashSet` of enum
    constants, whose hash codes are identity hashes: which thread first hashes them, and
    how many threads the JVM started before (task slots, JIT and GC threads, more of them
    under load), decides the order the footer lists them in (apache/parquet-java#3215).
    Two builds of the same rows, one with `local[1]` and one with `local[2]`, differed in
    that order only. It means nothing to a reader; sorted, it is the same in every build.
    Each encoding is a one-byte varint, so the footer keeps its length.
    """
    canonical = bytearray(footer)
    for start, stop in encoding_lists(footer):
        canonical[start:stop] = bytes(sorted(footer[start:stop]))
    return bytes(canonical)


def encoding_lists(footer: bytes) -> list[tuple[int, int]]:
    """Where a Parquet footer lists its column chunks' encodings: (start, stop) of each
    list's elements, one byte per encoding."""
    lists: list[tuple[int, int]] = []
    end = _skip(footer, 0, STRUCT, (), lists)
    if end != len(footer):
        raise RuntimeError(f"the Parquet footer has {len(footer) - end} bytes past its end")
    return lists


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _skip(
    data: bytes, pos: int, kind: int, path: tuple[int, ...], lists: list[tuple[int, int]]
) -> int:
    """The position after the Thrift compact value of type `kind` at `pos`, whose field ids
    from the footer's root are `path`; the byte ranges of the encodings lists go to `lists`."""
    if kind in FIXED_WIDTH:
        return pos + FIXED_WIDTH[kind]
    if kind in (I16, I32, I64):
        return _varint(data, pos)[1]
    if kind == BINARY:
        length, pos = _varint(data, pos)
        return pos + length
    if kind in (LIST, SET):
        size, element = data[pos] >> 4, data[pos] & 0x0F
        pos += 1
        if size == 15:
            size, pos = _varint(data, pos)
        start = pos
        for _ in range(size):
            # A boolean element takes a byte of its own.
            pos = pos + 1 if element in (TRUE, FALSE) else _skip(data, pos, element, path, lists)
        if path == ENCODINGS and element == I32:
            if pos - start != size:
                raise RuntimeError("an encoding in the Parquet footer is not a one-byte varint")
            lists.append((start, pos))
        return pos
    if kind == MAP:
        size, pos = _varint(data, pos)
        if size:
            types, pos = data[pos], pos + 1
            for _ in range(size):
                pos = _skip(data, pos, types >> 4, (), lists)
                pos = _skip(data, pos, types & 0x0F, (), lists)
        return pos
    if kind == STRUCT:
        field = 0
        while data[pos]:
            delta, member = data[pos] >> 4, data[pos] & 0x0F
            pos += 1
            if delta:
                field += delta
            else:
                zigzag, pos = _varint(data, pos)
                field = (zigzag >> 1) ^ -(zigzag & 1)
            pos = _skip(data, pos, member, (*path, field), lists)
        return pos + 1
    raise RuntimeError(f"Thrift compact type {kind} in a Parquet footer")


def stage_table(lake: Lake, table: pa.Table, asset: str, day: str) -> TableWrite:
    """A partition computed in the driver (a small table), staged like Spark's."""
    key = staged_key(asset, day, _token())
    lake.write_parquet(key, table)
    return describe(lake, key)


def publish_partition(lake: Lake, staged: TableWrite, asset: str, day: str) -> TableWrite:
    """Replace the published partition by the staged version: one move per partition key."""
    return _move(lake, staged, table_partition_key(asset, day))


def set_aside(lake: Lake, staged: TableWrite, key: str) -> TableWrite:
    """Keep a staged version that must not be published at `key`, out of the tables."""
    return _move(lake, staged, key)


def _move(lake: Lake, staged: TableWrite, key: str) -> TableWrite:
    target = lake.path(key)
    lake.filesystem.create_dir(target.rsplit("/", 1)[0], recursive=True)
    lake.filesystem.move(lake.path(staged.key), target)
    folder = lake.path(staged.key.rsplit("/", 1)[0])
    if lake.filesystem.get_file_info(folder).type != pafs.FileType.NotFound:
        lake.filesystem.delete_dir(folder)
    return replace(staged, key=key)


def describe(lake: Lake, key: str) -> TableWrite:
    """Rows, sizes, the footer (its statistics serve the checks) and a five-row preview,
    from the footer and the first pages only: buffered reads without pre-buffering decode
    a column chunk page by page instead of fetching the whole row group (128 MB)."""
    with lake.filesystem.open_input_file(lake.path(key)) as source:
        parquet = pq.ParquetFile(source, buffer_size=PREVIEW_BUFFER, pre_buffer=False)
        meta = parquet.metadata
        uncompressed = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        first = next(parquet.iter_batches(batch_size=5), None)
        preview = first.to_pylist() if first is not None else []
        size = source.size()
    return TableWrite(key, meta.num_rows, size, uncompressed, preview, parquet.schema_arrow, meta)


def read_partition(spark: Any, lake: Lake, asset: str, day: str) -> DataFrame:
    return spark.read.parquet(spark_url(lake, table_partition_key(asset, day)))
