/** The stream's clock: the event-time watermark and its lag behind the server's clock. */

import type { Clock } from "./types";

function timeOf(instant: string): string {
  return new Date(instant).toLocaleString(undefined, {
    dateStyle: "short",
    timeStyle: "medium",
  });
}

export function showClock(clock: Clock): void {
  const box = document.querySelector<HTMLElement>("#clock")!;
  box.dataset.now = clock.now;
  box.dataset.watermark = clock.watermark ?? "";
  box.dataset.lagS = clock.lag_s === null ? "" : String(clock.lag_s);
  document.querySelector("#watermark")!.textContent =
    clock.watermark === null ? "none yet" : timeOf(clock.watermark);
  document.querySelector("#lag")!.textContent =
    clock.lag_s === null ? "–" : `${clock.lag_s.toFixed(1)} s`;
}
