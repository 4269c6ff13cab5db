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


def _input_file(spark: Any, url: str) -> Any:
    jvm = spark._jvm
    path = jvm.org.apache.hadoop.fs.Path(url)
    return jvm.org.apache.parquet.hadoop.util.HadoopInputFile.fromPath(
        path, spark._jsc.hadoopConfiguration()
    )


def _file_metadata(spark: Any, url: str) -> Any:
    reader = spark._jvm.org.apache.parquet.hadoop.ParquetFileReader.open(_input_file(spark, url))
    try:
        return reader.getFooter().getFileMetaData()
    finally:
        reader.close()


def concatenate(spark: Any, sources: list[str], target: str) -> None:
    """Write the row groups of `sources` (Spark URLs, same schema), in order, to `target`."""
    jvm = spark._jvm
    hadoop = jvm.org.apache.parquet.hadoop
    meta = _file_metadata(spark, sources[0])
    writer = hadoop.ParquetFileWriter(
        hadoop.util.HadoopOutputFile.fromPath(
            jvm.org.apache.hadoop.fs.Path(target), spark._jsc.hadoopConfiguration()
        ),
        meta.getSchema(),
        getattr(hadoop, "ParquetFileWriter$Mode").OVERWRITE,
        ROW_GROUP_BYTES,
        0,
    )
    writer.start()
    for source in sources:
        writer.appendFile(_input_file(spark, source))
    writer.end(meta.getKeyValueMetaData())
