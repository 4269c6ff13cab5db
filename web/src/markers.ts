/**
 * One marker per registered sensor, colored by its live state.
 *
 * Each marker's element carries `data-sensor-id`, `data-sensor-type`, `data-district`,
 * `data-state` and, while it pulses after an anomaly, `data-pulse` (the anomaly's kind):
 * style.css colors and animates by them, and tests read them.
 */

import L from "leaflet";

import { PowerMeans, UNKNOWN, stateOf } from "./state";
import type { Anomaly, Reading, Sensor } from "./types";

/** How long a marker pulses after its sensor's latest anomaly. */
const PULSE_MS = 120_000;
const ICON_SIZE: L.PointTuple = [14, 14];
const SHOWN_FIELDS: (keyof Reading)[] = [
  "congestion_level",
  "average_speed_kmh",
  "vehicle_count",
  "occupancy_pct",
  "temperature_c",
  "humidity_pct",
  "wind_speed_ms",
  "power_kw",
  "voltage_v",
];

interface Entry {
  sensor: Sensor;
  marker: L.Marker;
  state: string;
  latest?: Reading;
  pulse?: { kind: string; timer: number };
}

export class SensorMarkers {
  private readonly entries = new Map<string, Entry>();
  private readonly layer = L.layerGroup();
  private readonly means = new PowerMeans();

  constructor(map: L.Map, sensors: Sensor[], onSelect: (sensor: Sensor) => void) {
    for (const sensor of sensors) {
      const marker = L.marker([sensor.latitude, sensor.longitude], {
        icon: L.divIcon({
          className: "sensor-marker",
          html: '<span class="shape"></span>',
          iconSize: ICON_SIZE,
        }),
        title: sensor.sensor_id,
      });
      const entry: Entry = { sensor, marker, state: UNKNOWN };
      this.entries.set(sensor.sensor_id, entry);
      // Leaflet makes a new element each time a marker comes back on the map (filters).
      marker.on("add", () => this.render(entry));
      marker.on("click", () => onSelect(sensor));
      marker.bindTooltip(() => this.describe(entry));
      this.layer.addLayer(marker);
    }
    this.layer.addTo(map);
  }

  get size(): number {
    return this.entries.size;
  }

  latest(sensorId: string): Reading | undefined {
    return this.entries.get(sensorId)?.latest;
  }

  sensor(sensorId: string): Sensor | undefined {
    return this.entries.get(sensorId)?.sensor;
  }

  /** The marker shows the newest reading by event time: a late one does not undo it. A
   * reading of a sensor the registry does not hold (yet) is ignored. */
  update(reading: Reading): void {
    const entry = this.entries.get(reading.sensor_id);
    if (entry === undefined) return;
    const latest = entry.latest;
    if (latest !== undefined && Date.parse(latest.event_time) > Date.parse(reading.event_time)) {
      return;
    }
    entry.latest = reading;
    entry.state = stateOf(entry.sensor, reading, this.means);
    this.render(entry);
  }

  pulse(anomaly: Anomaly): void {
    const entry = this.entries.get(anomaly.sensor_id);
    if (entry === undefined) return;
    window.clearTimeout(entry.pulse?.timer);
    const timer = window.setTimeout(() => {
      entry.pulse = undefined;
      this.render(entry);
    }, PULSE_MS);
    entry.pulse = { kind: anomaly.kind, timer };
    this.render(entry);
  }

  /** Shows the sensors `visible` keeps and takes the others off the map; how many are shown. */
  show(visible: (sensor: Sensor) => boolean): number {
    let shown = 0;
    for (const { sensor, marker } of this.entries.values()) {
      if (visible(sensor)) {
        shown += 1;
        if (!this.layer.hasLayer(marker)) this.layer.addLayer(marker);
      } else {
        this.layer.removeLayer(marker);
      }
    }
    return shown;
  }

  private render(entry: Entry): void {
    const element = entry.marker.getElement();
    if (element === undefined) return;
    const data = element.dataset;
    data.sensorId = entry.sensor.sensor_id;
    data.sensorType = entry.sensor.sensor_type;
    data.district = entry.sensor.district;
    data.state = entry.state;
    if (entry.pulse === undefined) delete data.pulse;
    else data.pulse = entry.pulse.kind;
  }

  private describe(entry: Entry): HTMLElement {
    const box = document.createElement("div");
    const { sensor, latest } = entry;
    const lines = [`${sensor.sensor_id} · ${sensor.sensor_type} · ${sensor.district}`];
    lines.push(`state: ${entry.state}`);
    if (latest !== undefined) {
      lines.push(`at ${latest.event_time}`);
      for (const field of SHOWN_FIELDS) {
        if (latest[field] != null) lines.push(`${field}: ${latest[field]}`);
      }
    }
    for (const line of lines) box.appendChild(document.createElement("div")).textContent = line;
    return box;
  }
}
