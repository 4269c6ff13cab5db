"""Export: one date partition of a clean or aggregate table, streamed as Parquet or CSV."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import StreamingResponse

from smartcity_api.catalog import EXPORTABLE
from smartcity_api.deps import ReaderDep
from smartcity_api.errors import not_found
from smartcity_api.params import DateRequired
from smartcity_api.responses import error_responses
from smartcity_api.store import LakeReader, Partition

router = APIRouter(prefix="/export", tags=["export"])
CHUNK_BYTES = 1 << 20
BATCH_ROWS = 65_536
MEDIA_TYPES = {"parquet": "application/vnd.apache.parquet", "csv": "text/csv"}


def _parquet_chunks(reader: LakeReader, partition: Partition) -> Iterator[bytes]:
    """A single stored object as is; several part files re-encoded into one Parquet file a
    record batch at a time, so memory stays bounded by one batch."""
    if len(partition) == 1:
        with reader.lake.filesystem.open_input_stream(partition[0].path) as source:
            while chunk := source.read(CHUNK_BYTES):
                yield chunk
        return
    sink = io.BytesIO()
    writer: pq.ParquetWriter | None = None
    for batch in _batches(reader, partition):
        writer = writer or pq.ParquetWriter(sink, batch.schema, compression="zstd")
        writer.write_batch(batch)
        yield _drain(sink)
    if writer is not None:
        writer.close()
    yield _drain(sink)


def _drain(sink: io.BytesIO) -> bytes:
    chunk = sink.getvalue()
    sink.seek(0)
    sink.truncate()
    return chunk


def _batches(reader: LakeReader, partition: Partition) -> Iterator[pa.RecordBatch]:
    """Every row of the partition's part files, a record batch at a time."""
    for file in partition:
        with reader.lake.filesystem.open_input_file(file.path) as source:
            parquet = pq.ParquetFile(source)
            if parquet.metadata.num_rows == 0:
                yield pa.RecordBatch.from_pylist([], schema=parquet.schema_arrow)
            yield from parquet.iter_batches(batch_size=BATCH_ROWS)


def _csv_chunks(reader: LakeReader, partition: Partition) -> Iterator[bytes]:
    """CSV a record batch at a time: memory stays bounded by one batch; one header."""
    options = pacsv.WriteOptions(include_header=True)
    for batch in _batches(reader, partition):
        if batch.num_rows == 0 and not options.include_header:
            continue
        buffer = io.BytesIO()
        pacsv.write_csv(batch, buffer, write_options=options)
        options = pacsv.WriteOptions(include_header=False)
        yield buffer.getvalue()


async def exportable(
    table: Annotated[
        str,
        Path(
            description=f"One of {', '.join(EXPORTABLE)}.",
            max_length=64,
            examples=["clean_traffic"],
        ),
    ],
) -> str:
    """The table, or a 404 naming the known ones. A dependency, so that FastAPI runs it
    before it validates the query: an unknown table is a 404 with or without a `date`."""
    if table not in EXPORTABLE:
        raise not_found(f"table: unknown table {table!r}; one of {', '.join(EXPORTABLE)}")
    return table


@router.get(
    "/{table}",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The partition's rows.",
            "content": {
                media: {"schema": {"type": "string", "format": "binary"}}
                for media in MEDIA_TYPES.values()
            },
        },
        **error_responses(404),
    },
    summary="Download a date partition of a clean or aggregate table",
)
def export(
    reader: ReaderDep,
    table: Annotated[str, Depends(exportable)],
    date: DateRequired,
    format: Annotated[
        Literal["parquet", "csv"],
        Query(description="`parquet` (the stored file) or `csv`.", examples=["csv"]),
    ] = "parquet",
) -> Any:
    partition = reader.partition(table, date)
    if partition is None:
        raise not_found(f"date: {table} has no partition {date} (not built yet)")
    chunks = _parquet_chunks if format == "parquet" else _csv_chunks
    filename = f"{table}-{date}.{format}"
    return StreamingResponse(
        chunks(reader, partition),
        media_type=MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
