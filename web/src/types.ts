/** The shapes the API sends (docs/api.md, docs/map.md). */

export type SensorType = "traffic" | "weather" | "energy";
export const SENSOR_TYPES: readonly SensorType[] = ["traffic", "weather", "energy"];

/** A registry row (`GET /api/v1/sensors`). */
export interface Sensor {
  sensor_id: string;
  sensor_type: SensorType;
  district: string;
  latitude: number;
  longitude: number;
  speed_limit_kmh?: number | null;
  capacity_vph?: number | null;
  feeder_capacity_kw?: number | null;
  nominal_voltage_v?: number | null;
}

/** A reading: the registry's identity plus its type's measurements. */
export interface Reading {
  sensor_id: string;
  sensor_type: SensorType;
  event_time: string;
  seq: number;
  congestion_level?: "low" | "medium" | "high" | "severe";
  vehicle_count?: number;
  average_speed_kmh?: number | null;
  occupancy_pct?: number;
  temperature_c?: number;
  humidity_pct?: number;
  pressure_hpa?: number;
  wind_speed_ms?: number;
  precipitation_mm?: number;
  power_kw?: number;
  voltage_v?: number;
  current_a?: number;
  energy_kwh?: number;
}

/** An anomaly as the stream worker publishes it. */
export interface Anomaly {
  anomaly_id: string;
  sensor_id: string;
  sensor_type: SensorType;
  kind: string;
  severity: string;
  event_time: string;
  values: Record<string, unknown>;
}

/** The stream's clock: the event-time watermark and its lag behind the server's clock. */
export interface Clock {
  now: string;
  watermark: string | null;
  lag_s: number | null;
}
