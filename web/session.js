// One conversation over the socket: starts (or, after a reconnect, resumes) the call, sends the
// microphone's chunks and typed turns, and turns server messages into transcript lines, reply
// playback, playback reports and latency figures.
//
// Events: `change` (call state changed), `notice` (detail: {text, level}), `engines`.

import { base64ToBytes, bytesToBase64 } from "./audio-util.js";
import { MIC_RATE } from "./mic.js";

/** Audio kept while the call is being started, at most (chunks of 500 ms). */
const MAX_PENDING_CHUNKS = 6;
/** Resuming a call the server still counts live (the old socket not yet noticed gone). */
const RESUME_RETRY_MS = 1000;
const MAX_RESUME_RETRIES = 10;

export class Session extends EventTarget {
  /**
   * @param {object} o
   * @param {import("./connection.js").Connection} o.connection
   * @param {import("./transcript.js").Transcript} o.transcript
   * @param {import("./latency.js").LatencyPanel} o.latency
   * @param {() => import("./player.js").Player | null} o.player
   * @param {() => string} o.agent  the agent picked ("" for the server's default)
   */
  constructor({ connection, transcript, latency, player, agent }) {
    super();
    Object.assign(this, { connection, transcript, latency, player, agent });
    /** The conversation's call id: kept across reconnects and push-to-talk turns. */
    this.callId = null;
    /** The user wants a call running (it is restarted after a reconnect). */
    this.wantCall = false;
    this.live = false;
    this.starting = false;
    this.group = 0;
    this.seq = 0;
    this.pendingAudio = [];
    this.pendingText = [];
    this.resumeRetries = 0;
    this.endWaiters = [];
    this.stats = {
      callsStarted: 0,
      resumed: 0,
      framesReceived: 0,
      audioBytes: 0,
      chunksSent: 0,
      interrupted: 0,
      metrics: 0,
      playbackReports: 0,
      errors: [],
    };
    connection.addEventListener("message", (e) => this.handle(e.detail));
    connection.addEventListener("down", (e) => this.onDown(e.detail));
  }

  /** Starts the call (or resumes the conversation's call) as soon as the socket allows. */
  start() {
    this.wantCall = true;
    this.requestStart();
    this.changed();
  }

  /** Ends the call; resolves once the server confirmed it (or after 3 s). */
  end() {
    this.wantCall = false;
    this.pendingAudio = [];
    this.pendingText = [];
    clearTimeout(this.retryTimer);
    this.changed();
    if (!this.live && !this.starting) return Promise.resolve();
    this.connection.send({ type: "end_call" });
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, 3000);
      this.endWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** Forgets the conversation: the next call starts afresh. */
  forget() {
    this.callId = null;
  }

  sendAudio(bytes) {
    if (!this.wantCall) return;
    if (this.live) {
      this.stats.chunksSent += 1;
      this.connection.send({ type: "audio", audio: bytesToBase64(bytes), seq: this.seq++ });
    } else {
      this.pendingAudio.push(bytes);
      if (this.pendingAudio.length > MAX_PENDING_CHUNKS) this.pendingAudio.shift();
    }
  }

  /** A typed turn; starts a call first when none is running. */
  sendText(text) {
    if (this.live) return this.connection.send({ type: "text", text });
    this.pendingText.push(text);
    this.start();
    return true;
  }

  /** Asks the server to stop the current reply (it answers `interrupted`). */
  interrupt() {
    if (this.live) this.connection.send({ type: "interrupt" });
  }

  /** Tells the server how much of a reply was heard (from the player). */
  reportPlayback(meta, playedMs) {
    if (!this.live || meta.callId !== this.callId || meta.group !== this.group) return;
    this.stats.playbackReports += 1;
    this.connection.send({ type: "playback", item_id: meta.itemId, played_ms: playedMs });
  }

  requestStart() {
    if (!this.wantCall || this.live || this.starting || !this.connection.ready) return;
    const msg = { type: "start_call", audio_format: { encoding: "pcm16", sample_rate: MIC_RATE } };
    if (this.callId) msg.call_id = this.callId;
    const agent = this.agent();
    if (agent) msg.agent = agent;
    this.starting = true;
    this.connection.send(msg);
  }

  onDown({ wasReady }) {
    const wasLive = this.live;
    this.live = false;
    this.starting = false;
    this.pendingAudio = [];
    this.flushEndWaiters();
    this.transcript.settle(this.group);
    if (wasReady && wasLive && this.wantCall) this.transcript.note("Connection lost: reconnecting…");
    this.changed();
  }

  handle(msg) {
    switch (msg.type) {
      case "connected":
        this.dispatchEvent(new CustomEvent("engines", { detail: msg.engines }));
        this.requestStart();
        break;
      case "call_started":
        this.onCallStarted(msg);
        break;
      case "call_ended": {
        this.live = false;
        this.starting = false;
        this.flushEndWaiters();
        this.transcript.settle(this.group);
        // The server stops (or another node holds the call now) and closes the socket with
        // 1001: the page reconnects and resumes the call where it goes on.
        const goesOn = msg.reason === "server_shutdown" || msg.reason === "moved";
        if (goesOn && this.wantCall) {
          this.transcript.note("The server handed the call on: resuming…");
        } else {
          if (msg.reason !== "client_ended") {
            this.wantCall = false;
            const why = msg.reason === "max_duration" ? "it reached its time limit" : "the server ended it";
            this.notice(`The call ended: ${why}.`, "warn");
          }
          this.transcript.note(`Call ended after ${msg.turns} turn${msg.turns === 1 ? "" : "s"}`);
          this.requestStart(); // a new call asked for while this one was ending
        }
        this.changed();
        break;
      }
      case "speech_started":
        this.transcript.callerListening(this.group, msg.item_id);
        break;
      case "transcript":
        if (msg.is_final) this.transcript.callerFinal(this.group, msg.item_id, msg.text);
        else this.transcript.callerPartial(this.group, msg.item_id, msg.text);
        break;
      case "response":
        if (msg.is_final) this.transcript.agentFinal(this.group, msg.item_id, msg.text || "");
        else if (msg.delta) this.transcript.agentDelta(this.group, msg.item_id, msg.delta);
        break;
      case "audio_response":
        this.onAudio(msg);
        break;
      case "response_done":
        this.player()?.finish(this.key(msg.item_id));
        this.transcript.agentDone(this.group, msg.item_id, msg.reason);
        break;
      case "interrupted":
        this.stats.interrupted += 1;
        this.player()?.stop(this.key(msg.item_id));
        this.transcript.agentCut(this.group, msg.item_id, msg.text);
        break;
      case "metrics":
        this.stats.metrics += 1;
        this.latency.show(msg, `turn ${msg.turn_id}`);
        break;
      case "error":
        this.onError(msg);
        break;
      default:
        break; // call_updated, speech_stopped: nothing to show
    }
  }

  onCallStarted(msg) {
    const resumed = msg.resumed && msg.call_id === this.callId;
    this.live = true;
    this.starting = false;
    this.resumeRetries = 0;
    this.callId = msg.call_id;
    this.group = this.transcript.newGroup();
    this.stats.callsStarted += 1;
    if (resumed) this.stats.resumed += 1;
    this.transcript.note(
      resumed ? `Call resumed with ${msg.agent}` : `Call started with ${msg.agent}`,
    );
    if (!this.wantCall) {
      this.connection.send({ type: "end_call" });
    } else {
      for (const bytes of this.pendingAudio.splice(0)) this.sendAudio(bytes);
      for (const text of this.pendingText.splice(0)) this.connection.send({ type: "text", text });
    }
    this.changed();
  }

  onAudio(msg) {
    this.stats.framesReceived += 1;
    const player = this.player();
    if (!player || msg.encoding !== "pcm16") return;
    const bytes = base64ToBytes(msg.audio);
    this.stats.audioBytes += bytes.byteLength;
    const meta = { source: "socket", callId: this.callId, group: this.group, itemId: msg.item_id };
    player.enqueuePcm16(this.key(msg.item_id), meta, bytes, msg.sample_rate);
  }

  onError(msg) {
    this.stats.errors.push(msg.code);
    if (this.starting) {
      this.starting = false;
      if (msg.code === "call_already_active" && this.callId) {
        // The server has not yet noticed the old socket is gone: try again shortly.
        if (this.resumeRetries < MAX_RESUME_RETRIES) {
          this.resumeRetries += 1;
          this.retryTimer = setTimeout(() => this.requestStart(), RESUME_RETRY_MS);
          return;
        }
      } else if (msg.code === "call_not_found" && this.callId) {
        this.callId = null;
        this.transcript.note("The earlier call is gone: starting a new one");
        return this.requestStart();
      }
      this.wantCall = false;
      this.pendingText = [];
      this.notice(`The call could not start: ${msg.message}`, "error");
      this.changed();
      return;
    }
    this.notice(msg.message, msg.fatal ? "error" : "warn");
  }

  key(itemId) {
    return `s${this.group}:${itemId}`;
  }

  flushEndWaiters() {
    for (const done of this.endWaiters.splice(0)) done();
  }

  notice(text, level) {
    this.dispatchEvent(new CustomEvent("notice", { detail: { text, level } }));
  }

  changed() {
    this.dispatchEvent(new Event("change"));
  }
}
