/** The side list of anomalies as they arrive, newest first: time, sensor, kind, values. */

import type { Anomaly } from "./types";

const KEPT = 200;

function formatValue(value: unknown): string {
  return typeof value === "number" ? String(Math.round(value * 100) / 100) : String(value);
}

export function describeValues(values: Record<string, unknown>): string {
  return Object.entries(values)
    .map(([name, value]) => `${name} ${formatValue(value)}`)
    .join(", ");
}

export class AnomalyList {
  private readonly seen = new Set<string>();

  constructor(
    private readonly list: HTMLOListElement,
    private readonly onSelect: (sensorId: string) => void,
  ) {}

  /** Whether the anomaly is new: the worker may publish one again after a restart. */
  add(anomaly: Anomaly): boolean {
    if (this.seen.has(anomaly.anomaly_id)) return false;
    this.seen.add(anomaly.anomaly_id);
    const item = document.createElement("li");
    item.dataset.anomalyId = anomaly.anomaly_id;
    item.dataset.sensorId = anomaly.sensor_id;
    item.dataset.severity = anomaly.severity;
    const parts: [string, string][] = [
      ["time", new Date(anomaly.event_time).toLocaleTimeString()],
      ["sensor", anomaly.sensor_id],
      ["kind", anomaly.kind],
      ["value", describeValues(anomaly.values ?? {})],
    ];
    for (const [name, text] of parts) {
      const span = item.appendChild(document.createElement("span"));
      span.className = name;
      span.textContent = text;
    }
    item.title = `${anomaly.severity} · ${anomaly.event_time}`;
    item.addEventListener("click", () => this.onSelect(anomaly.sensor_id));
    this.list.prepend(item);
    while (this.list.children.length > KEPT) {
      const last = this.list.lastElementChild as HTMLElement;
      this.seen.delete(last.dataset.anomalyId ?? "");
      last.remove();
    }
    return true;
  }
}
