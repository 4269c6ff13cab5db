"""Registry files a city keeps: CSV, Parquet or GeoJSON, read into rows and written back.

Reading only turns each format into plain rows, each labelled the way its format counts
(`line 4` of a CSV, `row 3` of a Parquet file, `feature 2` of a GeoJSON collection);
judging the rows is the contract's job. CSV cells are text, so they are turned into the
JSON type the contract names for their column first; a cell that does not convert stays
text and the contract then says what it should have been.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from smartcity.registry.contract import REGISTRY_SCHEMA, RegistryError, field_types, table_rows

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".geojson": "geojson"}
FORMATS[".json"] = "geojson"
_TRUE, _FALSE = {"true", "1", "yes", "y", "t"}, {"false", "0", "no", "n", "f"}
LabelledRow = tuple[str, dict[str, Any]]


def file_format(path: Path, given: str | None = None) -> str:
    """`csv`, `parquet` or `geojson`: as given, else from the file's suffix."""
    if given is not None:
        if given not in set(FORMATS.values()):
            raise RegistryError([f"format {given!r}: expected csv, parquet or geojson"])
        return given
    found = FORMATS.get(path.suffix.lower())
    if found is None:
        raise RegistryError(
            [f"{path.name}: unknown suffix {path.suffix!r}, expected .csv, .parquet or .geojson"]
        )
    return found


def read_rows(path: Path, fmt: str | None = None) -> list[LabelledRow]:
    """Every row of a registry file, labelled for error messages."""
    kind = file_format(path, fmt)
    try:
        if kind == "csv":
            return list(_csv_rows(path.read_text(encoding="utf-8-sig")))
        if kind == "parquet":
            return _parquet_rows(pq.read_table(path))
        return list(_geojson_rows(path.read_bytes()))
    except (OSError, UnicodeDecodeError, pa.ArrowException, orjson.JSONDecodeError) as error:
        raise RegistryError([f"{path.name}: cannot be read as {kind}: {error}"]) from None


def _present(row: Mapping[str, Any]) -> dict[str, Any]:
    """An empty cell is a missing value, so the contract names a required one as missing."""
    return {name: value for name, value in row.items() if value is not None and value != ""}


def _csv_cell(name: str, text: str) -> Any:
    kinds = field_types(name) if name in REGISTRY_SCHEMA.names else ["string"]
    text = text.strip()
    if text == "":
        return None
    if "boolean" in kinds and text.lower() in _TRUE | _FALSE:
        return text.lower() in _TRUE
    if "integer" in kinds:
        try:
            return int(text)
        except ValueError:
            return text
    if "number" in kinds:
        try:
            return float(text)
        except ValueError:
            return text
    return text


def _csv_rows(text: str) -> Iterator[LabelledRow]:
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        raise RegistryError(["the CSV file is empty: expected a header line"])
    for record in reader:
        if None in record:
            raise RegistryError([f"line {reader.line_num}: more cells than header columns"])
        cells = {name: _csv_cell(name, value or "") for name, value in record.items()}
        yield f"line {reader.line_num}", _present(cells)


def _parquet_rows(table: pa.Table) -> list[LabelledRow]:
    return [(f"row {number}", _present(row)) for number, row in enumerate(table_rows(table), 1)]


def _geojson_rows(data: bytes) -> Iterator[LabelledRow]:
    document = orjson.loads(data)
    if not isinstance(document, dict) or document.get("type") != "FeatureCollection":
        raise RegistryError(["the GeoJSON file is not a FeatureCollection"])
    for number, feature in enumerate(document.get("features") or [], start=1):
        label = f"feature {number}"
        geometry = feature.get("geometry") if isinstance(feature, dict) else None
        coordinates = geometry.get("coordinates") if isinstance(geometry, dict) else None
        if (
            not isinstance(geometry, dict)
            or geometry.get("type") != "Point"
            or not isinstance(coordinates, list)
            or len(coordinates) < 2
        ):
            raise RegistryError([f"{label}, geometry: expected a Point [longitude, latitude]"])
        properties = dict(feature.get("properties") or {})
        properties["longitude"], properties["latitude"] = coordinates[0], coordinates[1]
        yield label, _present(properties)


def write_table(table: pa.Table, fmt: str) -> bytes:
    """The registry in one of the formats `read_rows` takes back."""
    if fmt == "parquet":
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        return sink.getvalue()
    rows = table_rows(table)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=REGISTRY_SCHEMA.names, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: _csv_text(v) for k, v in row.items()} for row in rows)
        return out.getvalue().encode()
    features = []
    for row in rows:
        longitude, latitude = row.pop("longitude"), row.pop("latitude")
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [longitude, latitude]},
                "properties": {k: v for k, v in row.items() if v is not None},
            }
        )
    return orjson.dumps({"type": "FeatureCollection", "features": features})


def _csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
