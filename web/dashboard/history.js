// Finished calls: GET /api/calls with the filters (dates, agent, caller, text), a page at a
// time (`next_before`), one call's full transcript and per-turn metrics from
// GET /api/calls/{id}, and the same filters exported as CSV or JSON.

import { Transcript } from "../transcript.js";
import { showItem } from "./call-view.js";
import { clock, dateTime, dayStart, el, millis } from "./format.js";

const PAGE = 20;
const DAY_MS = 86_400_000;
const METRIC_FIELDS = [
  ["stt_ms", "Speech to text"],
  ["llm_first_token_ms", "First token"],
  ["tts_first_audio_ms", "First audio"],
  ["voice_to_voice_ms", "Voice to voice"],
];

export class History {
  /**
   * @param {Record<string, HTMLElement>} ui
   * @param {{api: import("./api.js").Api, status: (text: string, level: string) => void}} o
   */
  constructor(ui, { api, status }) {
    Object.assign(this, { ui, api, status });
    this.transcript = new Transcript(ui.detailTranscript, ui.announcer, { caller: "Caller", agent: "Agent", operator: "Operator" });
    this.filters = {};
    this.nextBefore = null;
    this.loading = false;
    this.stats = { pages: 0, rows: 0, opened: null, exports: [] };
    ui.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.search();
    });
    ui.form.addEventListener("reset", () => setTimeout(() => this.search(), 0));
    ui.more.addEventListener("click", () => this.load(true));
    ui.back.addEventListener("click", () => this.closeDetail());
    ui.exportCsv.addEventListener("click", () => this.export("csv"));
    ui.exportJson.addEventListener("click", () => this.export("json"));
  }

  /** The query for the filters in the form (dates as local days, `to` inclusive). */
  readFilters() {
    const f = this.ui.form.elements;
    const from = dayStart(f.from.value);
    const toDay = dayStart(f.to.value);
    return {
      from: from ?? undefined,
      to: toDay === null ? undefined : toDay + DAY_MS,
      agent: f.agent.value.trim() || undefined,
      sub: f.sub.value.trim() || undefined,
      q: f.q.value.trim() || undefined,
    };
  }

  search() {
    this.filters = this.readFilters();
    return this.load(false);
  }

  async load(more) {
    if (this.loading) return;
    this.loading = true;
    this.ui.more.disabled = true;
    this.ui.body.setAttribute("aria-busy", "true");
    try {
      const query = { ...this.filters, limit: PAGE };
      if (more && this.nextBefore) query.before = this.nextBefore;
      const page = await this.api.get("/api/calls", query);
      if (!more) this.ui.body.replaceChildren();
      const finished = (page.calls || []).filter((c) => !c.live);
      for (const call of finished) this.ui.body.append(this.row(call));
      this.nextBefore = page.next_before ?? null;
      this.stats.pages += 1;
      this.stats.rows = this.ui.body.childElementCount;
      const n = this.stats.rows;
      this.ui.empty.hidden = n > 0;
      this.ui.more.hidden = !this.nextBefore;
      this.ui.summary.textContent = `${n} call${n === 1 ? "" : "s"} shown${this.nextBefore ? "; more below" : ""}.`;
    } catch (e) {
      this.status(`Listing calls failed: ${e.describe ? e.describe() : e.message}`, "error");
    } finally {
      this.loading = false;
      this.ui.more.disabled = false;
      this.ui.body.removeAttribute("aria-busy");
    }
  }

  row(call) {
    const duration = call.duration_ms ?? (call.ended_at_ms && call.started_at_ms ? call.ended_at_ms - call.started_at_ms : null);
    const open = el(
      "button",
      { type: "button", class: "link", "aria-label": `Open call ${call.call_id} (${call.sub} with ${call.agent})`, onclick: () => this.open(call.call_id) },
      dateTime(call.started_at_ms),
    );
    return el(
      "tr",
      { dataset: { callId: call.call_id } },
      el("th", { scope: "row", "data-label": "Started" }, open),
      el("td", { "data-label": "Agent" }, call.agent || "–"),
      el("td", { "data-label": "Caller" }, call.sub || "–"),
      el("td", { "data-label": "Duration", class: "num" }, clock(duration)),
      el("td", { "data-label": "Turns", class: "num" }, String(call.turns ?? "–")),
      el("td", { "data-label": "Ended" }, (call.end_reason || "–").replace(/_/g, " ")),
    );
  }

  async open(callId) {
    try {
      const call = await this.api.get(`/api/calls/${encodeURIComponent(callId)}`);
      this.stats.opened = callId;
      this.transcript.clear();
      for (const item of call.items || []) showItem(this.transcript, 1, item);
      const ended = call.ended_at_ms ? `, ended ${dateTime(call.ended_at_ms)} (${(call.end_reason || "").replace(/_/g, " ")})` : " (live)";
      this.ui.detailHeading.textContent = `Call ${callId}`;
      this.ui.detailMeta.textContent = `${call.agent}, started ${dateTime(call.started_at_ms)}${ended}; ${call.turns} turns; caller audio ${clock(call.caller_audio_ms)}, agent audio ${clock(call.agent_audio_ms)}.`;
      this.renderMetrics(call.metrics || []);
      this.showSummary(call.summary);
      await this.showRecording(callId, call.recording === true);
      this.ui.list.hidden = true;
      this.ui.detail.hidden = false;
      this.ui.detailHeading.focus();
    } catch (e) {
      this.status(`Reading call ${callId} failed: ${e.describe ? e.describe() : e.message}`, "error");
    }
  }

  /** The call's summary and structured fields, if it has them. */
  showSummary(summary) {
    const { detailSummary: box, detailSummaryText: text, detailFields: fields, detailSummaryHow: how } = this.ui;
    box.hidden = !summary;
    if (!summary) return;
    text.textContent = summary.text;
    const entries = Object.entries(summary.fields || {});
    fields.replaceChildren(
      ...entries.flatMap(([name, value]) => [
        el("dt", {}, name.replace(/_/g, " ")),
        value === null ? el("dd", { class: "missing" }, "not said") : el("dd", {}, String(value)),
      ]),
    );
    fields.hidden = entries.length === 0;
    const when = dateTime(summary.at_ms);
    how.textContent =
      summary.method === "extract"
        ? `The caller's own words (no model summary), ${when}.`
        : `${summary.method === "json" ? "Written" : "Drawn from the call"} by ${summary.engine}, ${when}.`;
  }

  /** A player for the call's recording, if it has one (an <audio> element cannot send the
   * token as a header, so it goes in the query, as for the operator socket). */
  async showRecording(callId, recorded) {
    const { detailRecording: box, detailAudio: audio } = this.ui;
    audio.pause();
    audio.removeAttribute("src");
    box.hidden = true;
    if (!recorded) return;
    const path = `/api/calls/${encodeURIComponent(callId)}/recording`;
    const url = new URL(path, location.href);
    url.searchParams.set("token", await this.api.tokens.get());
    audio.src = url.href;
    box.hidden = false;
  }

  renderMetrics(metrics) {
    const head = el("tr", {}, el("th", { scope: "col" }, "Turn"), ...METRIC_FIELDS.map(([, label]) => el("th", { scope: "col", class: "num" }, label)));
    const rows = metrics.map((m) =>
      el(
        "tr",
        {},
        el("th", { scope: "row", "data-label": "Turn" }, String(m.turn_id)),
        ...METRIC_FIELDS.map(([field, label]) => el("td", { class: "num", "data-label": label }, millis(m.timings && m.timings[field]))),
      ),
    );
    this.ui.metrics.replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
    this.ui.metricsEmpty.hidden = metrics.length > 0;
    this.ui.metrics.hidden = metrics.length === 0;
  }

  closeDetail() {
    const id = this.stats.opened;
    this.ui.detailAudio.pause();
    this.ui.detail.hidden = true;
    this.ui.list.hidden = false;
    const btn = id && this.ui.body.querySelector(`tr[data-call-id="${CSS.escape(id)}"] button`);
    (btn || this.ui.heading).focus();
  }

  /** Forgets what is shown (signed out). */
  clear() {
    this.ui.body.replaceChildren();
    this.ui.summary.textContent = "";
    this.ui.more.hidden = true;
    this.nextBefore = null;
    this.transcript.clear();
    this.ui.detail.hidden = true;
    this.ui.list.hidden = false;
  }

  async export(format) {
    const btn = format === "csv" ? this.ui.exportCsv : this.ui.exportJson;
    btn.disabled = true;
    try {
      const filters = this.readFilters();
      const got = await this.api.download("/api/calls/export", { format, ...filters }, `calls.${format}`);
      this.stats.exports.push({ format, ...got });
      const more = got.truncated ? " Only the newest 10 000 matching calls are in it: narrow the filters for the rest." : "";
      const size = got.bytes < 1024 ? `${got.bytes} bytes` : `${Math.round(got.bytes / 1024)} KB`;
      this.status(`Downloaded ${got.filename} (${size}).${more}`, got.truncated ? "warn" : "info");
    } catch (e) {
      this.status(`Export failed: ${e.describe ? e.describe() : e.message}`, "error");
    } finally {
      btn.disabled = false;
    }
  }
}
