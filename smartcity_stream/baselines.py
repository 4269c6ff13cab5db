"""Per-sensor baselines in event time, robust to the outliers they are there to judge.

Both smoothers weigh a reading by the time since the one before it, `1 - exp(-dt / tau_s)`,
not by a count of readings: the same time constant means the same thing for a sensor that
reports every second and one that reports every ten minutes.

`Level` is robust exponential smoothing (Gelper, Fried and Croux, "Robust forecasting with
exponential and Holt-Winters smoothing", Journal of Forecasting 29, 2010): the residual is
passed through a Huber function before it is learnt, and the scale it is clipped at is
smoothed the same way (a running mean absolute deviation). A spike moves the level by at
most `clip` scales times the reading's weight; a lasting new level keeps hitting the clip,
which widens the scale geometrically, so it is learnt within a few time constants: outliers
are refused from learning for a bounded time, not for ever.

`Recent` is a time-decayed, count-weighted mean: the mean speed of the vehicles of the last
minutes, however they were split in readings.

State is plain floats (a checkpoint is a JSON object) and each `learn` is one tight loop
over plain lists, state in locals: these run once per reading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Level:
    """A robust level and scale of one measure of one sensor."""

    tau_s: float
    clip: float
    level: float = math.nan
    scale: float = 0.0
    learnt: int = 0
    learnt_s: float = 0.0
    last_ms: int = 0

    def learn(
        self,
        times_ms: list[int],
        values: list[float],
        min_scale: float = 0.0,
        after: bool = False,
    ) -> tuple[list[float], list[float], list[float]]:
        """Take the readings in order; per reading the level and the scale before it (what
        it is judged against; NaN before the first; with `after`, once it is learnt) and how
        long the level had learnt by then (seconds). NaN values are skipped. `min_scale`: a
        floor for the clip, as a share of the level (a steady signal's scale would otherwise
        shrink to nothing); a `clip` of 0 clips nothing (a plain smoother).

        Until the weight by time exceeds it, a reading weighs 1/n (a plain mean of the first
        n): no bias towards the first reading.
        """
        tau, clip, exp = self.tau_s, self.clip, math.exp
        level, scale, learnt = self.level, self.scale, self.learnt
        learnt_s, last_ms = self.learnt_s, self.last_ms
        levels: list[float] = []
        scales: list[float] = []
        ages: list[float] = []
        keep_level, keep_scale, keep_age = levels.append, scales.append, ages.append
        last_dt, by_time = -1.0, 0.0  # the weight by time of the last gap (most repeat)
        for at_ms, value in zip(times_ms, values, strict=True):
            if not after:
                keep_level(level)
                keep_scale(scale)
                keep_age(learnt_s)
            if value == value:  # not NaN: something was measured
                learnt += 1
                if learnt == 1:
                    level, scale, last_ms = value, 0.0, at_ms
                else:
                    dt = (at_ms - last_ms) / 1000 if at_ms > last_ms else 0.0
                    if at_ms > last_ms:
                        last_ms = at_ms
                    learnt_s += dt
                    if dt != last_dt:
                        last_dt, by_time = dt, 1 - exp(-dt / tau)
                    weight = by_time if by_time * learnt > 1 else 1 / learnt
                    residual = value - level
                    if clip:
                        floor = min_scale * (level if level > 0 else -level)
                        bound = clip * (scale if scale > floor else floor)
                        if bound <= 0:
                            pass  # nothing learnt to clip at yet
                        elif residual > bound:
                            residual = bound
                        elif residual < -bound:
                            residual = -bound
                    level += weight * residual
                    scale += weight * ((residual if residual > 0 else -residual) - scale)
            if after:
                keep_level(level)
                keep_scale(scale)
                keep_age(learnt_s)
        self.level, self.scale, self.learnt = level, scale, learnt
        self.learnt_s, self.last_ms = learnt_s, last_ms
        return levels, scales, ages


@dataclass
class Recent:
    """The count-weighted mean of a value over the last `tau_s` (time-decayed sums)."""

    tau_s: float
    counted: float = 0.0
    weighted: float = 0.0
    last_ms: int = 0

    def learn(self, times_ms: list[int], counts: list[float], values: list[float]) -> list[float]:
        """Per reading, after it: the mean (NaN while no counted reading had a value)."""
        tau, counted, weighted, last_ms = self.tau_s, self.counted, self.weighted, self.last_ms
        exp = math.exp
        means: list[float] = []
        keep_mean = means.append
        last_gap, keep = -1, 1.0  # the decay of the last gap (most repeat)
        for at_ms, n, value in zip(times_ms, counts, values, strict=True):
            gap = at_ms - last_ms if at_ms > last_ms else 0
            if gap != last_gap:
                last_gap, keep = gap, exp(-gap / 1000 / tau)
            if at_ms > last_ms:
                last_ms = at_ms
            counted, weighted = counted * keep, weighted * keep
            if value == value and n > 0:
                counted += n
                weighted += n * value
            keep_mean(weighted / counted if counted > 1e-9 else math.nan)
        self.counted, self.weighted, self.last_ms = counted, weighted, last_ms
        return means


HOUR_MS = 3_600_000
WEEK_HOURS = 168


@dataclass
class Seasonal:
    """What a measure usually is at this hour of the week: each hour's mean, learnt across
    weeks (the last `week_weight` of it from the latest week), read between the centres of
    the two nearest hours, so a morning ramp is a slope and not a step.

    Hours are of the week in UTC: a city's change to or from summer time shifts its rhythm
    by an hour for the weeks it takes to learn it again.
    """

    week_weight: float = 0.3
    means: np.ndarray = field(default_factory=lambda: np.full(WEEK_HOURS, np.nan))
    weeks: np.ndarray = field(default_factory=lambda: np.zeros(WEEK_HOURS))
    hour: int = -1  # the hour being summed (hours since the epoch)
    total: float = 0.0
    count: int = 0

    def learn(self, times_ms: list[int], values: list[float]) -> list[float]:
        """Take the readings in order; per reading the expectation for its time (NaN until
        both hours around it have been learnt once). NaN values are skipped."""
        expected: list[float] = []
        keep = expected.append
        means = self.means
        hour, total, count = self.hour, self.total, self.count  # the hour being summed
        pair_of, low, high = None, math.nan, math.nan  # the two hours around the last reading
        for at_ms, value in zip(times_ms, values, strict=True):
            if at_ms // HOUR_MS != hour:
                self._close_hour(hour, total, count)
                hour, total, count, pair_of = at_ms // HOUR_MS, 0.0, 0, None
            centred = at_ms / HOUR_MS - 0.5
            before = int(centred // 1)
            if before != pair_of:
                pair_of = before
                low = float(means[before % WEEK_HOURS])
                high = float(means[(before + 1) % WEEK_HOURS])
            keep(low + (centred - before) * (high - low))  # NaN while either is unknown
            if value == value:
                total += value
                count += 1
        self.hour, self.total, self.count = hour, total, count
        return expected

    def to_state(self) -> dict[str, Any]:
        """JSON values (copies: the checkpoint is written while learning goes on; orjson
        writes the arrays with OPT_SERIALIZE_NUMPY, NaN as null)."""
        return {
            "week_weight": self.week_weight,
            "means": self.means.copy(),
            "weeks": self.weeks.copy(),
            "hour": self.hour,
            "total": self.total,
            "count": self.count,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Seasonal:
        return cls(
            state["week_weight"],
            np.array(state["means"], dtype=np.float64),
            np.array(state["weeks"], dtype=np.float64),
            state["hour"],
            state["total"],
            state["count"],
        )

    def _close_hour(self, hour: int, total: float, count: int) -> None:
        """The hour's mean into its slot of the week."""
        if count:
            mean = total / count
            slot = hour % WEEK_HOURS
            weeks = self.weeks[slot] = self.weeks[slot] + 1
            known = self.means[slot]
            self.means[slot] = (
                mean if weeks == 1 else known + max(1 / weeks, self.week_weight) * (mean - known)
            )
