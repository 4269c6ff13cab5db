"""Faults on demand: the bad input a real fleet sends, in configurable fractions, counted.

Fractions are per reading: `duplicate=0.01` resends about 1 % of readings. Faults that break
a message (malformed, missing_field, wrong_type, unknown_sensor, out_of_range) and duplicates
are *extra* messages beside the intact reading, so every sensor's valid `seq` values stay
complete and "nothing lost" can still be checked end to end. `late` and `out_of_order` hold
the intact reading back: out of order is sent right after the sensor's next reading, late after
at least `late_by_s` of newer readings (and at least two). Where a fault breaks the contract,
the bounds and required fields come from the contract itself, not from a copy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from simulator.registry import SensorGroup
from smartcity.contract import reading_schema

FAULT_KINDS: tuple[str, ...] = (
    "malformed",
    "missing_field",
    "wrong_type",
    "unknown_sensor",
    "out_of_range",
    "duplicate",
    "late",
    "out_of_order",
)
INTACT = 0
"""Message codes: 0 is an intact reading, `FAULT_KINDS.index(kind) + 1` a fault."""
LATE = FAULT_KINDS.index("late") + 1
OUT_OF_ORDER = FAULT_KINDS.index("out_of_order") + 1
READING_CODES = frozenset({INTACT, LATE, OUT_OF_ORDER})
"""Codes of messages that carry a reading exactly once: what `readings_acknowledged` counts."""
_EXTRA_KINDS = FAULT_KINDS[:6]


class FaultSpecError(ValueError):
    """A `--faults` value the simulator cannot use (the message says which part)."""


@dataclass(frozen=True)
class FaultConfig:
    fractions: dict[str, float] = field(default_factory=dict)
    late_by_s: float = 120.0

    @classmethod
    def parse(cls, spec: str, late_by_s: float = 120.0) -> FaultConfig:
        """`"malformed=0.01,duplicate=0.01"`; `"all=0.01"` sets every kind."""
        fractions: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, sep, value = part.partition("=")
            name = name.strip()
            try:
                fraction = float(value)
            except ValueError:
                fraction = math.nan
            if not sep or (name not in FAULT_KINDS and name != "all") or not 0 <= fraction <= 1:
                raise FaultSpecError(
                    f"--faults {part!r}: expected KIND=FRACTION with FRACTION in 0..1 and KIND "
                    f"one of all, {', '.join(FAULT_KINDS)}"
                )
            for kind in FAULT_KINDS if name == "all" else (name,):
                fractions[kind] = fraction
        if fractions.get("late", 0) + fractions.get("out_of_order", 0) > 1:
            raise FaultSpecError("--faults: late + out_of_order must not exceed 1")
        return cls({k: v for k, v in fractions.items() if v > 0}, late_by_s)

    def fraction(self, kind: str) -> float:
        return self.fractions.get(kind, 0.0)


def _type_rules(sensor_type: str) -> tuple[tuple[str, ...], dict[str, dict[str, Any]]]:
    """Required fields and property rules of one sensor type, read from the contract."""
    schema = reading_schema()
    required = list(schema["required"])
    properties = dict(schema["properties"])
    for branch in schema["allOf"]:
        if branch["if"]["properties"]["sensor_type"]["const"] == sensor_type:
            required += branch["then"]["required"]
            properties.update(branch["then"]["properties"])
    return tuple(required), properties


@dataclass
class _Held:
    key: bytes
    value: bytes
    seq: int
    held_at: int  # step at which the reading was due
    release_at: int


Message = tuple[bytes, bytes, int, int]
"""(key, value, seq, code) of one message to produce."""


class FaultInjector:
    """Turns one time step's intact messages of one sensor type into what goes on the wire."""

    def __init__(
        self,
        group: SensorGroup,
        config: FaultConfig,
        interval_s: float,
        rng: np.random.Generator,
    ) -> None:
        self._group = group
        self._config = config
        self._rng = rng
        self._late_steps = max(2, math.ceil(config.late_by_s / interval_s))
        self._held: dict[int, _Held] = {}
        self._unknown = 0
        required, properties = _type_rules(group.sensor_type)
        self._required = required
        self._numeric = tuple(
            f for f in required if {"number", "integer"} & set(_types(properties[f]))
        )
        self._bounded = tuple(
            (f, rule) for f, rule in properties.items() if "maximum" in rule or "minimum" in rule
        )
        self._active = [kind for kind in _EXTRA_KINDS if config.fraction(kind) > 0]

    @property
    def enabled(self) -> bool:
        return bool(self._config.fractions) or bool(self._held)

    def apply(self, step: int, values: list[bytes], seq: int) -> list[Message]:
        """The messages of this step: intact readings minus held ones, then extras, releases."""
        keys = self._group.keys
        n = len(values)
        rng = self._rng
        free = np.ones(n, dtype=bool)
        free[list(self._held)] = False
        late = free & (rng.random(n) < self._config.fraction("late"))
        free &= ~late
        ooo = free & (rng.random(n) < self._config.fraction("out_of_order"))
        held_now = late | ooo
        for sensor in np.flatnonzero(held_now).tolist():
            wait = self._late_steps if late[sensor] else 1
            self._held[sensor] = _Held(keys[sensor], values[sensor], seq, step, step + wait)
        if held_now.any():
            out = [(keys[i], values[i], seq, INTACT) for i in np.flatnonzero(~held_now).tolist()]
        else:
            out = [(key, value, seq, INTACT) for key, value in zip(keys, values, strict=True)]
        for kind in self._active:
            chosen = np.flatnonzero(rng.random(n) < self._config.fraction(kind))
            if kind == "duplicate":
                chosen = chosen[~held_now[chosen]]
            for sensor in chosen.tolist():
                out.append(self._extra(kind, keys[sensor], values[sensor], seq))
        out.extend(self._release(lambda held: held.release_at <= step, step))
        return out

    def drain(self, last_step: int) -> list[Message]:
        """At the end of a run: send what is still held, coded by what it now is on the wire."""
        return self._release(lambda held: True, last_step)

    def _release(self, due: Callable[[_Held], bool], step: int) -> list[Message]:
        released = [sensor for sensor, held in self._held.items() if due(held)]
        out: list[Message] = []
        for sensor in sorted(released):
            held = self._held.pop(sensor)
            newer = step - held.held_at  # readings of this sensor sent after it
            kind = INTACT if newer == 0 else OUT_OF_ORDER if newer == 1 else LATE
            out.append((held.key, held.value, held.seq, kind))
        return out

    def _extra(self, kind: str, key: bytes, value: bytes, seq: int) -> Message:
        code = FAULT_KINDS.index(kind) + 1
        rng = self._rng
        if kind == "duplicate":
            return key, value, seq, code
        if kind == "malformed":  # cut off in transit: any proper prefix of an object is invalid
            return key, value[: int(rng.integers(1, len(value) - 1))], seq, code
        reading = orjson.loads(value)
        if kind == "missing_field":
            del reading[self._required[int(rng.integers(len(self._required)))]]
        elif kind == "wrong_type":
            name = self._numeric[int(rng.integers(len(self._numeric)))]
            reading[name] = str(reading[name])
        elif kind == "out_of_range":
            name, rule = self._bounded[int(rng.integers(len(self._bounded)))]
            reading[name] = _beyond(rule, float(rng.random()))
        else:  # unknown_sensor
            reading["sensor_id"] = self._group.unknown_id(self._unknown)
            self._unknown += 1
            key = reading["sensor_id"].encode()
        return key, orjson.dumps(reading), seq, code


def _types(rule: dict[str, Any]) -> list[str]:
    kinds = rule.get("type", [])
    return [kinds] if isinstance(kinds, str) else list(kinds)


def _beyond(rule: dict[str, Any], u: float) -> int | float:
    """A value of the right type just outside the rule's bounds (above the maximum if any)."""
    if "maximum" in rule:
        value = rule["maximum"] + 1 + round(u * rule["maximum"])
    else:
        value = rule["minimum"] - 1 - round(u * 50)
    return value if rule.get("type") == "integer" else float(value)
