/**
 * A sensor's live state from its newest reading: the word a marker shows as `data-state`
 * and colors by (style.css). Traffic and energy share one four-step scale; weather has a
 * temperature scale of its own.
 */

import type { Reading, Sensor, SensorType } from "./types";

export const UNKNOWN = "unknown";
export const LOAD_SCALE = ["low", "medium", "high", "severe"] as const;
export const TEMPERATURE_SCALE = ["freezing", "cold", "mild", "warm", "hot"] as const;

/** Upper bounds of the temperature bands, in °C. */
const TEMPERATURE_BOUNDS = [0, 10, 20, 28];
/** Upper bounds of power / feeder capacity for low, medium, high; at capacity or above: severe. */
const CAPACITY_BOUNDS = [0.5, 0.8, 1.0];
/** Upper bounds of power / the sensor's running mean; 2x is where the worker sees a spike. */
const MEAN_BOUNDS = [1.25, 1.6, 2.0];
/** Weight of the newest reading in the running mean of a sensor with no feeder capacity. */
const MEAN_WEIGHT = 0.1;

export interface Legend {
  title: string;
  states: readonly string[];
}

export const LEGENDS: Record<SensorType, Legend> = {
  traffic: { title: "traffic: congestion level", states: LOAD_SCALE },
  energy: { title: "energy: load against feeder capacity (or own mean)", states: LOAD_SCALE },
  weather: { title: "weather: temperature (<0, <10, <20, <28, ≥28 °C)", states: TEMPERATURE_SCALE },
};

function band<T>(value: number, bounds: number[], names: readonly T[]): T {
  const at = bounds.findIndex((bound) => value < bound);
  return names[at === -1 ? bounds.length : at];
}

/** The energy sensors' running means of power, for those the registry gives no capacity. */
export class PowerMeans {
  private readonly means = new Map<string, number>();

  /** The reading's power against the mean before it, then the reading joins the mean. */
  ratio(sensorId: string, powerKw: number): number {
    const mean = this.means.get(sensorId);
    this.means.set(
      sensorId,
      mean === undefined ? powerKw : mean + MEAN_WEIGHT * (powerKw - mean),
    );
    return mean === undefined || mean <= 0 ? 1 : powerKw / mean;
  }
}

export function stateOf(sensor: Sensor, reading: Reading, means: PowerMeans): string {
  switch (sensor.sensor_type) {
    case "traffic":
      return reading.congestion_level ?? UNKNOWN;
    case "weather":
      return reading.temperature_c == null
        ? UNKNOWN
        : band(reading.temperature_c, TEMPERATURE_BOUNDS, TEMPERATURE_SCALE);
    case "energy": {
      if (reading.power_kw == null) return UNKNOWN;
      const capacity = sensor.feeder_capacity_kw;
      return capacity
        ? band(reading.power_kw / capacity, CAPACITY_BOUNDS, LOAD_SCALE)
        : band(means.ratio(sensor.sensor_id, reading.power_kw), MEAN_BOUNDS, LOAD_SCALE);
    }
  }
}

/** The measurement the chart plots for each type, with its unit. */
export const CHARTED: Record<SensorType, { field: keyof Reading; label: string }> = {
  traffic: { field: "average_speed_kmh", label: "average speed (km/h)" },
  weather: { field: "temperature_c", label: "temperature (°C)" },
  energy: { field: "power_kw", label: "power (kW)" },
};
