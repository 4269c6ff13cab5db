/** The legend: each type's states with the colors style.css gives them. */

import { LEGENDS } from "./state";
import { SENSOR_TYPES } from "./types";

export function buildLegend(): void {
  const legend = document.querySelector<HTMLElement>("#legend")!;
  legend.appendChild(document.createElement("h2")).textContent = "Colors";
  for (const type of SENSOR_TYPES) {
    const row = legend.appendChild(document.createElement("div"));
    row.className = "legend-row";
    row.appendChild(document.createElement("p")).textContent = LEGENDS[type].title;
    for (const state of LEGENDS[type].states) {
      const key = row.appendChild(document.createElement("span"));
      key.className = "legend-key";
      const swatch = key.appendChild(document.createElement("span"));
      swatch.className = "swatch";
      swatch.dataset.sensorType = type;
      swatch.dataset.state = state;
      key.append(state);
    }
  }
  const pulse = legend.appendChild(document.createElement("p"));
  pulse.className = "muted";
  pulse.textContent = "A pulsing marker had an anomaly in the last two minutes; grey: no reading yet.";
}
