// Today's figures from GET /api/stats?from=<local midnight>: calls, live now, median duration,
// median voice-to-voice, and the share of replies the caller interrupted; refreshed every 30 s.

import { clock, localMidnight, millis, percent } from "./format.js";

const REFRESH_MS = 30_000;

export class TodayStats {
  /**
   * @param {Record<string, HTMLElement>} fields  dd elements by field name
   * @param {HTMLElement} caption
   * @param {{api: import("./api.js").Api}} o
   */
  constructor(fields, caption, { api }) {
    Object.assign(this, { fields, caption, api });
    this.timer = null;
    this.last = null;
    this.error = null;
  }

  start() {
    this.stop();
    this.refresh();
    this.timer = setInterval(() => this.refresh(), REFRESH_MS);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
  }

  async refresh() {
    try {
      const s = await this.api.get("/api/stats", { from: localMidnight() });
      this.last = s;
      this.error = null;
      this.show({
        calls: String(s.calls ?? "–"),
        live_now: String(s.live_now ?? "–"),
        median_duration_ms: clock(s.median_duration_ms),
        median_voice_to_voice_ms: millis(s.median_voice_to_voice_ms),
        interrupted_share: percent(s.interrupted_share),
      });
      const replies = s.replies ? ` ${s.replies_interrupted} of ${s.replies} replies interrupted.` : "";
      this.caption.textContent = `Since midnight, updated ${new Date().toLocaleTimeString()}.${replies}`;
    } catch (e) {
      this.error = e;
      this.caption.textContent = `Figures unavailable: ${e.describe ? e.describe() : e.message}`;
    }
  }

  show(values) {
    for (const [field, dd] of Object.entries(this.fields)) dd.textContent = values[field] ?? "–";
  }

  clear() {
    this.last = null;
    this.show({});
    this.caption.textContent = "";
  }
}
