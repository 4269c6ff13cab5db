/**
 * The live stream, `GET /api/v1/live/stream` (Server-Sent Events), read with fetch so that it
 * can send the API key header, which `EventSource` cannot. It reconnects after any failure;
 * a 401 asks for the key again.
 */

import { fetchEventSource } from "@microsoft/fetch-event-source";

import { Unauthorized, apiUrl, authHeaders } from "./api";
import { withKey } from "./auth";
import type { Anomaly, Clock, Reading } from "./types";

const RETRY_MS = 1000;

export interface LiveHandlers {
  reading(reading: Reading): void;
  anomaly(anomaly: Anomaly): void;
  clock(clock: Clock): void;
  status(state: "open" | "reconnecting", detail: string): void;
}

class Closed extends Error {}

function connect(handlers: LiveHandlers): Promise<void> {
  return fetchEventSource(apiUrl("live/stream"), {
    headers: { Accept: "text/event-stream", ...authHeaders() },
    // An operator's wall screen keeps its stream when the tab is not in front.
    openWhenHidden: true,
    async onopen(response) {
      if (response.status === 401) throw new Unauthorized("live/stream");
      const type = response.headers.get("content-type") ?? "";
      if (!response.ok || !type.startsWith("text/event-stream")) {
        throw new Closed(`live stream: ${response.status} ${type}`);
      }
      handlers.status("open", "live");
    },
    onmessage(message) {
      // Comments (keep-alives) reach here as messages without an event name: skipped.
      if (message.event === "reading") handlers.reading(JSON.parse(message.data));
      else if (message.event === "anomaly") handlers.anomaly(JSON.parse(message.data));
      else if (message.event === "clock") handlers.clock(JSON.parse(message.data));
    },
    onclose() {
      throw new Closed("live stream: closed by the server");
    },
    onerror(error) {
      if (error instanceof Unauthorized) throw error;
      handlers.status("reconnecting", String(error instanceof Error ? error.message : error));
      return RETRY_MS;
    },
  });
}

/** Follows the stream for as long as the page is open. */
export function followLive(handlers: LiveHandlers): void {
  void withKey(() => connect(handlers));
}
