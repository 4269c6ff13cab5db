/** The live city map: the registry drawn once, then kept current by the live stream. */

import "leaflet/dist/leaflet.css";
import "uplot/dist/uPlot.min.css";
import "./style.css";

import L from "leaflet";

import { withKey } from "./auth";
import { SensorChart } from "./chart";
import { showClock } from "./clock";
import { loadLatest, loadRegistry } from "./data";
import { drawDistricts } from "./districts";
import { buildFilters } from "./filters";
import { buildLegend } from "./legend";
import { AnomalyList } from "./anomalies";
import { followLive } from "./live";
import { SensorMarkers } from "./markers";
import type { Sensor } from "./types";

/** An XYZ tile server for a deployment that has one (docs/map.md); none by default. */
const TILE_URL = import.meta.env.VITE_MAP_TILE_URL ?? "";
const TILE_ATTRIBUTION = import.meta.env.VITE_MAP_TILE_ATTRIBUTION ?? "";

function showError(message: string): void {
  const box = document.querySelector<HTMLElement>("#error")!;
  box.textContent = message;
  box.hidden = false;
}

function setLive(state: string, detail: string): void {
  const status = document.querySelector<HTMLElement>("#live-status")!;
  status.dataset.live = state;
  status.textContent = state === "open" ? "live" : "reconnecting…";
  status.title = detail;
}

async function start(): Promise<void> {
  const sensors = await withKey(loadRegistry);
  const map = L.map("map", { zoomSnap: 0.25, attributionControl: TILE_URL !== "" });
  if (TILE_URL !== "") L.tileLayer(TILE_URL, { attribution: TILE_ATTRIBUTION }).addTo(map);
  if (sensors.length === 0) {
    map.setView([0, 0], 2);
    showError("The registry holds no sensor yet: import one (docs/lake.md).");
    return;
  }
  drawDistricts(map, sensors);
  const chart = new SensorChart();
  const markers = new SensorMarkers(map, sensors, (sensor: Sensor) => {
    void chart.open(sensor, markers.latest(sensor.sensor_id));
  });
  map.fitBounds(
    L.latLngBounds(sensors.map((sensor) => [sensor.latitude, sensor.longitude])),
    { padding: [24, 24] },
  );
  const count = document.querySelector<HTMLElement>("#shown-count")!;
  const filtered = (shown: number) => {
    count.textContent = `${shown} of ${markers.size} sensors shown`;
  };
  filtered(markers.size);
  buildFilters(sensors, (visible) => filtered(markers.show(visible)));
  buildLegend();
  const anomalies = new AnomalyList(
    document.querySelector<HTMLOListElement>("#anomaly-list")!,
    (sensorId) => {
      const sensor = markers.sensor(sensorId);
      if (sensor === undefined) return;
      map.panTo([sensor.latitude, sensor.longitude]);
      void chart.open(sensor, markers.latest(sensorId));
    },
  );
  // The stream first, so that nothing sent while the latest readings load is missed; an
  // older reading that arrives after a newer one does not undo it (SensorMarkers.update).
  followLive({
    reading(reading) {
      markers.update(reading);
      chart.add(reading);
    },
    anomaly(anomaly) {
      if (anomalies.add(anomaly)) markers.pulse(anomaly);
    },
    clock: showClock,
    status: setLive,
  });
  for (const reading of await withKey(loadLatest)) markers.update(reading);
  document.body.dataset.ready = "true";
}

start().catch((error: Error) => showError(`The map could not start: ${error.message}`));
