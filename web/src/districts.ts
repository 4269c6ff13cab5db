/**
 * The city's districts drawn from the registry: the convex hull of each district's sensors.
 * There are no base tiles by default (the page works offline), so these shapes are the map.
 */

import convex from "@turf/convex";
import { featureCollection, point } from "@turf/helpers";
import L from "leaflet";

import type { Sensor } from "./types";

const FILLS = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f"];

export function districtsOf(sensors: Sensor[]): string[] {
  return [...new Set(sensors.map((sensor) => sensor.district))].sort();
}

/** A district with fewer than three sensors in a row has no area: only its markers show it. */
export function drawDistricts(map: L.Map, sensors: Sensor[]): void {
  districtsOf(sensors).forEach((district, index) => {
    const points = sensors
      .filter((sensor) => sensor.district === district)
      .map((sensor) => point([sensor.longitude, sensor.latitude]));
    const hull = convex(featureCollection(points));
    if (hull === null) return;
    const color = FILLS[index % FILLS.length];
    L.geoJSON(hull, {
      interactive: true,
      style: { color, weight: 1.5, fillColor: color, fillOpacity: 0.12, className: "district" },
    })
      .bindTooltip(district, { permanent: true, direction: "center", className: "district-label" })
      .addTo(map);
  });
}
