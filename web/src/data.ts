/** What the page reads from the REST API: the registry, the latest readings, one sensor's hour. */

import { getJson } from "./api";
import type { Reading, Sensor } from "./types";

const REGISTRY_PAGE = 1000; // the API's largest page of the registry
const LATEST_LIMIT = 10_000; // the API's largest `limit`
const HISTORY_LIMIT = 10_000;

interface SensorPage {
  items: Sensor[];
  total: number;
}

export async function loadRegistry(): Promise<Sensor[]> {
  const sensors: Sensor[] = [];
  for (let offset = 0; ; offset += REGISTRY_PAGE) {
    const page = await getJson<SensorPage>("sensors", { limit: REGISTRY_PAGE, offset });
    sensors.push(...page.items);
    if (page.items.length === 0 || sensors.length >= page.total) return sensors;
  }
}

export async function loadLatest(): Promise<Reading[]> {
  return (await getJson<{ items: Reading[] }>("sensors/latest", { limit: LATEST_LIMIT })).items;
}

/** Every reading of the sensor in [start, end), following the API's cursor. */
export async function loadHistory(sensorId: string, start: Date, end: Date): Promise<Reading[]> {
  const readings: Reading[] = [];
  const params: Record<string, string | number> = {
    start: start.toISOString(),
    end: end.toISOString(),
    limit: HISTORY_LIMIT,
  };
  for (;;) {
    const path = `sensors/${encodeURIComponent(sensorId)}/readings`;
    const page = await getJson<{ items: Reading[]; next_cursor: string | null }>(path, params);
    readings.push(...page.items);
    if (page.next_cursor === null) return readings;
    params.cursor = page.next_cursor;
  }
}
