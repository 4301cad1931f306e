// The live calls: a model fed by the monitor stream (the `live_calls` snapshot, then events)
// and the list that shows them: agent, caller, state, a ticking duration and the last
// voice-to-voice latency. The state comes from the events (see `nextState`).

import { clock, el, millis, STATE_LABELS } from "./format.js";

/**
 * A call's state after a monitor event (a pure function: the call is not changed).
 * speech_started: the caller speaks; a final transcript: the agent thinks; reply text: it
 * speaks; the whole reply or an interruption: it listens again. A call taken over stays so
 * until `takeover_ended`; a call its flow put in the operators' queue (`queued`) waits until
 * an operator takes it over.
 */
export function nextState(call, ev) {
  const c = { ...call };
  if (ev.type === "queued") {
    c.state = "waiting";
    return c;
  }
  if (ev.type === "takeover_started") {
    c.taken_over_by = ev.operator || null;
    c.state = "taken_over";
    return c;
  }
  if (ev.type === "takeover_ended") {
    c.taken_over_by = null;
    c.state = "listening";
    return c;
  }
  if (ev.type === "metrics") {
    const v2v = ev.timings && ev.timings.voice_to_voice_ms;
    if (Number.isFinite(v2v)) c.v2v = v2v;
    return c;
  }
  if (ev.type === "call_ended") {
    c.state = "ended";
    return c;
  }
  if (c.taken_over_by || c.state === "waiting") return c;
  switch (ev.type) {
    case "speech_started":
      c.state = "caller_speaking";
      break;
    case "transcript":
      if (ev.is_final) c.state = ev.text ? "thinking" : "listening";
      break;
    case "response_delta":
      c.state = "speaking";
      break;
    case "response":
    case "interrupted":
      c.state = "listening";
      break;
    default:
      break;
  }
  return c;
}

export class LiveCalls extends EventTarget {
  constructor() {
    super();
    /** call_id -> {call_id, agent, sub, started_at, state, taken_over_by, v2v} */
    this.calls = new Map();
    this.snapshotAt = 0;
  }

  /** Feeds one monitor event. */
  apply(ev) {
    if (ev.type === "live_calls") {
      const before = this.calls;
      this.calls = new Map();
      for (const c of ev.calls || []) {
        const old = before.get(c.call_id);
        this.calls.set(c.call_id, {
          ...c,
          state: c.taken_over_by ? "taken_over" : c.state,
          v2v: old ? old.v2v : null,
        });
      }
      this.snapshotAt = ev.at || Date.now();
    } else if (ev.call_id) {
      let call = this.calls.get(ev.call_id);
      if (ev.type === "call_ended") {
        this.calls.delete(ev.call_id);
      } else {
        if (!call) {
          call = { call_id: ev.call_id, agent: ev.agent, sub: ev.sub, started_at: ev.at, state: "listening", taken_over_by: null, v2v: null };
        }
        this.calls.set(ev.call_id, nextState(call, ev));
      }
    } else {
      return;
    }
    this.dispatchEvent(new CustomEvent("change", { detail: ev }));
  }

  clear() {
    this.calls.clear();
    this.dispatchEvent(new CustomEvent("change", { detail: null }));
  }

  get(callId) {
    return this.calls.get(callId) || null;
  }

  /** Newest first. */
  list() {
    return [...this.calls.values()].sort((a, b) => (b.started_at || 0) - (a.started_at || 0));
  }
}

/** The list of live calls: one row per call with a button that opens it. */
export class LiveList {
  /**
   * @param {HTMLElement} body   the <tbody>
   * @param {HTMLElement} empty  shown when no call is live
   * @param {HTMLElement} count  the count in the heading
   * @param {(callId: string) => void} onOpen
   */
  constructor(body, empty, count, onOpen) {
    Object.assign(this, { body, empty, count, onOpen });
    this.rows = new Map();
    this.selected = null;
  }

  render(calls) {
    const seen = new Set();
    let before = null;
    for (const call of calls) {
      seen.add(call.call_id);
      let row = this.rows.get(call.call_id);
      if (!row) {
        row = this.makeRow(call);
        this.rows.set(call.call_id, row);
      }
      this.fill(row, call);
      const next = before ? before.tr.nextSibling : this.body.firstChild;
      if (row.tr !== next) this.body.insertBefore(row.tr, next);
      before = row;
    }
    for (const [id, row] of this.rows) {
      if (!seen.has(id)) {
        row.tr.remove();
        this.rows.delete(id);
      }
    }
    this.empty.hidden = calls.length > 0;
    this.count.textContent = `(${calls.length})`;
  }

  makeRow(call) {
    const open = el("button", { type: "button", class: "link", onclick: () => this.onOpen(call.call_id) });
    const cells = {
      agent: el("td", { "data-label": "Agent" }),
      sub: el("td", { "data-label": "Caller" }),
      state: el("td", { "data-label": "State" }),
      duration: el("td", { "data-label": "Duration", class: "num" }),
      v2v: el("td", { "data-label": "Voice to voice", class: "num" }),
    };
    const tr = el(
      "tr",
      { dataset: { callId: call.call_id } },
      el("th", { scope: "row", "data-label": "Call" }, open),
      cells.agent,
      cells.sub,
      cells.state,
      cells.duration,
      cells.v2v,
    );
    return { tr, open, cells, call };
  }

  fill(row, call) {
    row.call = call;
    row.open.textContent = call.call_id;
    row.open.setAttribute("aria-label", `Open call ${call.call_id} (${call.sub} with ${call.agent})`);
    row.cells.agent.textContent = call.agent || "–";
    row.cells.sub.textContent = call.sub || "–";
    const label = STATE_LABELS[call.state] || call.state || "–";
    const state = el("span", { class: "state", dataset: { state: call.state || "" } }, label);
    const by = call.taken_over_by ? el("span", { class: "by" }, `by ${call.taken_over_by}`) : null;
    row.cells.state.replaceChildren(...[state, by].filter(Boolean));
    row.cells.v2v.textContent = millis(call.v2v);
    row.tr.classList.toggle("selected", call.call_id === this.selected);
    this.tickRow(row);
  }

  tickRow(row) {
    row.cells.duration.textContent = row.call.started_at ? clock(Date.now() - row.call.started_at) : "–";
  }

  /** Updates the ticking durations only. */
  tick() {
    for (const row of this.rows.values()) this.tickRow(row);
  }

  select(callId) {
    this.selected = callId;
    for (const [id, row] of this.rows) row.tr.classList.toggle("selected", id === callId);
  }
}
