/**
 * A sensor's last hour as a small chart (uPlot), opened by a click on its marker. The hour
 * ends at the sensor's newest reading (now, for a sensor reporting live), and readings that
 * arrive while the chart is open are added to it.
 */

import uPlot from "uplot";

import { loadHistory } from "./data";
import { CHARTED } from "./state";
import type { Reading, Sensor } from "./types";

const HOUR_MS = 3_600_000;
const SIZE = { width: 420, height: 180 };

export class SensorChart {
  private plot?: uPlot;
  private sensor?: Sensor;
  private times: number[] = [];
  private values: (number | null)[] = [];
  private readonly panel = document.querySelector<HTMLElement>("#chart-panel")!;
  private readonly target = document.querySelector<HTMLElement>("#chart")!;
  private readonly note = document.querySelector<HTMLElement>("#chart-note")!;

  constructor() {
    document.querySelector("#chart-close")!.addEventListener("click", () => this.close());
  }

  async open(sensor: Sensor, latest: Reading | undefined): Promise<void> {
    this.close();
    this.sensor = sensor;
    const charted = CHARTED[sensor.sensor_type];
    document.querySelector("#chart-title")!.textContent = `${sensor.sensor_id} · ${charted.label}`;
    this.panel.dataset.sensorId = sensor.sensor_id;
    this.panel.hidden = false;
    this.note.textContent = "loading the last hour…";
    const newest = latest === undefined ? Date.now() : Date.parse(latest.event_time);
    const end = new Date(newest + 1); // the API's range leaves its end out
    let readings: Reading[];
    try {
      readings = await loadHistory(sensor.sensor_id, new Date(newest - HOUR_MS), end);
    } catch (error) {
      this.note.textContent = `the last hour could not be read: ${(error as Error).message}`;
      return;
    }
    if (this.sensor !== sensor) return; // another sensor was opened meanwhile
    this.times = readings.map((reading) => Date.parse(reading.event_time) / 1000);
    this.values = readings.map((reading) => valueOf(reading, charted.field));
    this.plot = new uPlot(
      {
        ...SIZE,
        series: [{}, { label: charted.label, stroke: "#1f5fa8", width: 1.5, spanGaps: false }],
        legend: { show: false },
      },
      [this.times, this.values],
      this.target,
    );
    this.note.textContent = `${readings.length} readings stored in the hour to ${end.toLocaleTimeString()}`;
    this.panel.dataset.readings = String(readings.length);
  }

  /** A live reading of the open sensor joins the chart. */
  add(reading: Reading): void {
    if (this.plot === undefined || this.sensor?.sensor_id !== reading.sensor_id) return;
    const time = Date.parse(reading.event_time) / 1000;
    if (this.times.length > 0 && time <= this.times[this.times.length - 1]) return;
    this.times.push(time);
    this.values.push(valueOf(reading, CHARTED[this.sensor.sensor_type].field));
    this.plot.setData([this.times, this.values]);
  }

  close(): void {
    this.plot?.destroy();
    this.plot = undefined;
    this.sensor = undefined;
    this.panel.hidden = true;
    delete this.panel.dataset.readings;
  }
}

function valueOf(reading: Reading, field: keyof Reading): number | null {
  const value = reading[field];
  return typeof value === "number" ? value : null;
}
