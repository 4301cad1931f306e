// The operators' dashboard: sign-in, today's figures, the live calls from the monitor stream,
// one call's view with the operator's controls, and the history of finished calls. Audio (listen
// in, the microphone) starts only from a click, as browsers require.

import { Api } from "./api.js";
import { OperatorAuth } from "./auth.js";
import { CallView } from "./call-view.js";
import { History } from "./history.js";
import { LiveCalls, LiveList } from "./live-calls.js";
import { Monitor } from "./monitor.js";
import { TodayStats } from "./stats.js";

const $ = (id) => document.getElementById(id);

const FEED_TEXT = {
  idle: "Signed out",
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  error: "Stream refused",
};
/** The pill's data-state (colours from style.css) for each monitor state. */
const FEED_PILL = { idle: "idle", connecting: "connecting", live: "connected", reconnecting: "reconnecting", error: "error" };

const auth = new OperatorAuth();
const api = new Api(auth);
const live = new LiveCalls();
const monitor = new Monitor(auth);
const problems = [];

let audioCtx = null;
/** The page's one audio context, made on the first click that needs sound. */
function audio() {
  if (!audioCtx) audioCtx = new AudioContext({ latencyHint: "interactive" });
  if (audioCtx.state === "suspended") audioCtx.resume().catch(() => {});
  return audioCtx;
}

// ---- the status area ----

let statusTimer = null;
function status(text, level = "info") {
  clearTimeout(statusTimer);
  const box = $("status");
  box.textContent = text;
  box.dataset.level = level;
  if (level === "error") problems.push(text);
  if (level === "info" && text) statusTimer = setTimeout(() => (box.textContent = ""), 10_000);
}

// ---- the parts ----

const list = new LiveList($("live-body"), $("live-empty"), $("live-count"), (id) => openCall(id));

const view = new CallView(
  {
    section: $("call"),
    heading: $("call-h"),
    close: $("call-close"),
    caller: $("call-caller"),
    agent: $("call-agent"),
    state: $("call-state"),
    duration: $("call-duration"),
    v2v: $("call-v2v"),
    transcript: $("call-transcript"),
    announcer: $("announcer"),
    listen: $("listen"),
    socketState: $("socket-state"),
    takeover: $("takeover"),
    release: $("release"),
    talk: $("talk"),
    end: $("end-call"),
    sayForm: $("say-form"),
    sayInput: $("say-input"),
    sayBtn: $("say-btn"),
    sayHint: $("say-hint"),
    noteForm: $("note-form"),
    noteInput: $("note-input"),
    noteBtn: $("note-btn"),
  },
  { api, auth, live, audio, status },
);
view.addEventListener("closed", () => list.select(null));
view.addEventListener("focus-list", () => {
  const btn = $("live-body").querySelector("button");
  (btn || $("live-h")).focus();
});

const history = new History(
  {
    heading: $("history-h"),
    list: $("history-list"),
    form: $("history-form"),
    body: $("history-body"),
    empty: $("history-empty"),
    summary: $("history-summary"),
    more: $("history-more"),
    exportCsv: $("export-csv"),
    exportJson: $("export-json"),
    detail: $("history-detail"),
    detailHeading: $("detail-h"),
    detailMeta: $("detail-meta"),
    detailRecording: $("detail-recording"),
    detailSummary: $("detail-summary"),
    detailSummaryText: $("detail-summary-text"),
    detailFields: $("detail-fields"),
    detailSummaryHow: $("detail-summary-how"),
    detailAudio: $("detail-audio"),
    detailTranscript: $("detail-transcript"),
    metrics: $("detail-metrics"),
    metricsEmpty: $("detail-metrics-empty"),
    back: $("detail-back"),
    announcer: $("announcer"),
  },
  { api, status },
);

const fields = {};
for (const dd of document.querySelectorAll(".today dd[data-field]")) fields[dd.dataset.field] = dd;
const today = new TodayStats(fields, $("today-caption"), { api });

function openCall(callId) {
  list.select(callId);
  view.open(callId).catch((e) => status(e.message, "error"));
}

// ---- the monitor stream ----

monitor.addEventListener("event", (e) => {
  const ev = e.detail;
  live.apply(ev);
  view.onMonitorEvent(ev);
  if (ev.type === "call_ended" || ev.type === "call_started") today.refresh();
});
monitor.addEventListener("resync", (e) => {
  const missed = e.detail.missed ?? "some";
  status(`The dashboard fell behind (${missed} events missed): reading the calls again.`, "warn");
  view.reload();
});
monitor.addEventListener("state", (e) => {
  const { state, detail } = e.detail;
  const pill = $("feed");
  pill.dataset.state = FEED_PILL[state] || state;
  $("feed-text").textContent = FEED_TEXT[state] || state;
  $("feed-detail").textContent = detail ? `(${detail})` : "";
  if (state === "error" && monitor.lastError && monitor.lastError.status === 401 && auth.kind === "pasted") {
    status(`The token was refused (${monitor.lastError.describe()}): sign in again.`, "error");
  }
});
live.addEventListener("change", () => list.render(live.list()));

setInterval(() => {
  list.tick();
  view.tick();
}, 1000);

// ---- signing in and out ----

function showSignedIn() {
  const signedIn = auth.signedIn;
  $("signin").hidden = signedIn;
  $("dash").hidden = !signedIn;
  $("who").hidden = !signedIn;
  if (signedIn) {
    const who = auth.who;
    $("who-text").textContent = `${who.sub} (${who.role}${who.org ? `, ${who.org}` : ""}${auth.kind === "demo" ? ", demo" : ""})`;
    monitor.start();
    today.start();
    history.search();
    loadAgents();
  } else {
    monitor.stop();
    today.stop();
    today.clear();
    view.close({ quiet: true });
    live.clear();
    history.clear();
  }
}

$("signin-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = $("op-token");
  try {
    auth.usePasted(input.value);
    input.value = "";
    status(`Signed in as ${auth.who.sub}.`, "info");
    $("live-h").focus();
  } catch (err) {
    status(`Sign-in failed: ${err.message}`, "error");
    input.focus();
  }
});
$("use-demo").addEventListener("click", async () => {
  try {
    await auth.useDemo();
    status(`Signed in with a demo token as ${auth.who.sub}.`, "info");
    $("live-h").focus();
  } catch (err) {
    status(`No demo token: ${err.message}.`, "error");
  }
});
$("sign-out").addEventListener("click", () => {
  auth.signOut();
  status("Signed out.", "info");
  $("signin-h").focus();
});
auth.addEventListener("change", showSignedIn);

async function loadAgents() {
  try {
    const res = await fetch("/api/agents", { cache: "no-store" });
    if (!res.ok) return;
    const body = await res.json();
    $("agent-names").replaceChildren(...body.agents.map((name) => Object.assign(document.createElement("option"), { value: name })));
  } catch {
    // the filter still takes any name typed
  }
}

/** A read-only view of the dashboard's state for tests and curious developers. */
window.voxwireDashboard = {
  snapshot() {
    return {
      signedIn: auth.signedIn,
      who: auth.who,
      monitor: { state: monitor.state, detail: monitor.detail, ...monitor.stats },
      live: live.list(),
      view: view.snapshot(),
      history: { ...history.stats, exports: [...history.stats.exports] },
      today: today.last,
      status: $("status").textContent,
      problems: [...problems],
      audio: audioCtx && { state: audioCtx.state, sampleRate: audioCtx.sampleRate },
    };
  },
};

showSignedIn();
