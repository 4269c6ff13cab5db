"""Spark's part files of a table concatenated into one Parquet file, row groups as bytes.

Spark writes a table in parallel, one part file per task; the lake promises one file per
date partition (the API and the demo open `part-0.parquet`). parquet-mr's
`ParquetFileWriter.appendFile` copies each part's row groups (pages, statistics, indexes)
without decoding them, so the single file costs one sequential copy of the compressed bytes
instead of a single-task write of the whole table.
"""

from __future__ import annotations

from typing import Any

ROW_GROUP_BYTES = 128 * 1024 * 1024


def concatenate(spark: Any, sources: list[str], target: str) -> None:
    """Write the row groups of `sources` (Spark URLs, same schema), in order, to `target`."""
    jvm = spark._jvm
    conf = spark._jsc.hadoopConfiguration()
    hadoop = jvm.org.apache.parquet.hadoop
    files = hadoop.util

    def input_file(url: str) -> Any:
        return files.HadoopInputFile.fromPath(jvm.org.apache.hadoop.fs.Path(url), conf)

    reader = hadoop.ParquetFileReader.open(input_file(sources[0]))
    try:
        meta = reader.getFooter().getFileMetaData()
    finally:
        reader.close()
    writer = hadoop.ParquetFileWriter(
        files.HadoopOutputFile.fromPath(jvm.org.apache.hadoop.fs.Path(target), conf),
        meta.getSchema(),
        getattr(hadoop, "ParquetFileWriter$Mode").OVERWRITE,
        ROW_GROUP_BYTES,
        0,
    )
    writer.start()
    for source in sources:
        writer.appendFile(input_file(source))
    writer.end(meta.getKeyValueMetaData())
