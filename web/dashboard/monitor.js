// The monitor stream (GET /api/monitor/events?deltas=true) through EventSource. The browser
// reconnects by itself with Last-Event-ID after a network blip; when the stream is refused
// (expired token, too many monitors) EventSource gives up, so this asks the server why (the
// same request by fetch, to read the status and error code) and opens a new stream with a
// fresh token after a backoff. A `lagged` event reopens the stream for a fresh snapshot.
//
// Events: `state` (detail: {state: "connecting"|"live"|"reconnecting"|"error", detail}),
// `event` (detail: one monitor event, `live_calls` included), `resync` (events were lost:
// anything built from them should be read again).

import { errorOf } from "./api.js";

const BASE_DELAY_MS = 1000;
const MAX_DELAY_MS = 30_000;

export class Monitor extends EventTarget {
  /** @param {{get(): Promise<string>}} tokens */
  constructor(tokens, { path = "/api/monitor/events", EventSourceImpl = globalThis.EventSource } = {}) {
    super();
    Object.assign(this, { tokens, path, EventSourceImpl });
    this.es = null;
    this.running = false;
    this.failures = 0;
    this.timer = null;
    this.state = "idle";
    this.stats = { opened: 0, events: 0, lagged: 0, reopened: 0 };
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.open();
  }

  stop() {
    this.running = false;
    clearTimeout(this.timer);
    this.close();
    this.setState("idle", "");
  }

  close() {
    if (this.es) {
      this.es.onopen = this.es.onmessage = this.es.onerror = null;
      this.es.close();
      this.es = null;
    }
  }

  async url() {
    const url = new URL(this.path, location.href);
    url.searchParams.set("deltas", "true");
    url.searchParams.set("token", await this.tokens.get());
    return url;
  }

  async open() {
    this.close();
    if (!this.running) return;
    this.setState(this.stats.opened ? "reconnecting" : "connecting", "");
    let url;
    try {
      url = await this.url();
    } catch (e) {
      return this.retry(e.message);
    }
    if (!this.running) return;
    const es = new this.EventSourceImpl(url.href);
    this.es = es;
    this.stats.opened += 1;
    es.onopen = () => {
      this.failures = 0;
      this.setState("live", "");
    };
    es.onmessage = (m) => this.onMessage(m.data);
    es.onerror = () => {
      if (es !== this.es) return;
      if (es.readyState === 2) {
        // CLOSED: refused (not a blip). Find out why, then try again with a fresh token.
        this.close();
        this.diagnose(url).then((why) => this.retry(why));
      } else {
        this.setState("reconnecting", "the stream was interrupted");
      }
    };
  }

  onMessage(data) {
    let ev;
    try {
      ev = JSON.parse(data);
    } catch {
      return;
    }
    this.stats.events += 1;
    if (ev.type === "lagged") {
      this.stats.lagged += 1;
      // Events were lost: a fresh snapshot (a new stream) and a re-read of what is open.
      this.reopen();
      this.dispatchEvent(new CustomEvent("resync", { detail: ev }));
      return;
    }
    this.dispatchEvent(new CustomEvent("event", { detail: ev }));
  }

  /** Closes and opens the stream now (a fresh `live_calls` snapshot follows). */
  reopen() {
    this.stats.reopened += 1;
    clearTimeout(this.timer);
    this.open();
  }

  async diagnose(url) {
    const ctl = new AbortController();
    try {
      const res = await fetch(url, { signal: ctl.signal, cache: "no-store" });
      if (res.ok) return "the stream closed";
      const err = await errorOf(res);
      if (err.status === 401 || err.status === 403) this.tokens.invalidate?.();
      this.lastError = err;
      return err.describe();
    } catch {
      return "the server cannot be reached";
    } finally {
      ctl.abort();
    }
  }

  retry(why) {
    if (!this.running) return;
    this.failures += 1;
    const delay = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** (this.failures - 1));
    this.setState("error", `${why}; retrying in ${Math.round(delay / 1000)} s`);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.open(), delay);
  }

  setState(state, detail) {
    this.state = state;
    this.detail = detail;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, detail } }));
  }
}
