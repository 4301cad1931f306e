// One call, opened from the live list: its transcript (what was said before the view opened,
// from GET /api/calls/{id}, then the live events), and the operator's controls: listen in,
// take over, hand back, end, say a line, leave a note, talk with the microphone. Commands go
// over the operator socket when it is open, else over the HTTP routes.
//
// Events reach the view from the monitor stream and, while it is open, the operator socket;
// events seen twice (same `seq`) are applied once, and reply deltas are taken from one source.

import { Transcript } from "../transcript.js";
import { clock, el, millis, STATE_LABELS } from "./format.js";
import { Listener } from "./listen.js";
import { OperatorSocket } from "./operator-socket.js";
import { Talk } from "./talk.js";

const GROUP = 1;
/** How operators, callers and the agent are named in the transcript. */
const LABELS = { caller: "Caller", agent: "Agent", operator: "Operator" };
const ACTIONS = {
  takeover: "Take over",
  release: "Hand back",
  end: "End call",
  say: "Say",
  context: "Note",
};

/** A stored conversation item (GET /api/calls/{id}) as a transcript line. */
export function showItem(transcript, group, item) {
  const id = item.item_id;
  if (item.role === "user") {
    transcript.callerFinal(group, id, item.text);
  } else if (item.role === "assistant" && item.source === "operator") {
    transcript.operatorFinal(group, id, item.text);
  } else if (item.role === "assistant") {
    transcript.agentFinal(group, id, item.text);
    if (item.heard !== null && item.heard !== undefined) transcript.agentCut(group, id, item.heard);
  } else {
    transcript.noteAt(group, id, `Note: ${item.text}`);
  }
}

export class CallView extends EventTarget {
  /**
   * @param {Record<string, HTMLElement>} ui  the view's elements (see dashboard/index.html)
   * @param {object} o
   * @param {import("./api.js").Api} o.api
   * @param {import("./auth.js").OperatorAuth} o.auth
   * @param {import("./live-calls.js").LiveCalls} o.live
   * @param {() => AudioContext} o.audio
   * @param {(text: string, level: string) => void} o.status
   */
  constructor(ui, { api, auth, live, audio, status }) {
    super();
    Object.assign(this, { ui, api, auth, live, audio, status });
    this.transcript = new Transcript(ui.transcript, ui.announcer, LABELS);
    this.callId = null;
    this.call = null;
    this.seen = new Set();
    this.socket = null;
    this.socketOpening = null;
    this.listener = null;
    this.listening = false;
    this.ended = false;
    this.busy = false;
    this.stats = { events: 0, duplicates: 0, commands: [], errors: [] };
    this.talk = new Talk(ui.talk, {
      audio: () => this.audio(),
      socket: () => this.openSocket(),
      allowed: () => this.heldByMe() && !this.ended,
      status: (t, l) => this.status(t, l),
    });
    ui.close.addEventListener("click", () => this.close());
    ui.listen.addEventListener("change", () => this.setListening(ui.listen.checked));
    ui.takeover.addEventListener("click", () => this.act("takeover"));
    ui.release.addEventListener("click", () => this.act("release"));
    ui.end.addEventListener("click", () => {
      if (confirm(`End call ${this.callId} for the caller?`)) this.act("end");
    });
    ui.sayForm.addEventListener("submit", (e) => {
      e.preventDefault();
      this.sendText("say", ui.sayInput);
    });
    ui.noteForm.addEventListener("submit", (e) => {
      e.preventDefault();
      this.sendText("context", ui.noteInput);
    });
  }

  get me() {
    return this.auth.who.sub;
  }

  heldByMe() {
    return Boolean(this.call && this.call.taken_over_by && this.call.taken_over_by === this.me);
  }

  /** Opens the view on a live call. */
  async open(callId) {
    if (this.callId === callId) {
      this.ui.heading.focus();
      return;
    }
    this.close({ quiet: true });
    this.callId = callId;
    this.ended = false;
    this.call = { ...(this.live.get(callId) || { call_id: callId }) };
    this.ui.section.hidden = false;
    this.ui.heading.textContent = `Call ${callId}`;
    this.render();
    this.ui.heading.focus();
    await this.reload();
  }

  /** Reads the call's stored items again and rebuilds the transcript from them. */
  async reload() {
    const callId = this.callId;
    if (!callId) return;
    this.transcript.clear();
    this.seen.clear();
    try {
      const call = await this.api.get(`/api/calls/${encodeURIComponent(callId)}`);
      if (callId !== this.callId) return;
      for (const item of call.items || []) showItem(this.transcript, GROUP, item);
      // The last measured turn, until the next `metrics` event.
      const last = [...(call.metrics || [])].reverse().find((m) => m.timings && Number.isFinite(m.timings.voice_to_voice_ms));
      if (last && this.call && !Number.isFinite(this.call.v2v)) this.call.v2v = last.timings.voice_to_voice_ms;
      if (!call.live) this.markEnded(call.end_reason);
      this.render();
    } catch (e) {
      if (callId === this.callId) this.fail("Reading the call", e);
    }
  }

  close({ quiet = false } = {}) {
    if (!this.callId) return;
    this.talk.stop();
    this.setListening(false);
    if (this.socket) this.socket.close();
    this.socket = null;
    this.socketOpening = null;
    this.callId = null;
    this.call = null;
    this.ui.section.hidden = true;
    this.transcript.clear();
    this.dispatchEvent(new Event("closed"));
    if (!quiet) this.dispatchEvent(new Event("focus-list"));
  }

  // ---- events ----

  /** A monitor stream event (any call's). */
  onMonitorEvent(ev) {
    if (ev.type === "live_calls") {
      if (this.callId) {
        const c = ev.calls.find((x) => x.call_id === this.callId);
        if (c) this.call = { ...this.call, ...c };
        this.render();
      }
      return;
    }
    if (ev.call_id !== this.callId) return;
    this.apply(ev, "monitor");
  }

  apply(ev, source) {
    if (ev.seq) {
      if (this.seen.has(ev.seq)) {
        this.stats.duplicates += 1;
        return;
      }
      this.seen.add(ev.seq);
    }
    this.stats.events += 1;
    const t = this.transcript;
    const live = this.live.get(this.callId);
    if (live) this.call = { ...this.call, ...live };
    switch (ev.type) {
      case "speech_started":
        t.callerListening(GROUP, ev.item_id);
        break;
      case "transcript":
        if (ev.is_final) t.callerFinal(GROUP, ev.item_id, ev.text);
        else t.callerPartial(GROUP, ev.item_id, ev.text);
        break;
      case "response_delta":
        // Deltas carry no seq: take them from the socket while it is open, else the stream.
        if ((source === "socket") === Boolean(this.socket && this.socket.open)) t.agentDelta(GROUP, ev.item_id, ev.delta);
        break;
      case "response":
        if (ev.from === "operator") t.operatorFinal(GROUP, ev.item_id, ev.text);
        else t.agentFinal(GROUP, ev.item_id, ev.text);
        break;
      case "interrupted":
        t.agentCut(GROUP, ev.item_id, ev.heard);
        if (this.listener) this.listener.flushAgent();
        break;
      case "operator_say":
        // A typed line has its text; a spoken one gets its words when transcribed (`response`).
        if (ev.text) t.operatorFinal(GROUP, ev.item_id, ev.text);
        else t.operatorFinal(GROUP, ev.item_id, `${ev.operator === this.me ? "You are" : `${ev.operator} is`} speaking…`, true);
        break;
      case "operator_context":
        t.noteAt(GROUP, ev.item_id, `Note from ${ev.operator}: ${ev.text}`);
        break;
      case "takeover_started":
        this.call.taken_over_by = ev.operator;
        this.call.state = "taken_over";
        t.note(`${ev.operator === this.me ? "You" : ev.operator} took the call over`);
        break;
      case "takeover_ended":
        this.call.taken_over_by = null;
        t.note(`${ev.operator === this.me ? "You" : ev.operator} handed the call back to the agent`);
        if (ev.operator === this.me) this.talk.stop();
        break;
      case "operator_end":
        t.note(`${ev.operator === this.me ? "You" : ev.operator} ended the call`);
        break;
      case "call_ended":
        this.markEnded(ev.reason);
        break;
      case "metrics":
        if (ev.timings && Number.isFinite(ev.timings.voice_to_voice_ms)) this.call.v2v = ev.timings.voice_to_voice_ms;
        break;
      default:
        break;
    }
    this.render();
  }

  markEnded(reason) {
    if (this.ended) return;
    this.ended = true;
    this.call.state = "ended";
    this.call.taken_over_by = null;
    this.transcript.settle(GROUP);
    this.transcript.note(`Call ended${reason ? ` (${reason.replace(/_/g, " ")})` : ""}`);
    this.talk.stop();
    this.setListening(false);
    this.render();
  }

  // ---- the operator socket and listening in ----

  /** The open operator socket (opened now if needed). */
  openSocket() {
    if (this.socket && this.socket.open) return Promise.resolve(this.socket);
    if (this.socketOpening) return this.socketOpening;
    const callId = this.callId;
    this.socketOpening = this.auth.get().then(
      (token) =>
        new Promise((resolve, reject) => {
          if (callId !== this.callId) return reject(new Error("the call view was closed"));
          const sock = new OperatorSocket(callId, token);
          this.socket = sock;
          sock.addEventListener("open", (e) => {
            this.socketOpening = null;
            const c = e.detail.call;
            if (c && !this.ended) this.call = { ...this.call, state: c.state, taken_over_by: c.taken_over_by ?? null };
            this.render();
            resolve(sock);
          });
          sock.addEventListener("event", (e) => this.apply(e.detail, "socket"));
          sock.addEventListener("audio", (e) => this.listener && this.listening && this.listener.play(e.detail));
          sock.addEventListener("error", (e) => this.showFrameError(e.detail));
          sock.addEventListener("lagged", () => this.reload());
          sock.addEventListener("close", (e) => {
            const wasReady = sock === this.socket && this.socketOpening === null;
            if (sock !== this.socket) return;
            this.socket = null;
            this.socketOpening = null;
            const { code, reason } = e.detail;
            if (!wasReady) {
              reject(new Error(`the operator connection was refused (close ${code}${reason ? `: ${reason}` : ""})`));
            } else if (code !== 1000 && !this.ended) {
              this.status(`The operator connection closed (${code}${reason ? `: ${reason}` : ""}).`, "warn");
            }
            if (this.listening && !this.ended) {
              this.listening = false;
              this.ui.listen.checked = false;
              this.listener?.stop();
            }
            this.render();
          });
        }),
    );
    this.socketOpening.catch(() => (this.socketOpening = null));
    return this.socketOpening;
  }

  async setListening(on) {
    if (on === this.listening && this.ui.listen.checked === on) return;
    this.listening = on;
    this.ui.listen.checked = on;
    if (on) {
      const ctx = this.audio(); // a click: audio may start now
      if (!this.listener) this.listener = new Listener(ctx);
      try {
        const sock = await this.openSocket();
        if (this.listening) sock.send({ type: "listen", enabled: true });
        this.status("Listening in: the caller and the agent are played here.", "info");
      } catch (e) {
        this.listening = false;
        this.ui.listen.checked = false;
        this.fail("Listening in", e);
      }
    } else {
      if (this.socket && this.socket.open) this.socket.send({ type: "listen", enabled: false });
      this.listener?.stop();
    }
    this.render();
  }

  // ---- commands ----

  async act(command, text) {
    if (!this.callId || this.busy) return false;
    const callId = this.callId;
    this.busy = true;
    this.render();
    try {
      let view;
      if (this.socket && this.socket.open) {
        const msg = { type: command };
        if (text !== undefined) msg.text = text;
        if (command === "takeover" || command === "release") msg.force = false;
        view = await this.socket.command(msg);
      } else {
        const body = text === undefined ? undefined : { text };
        view = await this.api.post(`/api/calls/${encodeURIComponent(callId)}/${command}`, body);
      }
      this.stats.commands.push(command);
      if (callId === this.callId && view) this.onView(view);
      if (command === "takeover") this.status("You hold the call: the agent is silent until you hand it back.", "info");
      if (command === "release") {
        this.talk.stop();
        this.status("Handed back: the agent answers the caller's next turn.", "info");
      }
      return true;
    } catch (e) {
      this.fail(ACTIONS[command] || command, e);
      return false;
    } finally {
      this.busy = false;
      this.render();
    }
  }

  onView(view) {
    this.call.taken_over_by = view.taken_over_by ?? null;
    if (view.state) this.call.state = view.state;
    if (view.state === "ended") this.markEnded(view.end_reason);
  }

  async sendText(command, input) {
    const text = input.value.trim();
    if (!text) {
      input.focus();
      return;
    }
    if (await this.act(command, text)) {
      input.value = "";
      if (command === "context") this.status("Note added: the agent sees it from its next turn.", "info");
    }
  }

  showFrameError(frame) {
    this.stats.errors.push(frame.code);
    const who = frame.taken_over_by ? ` (held by ${frame.taken_over_by})` : "";
    this.status(`Error ${frame.code}: ${frame.message}${who}`, "error");
  }

  fail(what, e) {
    const code = e.code || e.name || "error";
    this.stats.errors.push(code);
    const text = e.describe ? e.describe() : e.message;
    const who = e.extra && e.extra.taken_over_by ? ` (held by ${e.extra.taken_over_by})` : "";
    this.status(`${what} failed: ${text}${who}`, "error");
  }

  // ---- rendering ----

  tick() {
    if (this.call && this.call.started_at && !this.ended) {
      this.ui.duration.textContent = clock(Date.now() - this.call.started_at);
    }
  }

  render() {
    const ui = this.ui;
    const c = this.call;
    if (!c) return;
    const live = !this.ended;
    const mine = this.heldByMe();
    const heldByOther = Boolean(c.taken_over_by) && !mine;
    ui.caller.textContent = c.sub || "–";
    ui.agent.textContent = c.agent || "–";
    let state = STATE_LABELS[c.state] || c.state || "–";
    if (c.taken_over_by) state = `taken over by ${mine ? "you" : c.taken_over_by}`;
    ui.state.replaceChildren(el("span", { class: "state", dataset: { state: c.state || "" } }, state));
    ui.v2v.textContent = millis(c.v2v);
    this.tick();
    if (this.ended) ui.duration.textContent = "ended";
    ui.takeover.disabled = !live || mine || this.busy;
    ui.takeover.textContent = heldByOther ? `Take over (held by ${c.taken_over_by})` : ACTIONS.takeover;
    ui.release.disabled = !live || !mine || this.busy;
    ui.end.disabled = !live || this.busy;
    ui.sayInput.disabled = ui.sayBtn.disabled = !live || !mine;
    ui.noteInput.disabled = ui.noteBtn.disabled = !live;
    ui.listen.disabled = !live;
    ui.talk.disabled = !live || !mine;
    ui.sayHint.textContent = mine
      ? "Spoken to the caller in the agent's voice."
      : "Take the call over to speak to the caller.";
    const sock = this.socket;
    ui.socketState.textContent = sock && sock.open ? "operator connection open" : this.socketOpening ? "connecting…" : "commands over HTTP";
  }

  snapshot() {
    return {
      callId: this.callId,
      call: this.call && { ...this.call },
      ended: this.ended,
      listening: this.listening,
      socket: this.socket && { open: this.socket.open, ...this.socket.stats, audioFrames: { ...this.socket.stats.audioFrames } },
      listener: this.listener && { ...this.listener.stats, playedMs: this.listener.playedMs() },
      talk: { talking: this.talk.talking, ...this.talk.stats },
      stats: { ...this.stats, commands: [...this.stats.commands], errors: [...this.stats.errors] },
    };
  }
}
