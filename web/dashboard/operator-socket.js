// The operator's WebSocket to one live call (GET /api/calls/{id}/operator?token=...): the
// call's events as JSON text frames, commands with an `id` answered by `result` or `error`
// with the same id, the call's audio as binary frames while listening, and the operator's
// voice as binary frames while they hold the takeover.
//
// Events: `open` (detail: the `operator_ready` frame), `event` (detail: a call event),
// `audio` (detail: {stream: "caller"|"agent", sampleRate, pcm: Uint8Array}), `error`
// (detail: an `error` frame not answering a command), `lagged`, `close` (detail: {code, reason}).

/** A command not answered by then fails (the server waits at most 5 s for the call). */
const COMMAND_TIMEOUT_MS = 8000;

/** The parts of a binary audio frame; null when it is not one. */
export function parseAudioFrame(buffer) {
  const bytes = new Uint8Array(buffer);
  if (bytes.byteLength < 4 || bytes[1] !== 0) return null;
  const stream = bytes[0] === 1 ? "caller" : bytes[0] === 2 ? "agent" : null;
  if (!stream) return null;
  const sampleRate = bytes[2] | (bytes[3] << 8);
  if (!sampleRate) return null;
  return { stream, sampleRate, pcm: bytes.subarray(4) };
}

export class CommandError extends Error {
  constructor(frame) {
    super(frame.message || frame.code);
    this.code = frame.code;
    this.status = 0;
    this.extra = { taken_over_by: frame.taken_over_by };
  }

  describe() {
    return `${this.code}: ${this.message}`;
  }
}

export class OperatorSocket extends EventTarget {
  /**
   * @param {string} callId
   * @param {string} token
   * @param {{WebSocketImpl?: typeof WebSocket}} [o]
   */
  constructor(callId, token, { WebSocketImpl = globalThis.WebSocket } = {}) {
    super();
    const url = new URL(`/api/calls/${encodeURIComponent(callId)}/operator`, location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("token", token);
    this.callId = callId;
    this.ready = false;
    this.closed = false;
    this.nextId = 1;
    this.pending = new Map();
    this.stats = { frames: 0, audioFrames: { caller: 0, agent: 0 }, audioBytes: 0, sentAudio: 0 };
    this.ws = new WebSocketImpl(url.href);
    this.ws.binaryType = "arraybuffer";
    this.ws.onmessage = (m) => this.onMessage(m.data);
    this.ws.onclose = (e) => this.onClose(e.code, e.reason);
    this.ws.onerror = () => {}; // the close that follows says it
  }

  onMessage(data) {
    if (typeof data !== "string") {
      const frame = parseAudioFrame(data);
      if (!frame) return;
      this.stats.audioFrames[frame.stream] += 1;
      this.stats.audioBytes += frame.pcm.byteLength;
      this.dispatchEvent(new CustomEvent("audio", { detail: frame }));
      return;
    }
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    this.stats.frames += 1;
    switch (msg.type) {
      case "operator_ready":
        this.ready = true;
        this.dispatchEvent(new CustomEvent("open", { detail: msg }));
        break;
      case "result":
      case "error": {
        const waiter = msg.id !== null && msg.id !== undefined ? this.pending.get(msg.id) : null;
        if (waiter) {
          this.pending.delete(msg.id);
          clearTimeout(waiter.timer);
          if (msg.type === "result") waiter.resolve(msg.call);
          else waiter.reject(new CommandError(msg));
        } else if (msg.type === "error") {
          this.dispatchEvent(new CustomEvent("error", { detail: msg }));
        }
        break;
      }
      case "lagged":
        this.dispatchEvent(new CustomEvent("lagged", { detail: msg }));
        break;
      default:
        this.dispatchEvent(new CustomEvent("event", { detail: msg }));
    }
  }

  onClose(code, reason) {
    this.ready = false;
    this.closed = true;
    for (const waiter of this.pending.values()) {
      clearTimeout(waiter.timer);
      waiter.reject(new CommandError({ code: "socket_closed", message: "the operator connection closed" }));
    }
    this.pending.clear();
    this.dispatchEvent(new CustomEvent("close", { detail: { code, reason } }));
  }

  get open() {
    return this.ready && this.ws.readyState === 1;
  }

  /** Sends a command; resolves with the call's state from its `result`, or rejects. */
  command(msg) {
    if (!this.open) return Promise.reject(new CommandError({ code: "socket_closed", message: "not connected" }));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new CommandError({ code: "timeout", message: `no answer to ${msg.type} within ${COMMAND_TIMEOUT_MS / 1000} s` }));
      }, COMMAND_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ ...msg, id }));
    });
  }

  /** Sends a message that gets no answer (listen, voice_end). */
  send(msg) {
    if (this.open) this.ws.send(JSON.stringify(msg));
  }

  /** The operator's voice: pcm16 at 16 kHz. */
  sendAudio(bytes) {
    if (!this.open) return;
    this.stats.sentAudio += 1;
    this.ws.send(bytes);
  }

  close() {
    if (this.ws.readyState <= 1) this.ws.close(1000);
  }
}
