// The socket to /ws: authenticates with the `bearer.<token>` subprotocol, parses JSON frames,
// sends a `ping` heartbeat and treats a missing `pong` as a dead connection, and reconnects
// with exponential backoff (with jitter) whenever the socket is lost.
//
// Events: `state` (detail: {state, detail}), `message` (detail: a server message),
// `down` (detail: {reason, code, wasReady}) when a socket is lost.

export const PROTOCOL = "voxwire.v1";

export class Connection extends EventTarget {
  /**
   * @param {object} o
   * @param {string} o.url                  ws:// or wss:// address of /ws
   * @param {{get(): Promise<string>, invalidate(): void}} o.tokens
   * @param {number} [o.pingMs]             heartbeat interval
   * @param {number} [o.pongTimeoutMs]      no pong by then: the connection is dead
   * @param {number} [o.openTimeoutMs]      no `connected` by then: the attempt failed
   * @param {number} [o.baseDelayMs]        first reconnect delay, doubled per failure
   * @param {number} [o.maxDelayMs]         longest reconnect delay
   * @param {typeof WebSocket} [o.WebSocketImpl]
   * @param {() => number} [o.random]      jitter source in [0, 1)
   */
  constructor({
    url,
    tokens,
    pingMs = 10_000,
    pongTimeoutMs = 10_000,
    openTimeoutMs = 15_000,
    baseDelayMs = 500,
    maxDelayMs = 15_000,
    WebSocketImpl = globalThis.WebSocket,
    random = Math.random,
  }) {
    super();
    Object.assign(this, { url, tokens, pingMs, pongTimeoutMs, openTimeoutMs });
    Object.assign(this, { baseDelayMs, maxDelayMs, WebSocketImpl, random });
    this.state = "idle";
    this.detail = "";
    this.running = false;
    this.ws = null;
    /** True between `connected` and the loss of the socket: frames may be sent. */
    this.ready = false;
    this.failures = 0;
    this.everConnected = false;
    this.pingId = 0;
    this.awaitingPong = null;
    this.stats = { opened: 0, lost: 0, pings: 0, pongs: 0 };
  }

  /** Connects, and keeps reconnecting until `stop()`. */
  start() {
    if (this.running) return;
    this.running = true;
    this.open();
  }

  /** Closes the socket for good (code 1000). */
  stop() {
    this.running = false;
    this.clearTimers();
    const ws = this.ws;
    this.ws = null;
    this.ready = false;
    if (ws) {
      detach(ws);
      ws.close(1000);
    }
    this.setState("closed", "");
  }

  /** Tries again now instead of waiting out the backoff (say, after a new token). */
  retryNow() {
    if (!this.running) return this.start();
    if (this.ws) return;
    clearTimeout(this.retryTimer);
    this.failures = 0;
    this.open();
  }

  /** Reconnects at once (say, with a new token), dropping the socket there is. */
  reconnect() {
    if (!this.running) return this.start();
    if (this.ws) this.lost("reconnecting", 1000);
    clearTimeout(this.retryTimer);
    this.failures = 0;
    this.open();
  }

  /** Sends a client message; false when the socket is not ready. */
  send(message) {
    if (!this.ready || !this.ws) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  /** Drops the socket as a network failure would (the page reconnects on its own). */
  simulateDrop() {
    if (this.ws) this.lost("connection dropped", 0);
  }

  setState(state, detail) {
    this.state = state;
    this.detail = detail;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, detail } }));
  }

  async open() {
    this.retryTimer = null;
    const retrying = this.failures > 0 ? `attempt ${this.failures + 1}` : "";
    this.setState(this.everConnected ? "reconnecting" : "connecting", retrying);
    let token;
    try {
      token = await this.tokens.get();
    } catch (e) {
      if (!this.running) return;
      // Without any token there is nothing to retry until one is given (retryNow).
      if (e.code === "needs_token") return this.setState("error", e.message);
      return this.fail(e.message || "no token");
    }
    if (!this.running || this.ws) return;
    let ws;
    try {
      ws = new this.WebSocketImpl(this.url, [PROTOCOL, `bearer.${token}`]);
    } catch (e) {
      return this.fail(e.message || "cannot open a socket");
    }
    this.ws = ws;
    this.stats.opened += 1;
    ws.onmessage = (ev) => this.onMessage(ev);
    ws.onclose = (ev) => {
      if (this.ws === ws) this.lost(closeReason(ev), ev.code);
    };
    ws.onerror = () => {}; // a close event always follows
    this.openTimer = setTimeout(() => {
      if (this.ws === ws && !this.ready) this.lost("no answer from the server", 0);
    }, this.openTimeoutMs);
  }

  onMessage(ev) {
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (msg.type === "connected") {
      clearTimeout(this.openTimer);
      this.ready = true;
      this.failures = 0;
      this.everConnected = true;
      this.startHeartbeat();
      this.setState("connected", "");
    } else if (msg.type === "pong") {
      if (msg.id === this.awaitingPong) {
        this.awaitingPong = null;
        this.stats.pongs += 1;
        clearTimeout(this.pongTimer);
      }
      return;
    } else if (msg.type === "error" && msg.fatal && msg.code === "unauthorized") {
      this.tokens.invalidate();
    }
    this.dispatchEvent(new CustomEvent("message", { detail: msg }));
  }

  startHeartbeat() {
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      if (!this.ready || this.awaitingPong !== null) return;
      this.pingId += 1;
      this.awaitingPong = this.pingId;
      this.stats.pings += 1;
      this.send({ type: "ping", id: this.pingId });
      this.pongTimer = setTimeout(() => this.lost("no answer to ping", 0), this.pongTimeoutMs);
    }, this.pingMs);
  }

  clearTimers() {
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
    clearTimeout(this.openTimer);
    clearTimeout(this.retryTimer);
    this.awaitingPong = null;
  }

  lost(reason, code) {
    const ws = this.ws;
    const wasReady = this.ready;
    this.ws = null;
    this.ready = false;
    this.clearTimers();
    if (ws) {
      detach(ws);
      try {
        ws.close();
      } catch {
        // already closed
      }
    }
    this.stats.lost += 1;
    // An attempt that never got `connected` may have had a stale token (the server restarted
    // with a new demo secret, say), and 1008 means it expired: fetch a new one next time.
    if (!wasReady || code === 1008) this.tokens.invalidate();
    this.dispatchEvent(new CustomEvent("down", { detail: { reason, code, wasReady } }));
    if (this.running) this.fail(reason);
  }

  fail(reason) {
    this.failures += 1;
    const base = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** (this.failures - 1));
    const delay = Math.round(base * (0.8 + this.random() * 0.4));
    this.lastDelayMs = delay;
    const state = this.everConnected ? "reconnecting" : "error";
    this.setState(state, `${reason}; retrying in ${Math.max(1, Math.round(delay / 1000))} s`);
    this.retryTimer = setTimeout(() => this.open(), delay);
  }
}

function detach(ws) {
  ws.onmessage = null;
  ws.onclose = null;
  ws.onerror = null;
}

function closeReason(ev) {
  if (ev.code === 1008) return "the token expired";
  if (ev.code === 1001) return "the server is restarting";
  if (ev.reason) return ev.reason;
  return ev.code === 1006 ? "the connection failed" : `closed (${ev.code})`;
}
