"""A segment's valid readings as columns, so windows and rules work per batch, not per reading.

Per-reading Python (dict copies, a method call per rule and per window) was what held the
worker to a fraction of the rate it consumes at. Windows and rules compute on these numpy
columns instead; only the rules whose state truly runs reading by reading (running
baselines) loop, per sensor, over plain floats.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from itertools import pairwise
from typing import Any, overload

import numpy as np
import pyarrow as pa


class Readings:
    """The valid readings of one batch of one sensor type, in offset order, as columns.

    Columns come from the landing table the worker builds anyway (`from_table`, no Python
    per value) or, for a caller holding a few readings, straight from the dicts
    (`from_rows`). `rows` are the readings themselves: a finding quotes a reading's values
    as the reading carried them (an integer stays an integer in the anomaly's JSON).
    """

    def __init__(
        self,
        sensor_type: str,
        rows: Sequence[Mapping[str, Any]],
        event_ms: np.ndarray,
        table: pa.Table | None = None,
    ) -> None:
        self.sensor_type = sensor_type
        self.rows = rows
        self.event_ms = event_ms
        self._table = table
        self._numbers: dict[str, np.ndarray] = {}

    @classmethod
    def from_table(cls, sensor_type: str, table: pa.Table, rows: list[dict[str, Any]]) -> Readings:
        """From a landing table (and the decoded readings it was built from)."""
        event_ms = table.column("event_time").to_numpy().view(np.int64)
        return cls(sensor_type, rows, event_ms, table)

    @classmethod
    def from_rows(
        cls, sensor_type: str, rows: list[dict[str, Any]], event_ms: list[int]
    ) -> Readings:
        return cls(sensor_type, rows, np.array(event_ms, dtype=np.int64))

    @property
    def size(self) -> int:
        return len(self.rows)

    @cached_property
    def _sensor_codes(self) -> tuple[list[str], np.ndarray]:
        """A dict lookup per row: cheaper than a pyarrow kernel call on a segment's size."""
        codes: dict[str, int] = {}
        ids = (
            (row["sensor_id"] for row in self.rows)
            if self._table is None
            else self._table.column("sensor_id").to_pylist()
        )
        sensor = [codes.setdefault(sensor_id, len(codes)) for sensor_id in ids]
        return list(codes), np.array(sensor, dtype=np.int64)

    @property
    def sensor_ids(self) -> list[str]:
        """The distinct sensors of the batch, in the order they first appear."""
        return self._sensor_codes[0]

    @property
    def sensor(self) -> np.ndarray:
        """Per row: the index of its sensor in `sensor_ids`."""
        return self._sensor_codes[1]

    @cached_property
    def groups(self) -> SensorGroups:
        return SensorGroups(self.sensor, len(self.sensor_ids))

    def numbers(self, name: str) -> np.ndarray:
        """A numeric column as float64, NaN where the reading has no value (cached: windows
        and rules read the same measures)."""
        if name not in self._numbers:
            if self._table is None:
                column = np.array([row.get(name) for row in self.rows], dtype=np.float64)
            else:
                column = self._table.column(name).to_numpy().astype(np.float64, copy=False)
            self._numbers[name] = column
        return self._numbers[name]

    def is_integer(self, name: str) -> bool:
        """Whether the readings carry `name` as integers (as the contract's integer fields)."""
        if self._table is not None:
            return pa.types.is_integer(self._table.schema.field(name).type)
        return all(type(row.get(name)) is int for row in self.rows)

    def values(self, name: str) -> np.ndarray:
        """A column as it is: integers stay exact, strings are objects."""
        if self._table is None:
            return np.array([row.get(name) for row in self.rows], dtype=object)
        return self._table.column(name).to_numpy(zero_copy_only=False)


class TableRows(Sequence[Mapping[str, Any]]):
    """A table's rows as readings, each read only where a finding quotes it: the batch
    layer judges whole sensor-days, where a dict per row cost twice the rules' own time."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table

    def __len__(self) -> int:
        return self._table.num_rows

    @overload
    def __getitem__(self, index: int) -> Mapping[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[Mapping[str, Any]]: ...
    def __getitem__(self, index: int | slice) -> Mapping[str, Any] | list[Mapping[str, Any]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return TableRow(self._table, index % len(self))


class TableRow(Mapping[str, Any]):
    """One row of a table, each field read when asked: a finding quotes one or two of a
    reading's fields, and slicing out the whole row cost 50 us, a sixth of the rules' time
    over a sensor-day."""

    def __init__(self, table: pa.Table, index: int) -> None:
        self._table = table
        self._index = index

    def __getitem__(self, name: str) -> Any:
        return self._table.column(name)[self._index].as_py()

    def __iter__(self) -> Iterator[str]:
        return iter(self._table.column_names)

    def __len__(self) -> int:
        return self._table.num_columns


class SensorGroups:
    """Rows grouped by sensor, keeping offset order within each sensor.

    `order` lists the rows sensor by sensor; `first` marks, in that order, each sensor's
    first row; `bounds[k]:bounds[k + 1]` is sensor k's slice of `order`.
    """

    def __init__(self, sensor: np.ndarray, sensors: int) -> None:
        self._sensor = sensor
        self.order = np.argsort(sensor, kind="stable")
        self.sorted_sensor = sensor[self.order]
        self.first = np.ones(len(sensor), dtype=bool)
        self.first[1:] = self.sorted_sensor[1:] != self.sorted_sensor[:-1]
        self.bounds = np.searchsorted(self.sorted_sensor, np.arange(sensors + 1))

    def previous(self, values: np.ndarray, before: np.ndarray) -> np.ndarray:
        """Per row, the value of the same sensor's previous row; `before[k]` for sensor k's
        first row (what the sensor carried in an earlier batch). Works on 1-D and 2-D."""
        ordered = values[self.order]
        shifted = np.empty_like(ordered)
        shifted[1:] = ordered[:-1]
        shifted[self.first] = before[self.sorted_sensor[self.first]]
        result = np.empty_like(shifted)
        result[self.order] = shifted
        return result

    def lists(
        self, values: np.ndarray, where: np.ndarray | None = None
    ) -> tuple[np.ndarray, list[list[Any]]]:
        """For rules that step through a sensor's readings one by one: per sensor its
        values (of the rows `where` holds) in offset order as a plain list, and the rows
        those lists hold, concatenated in the same order."""
        order = self.order if where is None else self.order[where[self.order]]
        edges = np.searchsorted(self._sensor[order], np.arange(len(self.bounds))).tolist()
        flat = values[order].tolist()
        return order, [flat[start:end] for start, end in pairwise(edges)]

    def last_rows(self) -> np.ndarray:
        """Per sensor, its last row."""
        return self.order[self.bounds[1:] - 1]
