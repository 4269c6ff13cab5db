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
from dataclasses import dataclass


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
        tau, clip = self.tau_s, self.clip
        level, scale, learnt = self.level, self.scale, self.learnt
        learnt_s, last_ms = self.learnt_s, self.last_ms
        levels: list[float] = []
        scales: list[float] = []
        ages: list[float] = []
        for at_ms, value in zip(times_ms, values, strict=True):
            if not after:
                levels.append(level)
                scales.append(scale)
                ages.append(learnt_s)
            if value == value:  # not NaN: something was measured
                learnt += 1
                if learnt == 1:
                    level, scale, last_ms = value, 0.0, at_ms
                else:
                    dt = max(at_ms - last_ms, 0) / 1000
                    last_ms = max(at_ms, last_ms)
                    learnt_s += dt
                    weight = max(1 - math.exp(-dt / tau), 1 / learnt)
                    bound = clip * max(scale, min_scale * abs(level))
                    residual = value - level
                    if bound > 0:
                        residual = max(-bound, min(bound, residual))
                    level += weight * residual
                    scale += weight * (abs(residual) - scale)
            if after:
                levels.append(level)
                scales.append(scale)
                ages.append(learnt_s)
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
        means: list[float] = []
        for at_ms, n, value in zip(times_ms, counts, values, strict=True):
            keep = math.exp(-max(at_ms - last_ms, 0) / 1000 / tau)
            last_ms = max(at_ms, last_ms)
            counted, weighted = counted * keep, weighted * keep
            if value == value and n > 0:
                counted += n
                weighted += n * value
            means.append(weighted / counted if counted > 1e-9 else math.nan)
        self.counted, self.weighted, self.last_ms = counted, weighted, last_ms
        return means
