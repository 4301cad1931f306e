// The demo page: wires the connection, the conversation, the microphone, reply playback and
// push-to-talk to the controls. Audio starts only from a user's click or key press, as browsers
// require.

import { base64ToBytes } from "./audio-util.js";
import { Connection } from "./connection.js";
import { LatencyPanel } from "./latency.js";
import { Mic, MIC_RATE, meterValue } from "./mic.js";
import { Player } from "./player.js";
import { HoldToTalk, postTurn } from "./ptt.js";
import { Session } from "./session.js";
import { TokenSource } from "./token.js";
import { Transcript } from "./transcript.js";

const $ = (id) => document.getElementById(id);
const ui = {
  conn: $("conn"),
  connText: $("conn-text"),
  connDetail: $("conn-detail"),
  agent: $("agent"),
  modeRadios: [...document.querySelectorAll('input[name="mode"]')],
  realtime: $("realtime-controls"),
  ptt: $("ptt-controls"),
  callBtn: $("call-btn"),
  muteBtn: $("mute-btn"),
  stopReply: $("stop-reply"),
  pttBtn: $("ptt-btn"),
  meter: $("mic-level"),
  micState: $("mic-state"),
  notice: $("notice"),
  newConv: $("new-conv"),
  tokenBox: $("token-box"),
  tokenForm: $("token-form"),
  tokenInput: $("token"),
  textForm: $("text-form"),
  textInput: $("text-input"),
  engines: $("engines"),
};

const STATE_TEXT = {
  idle: "Not connected",
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  error: "Cannot connect",
  closed: "Disconnected",
};
/** Failed attempts after which real-time mode gives way to push-to-talk over HTTP: soon when
 * the socket never connected, later when an established one is lost (about 7 s). */
const FALLBACK_AFTER_FAILURES = 2;
const FALLBACK_AFTER_LOSS = 4;
/** Shortest push-to-talk recording worth sending. */
const MIN_RECORDING_MS = 250;

const tokens = new TokenSource();
const wsUrl = new URL("/ws", location.href);
wsUrl.protocol = location.protocol === "https:" ? "wss:" : "ws:";
const connection = new Connection({ url: wsUrl.href, tokens });
const transcript = new Transcript($("transcript"), $("announcer"));
const latency = new LatencyPanel($("latency"), $("latency-turn"));
const session = new Session({
  connection,
  transcript,
  latency,
  player: () => (audio ? audio.player : null),
  agent: () => ui.agent.value,
});

/** The audio context, microphone and player, made on the first click or key press. */
let audio = null;
let mode = "realtime";
let muted = false;
let fallback = false;
const ptt = { busy: false, recording: null, turns: 0, noSpeech: 0, last: null, errors: [] };

function ensureAudio() {
  if (!audio) {
    const ctx = new AudioContext({ latencyHint: "interactive" });
    const mic = new Mic(ctx, { chunkMs: 500 });
    const player = new Player(ctx, {
      onReport: (meta, ms) => {
        if (meta.source === "socket") session.reportPlayback(meta, ms);
      },
    });
    mic.addEventListener("chunk", (e) => {
      // Muted: silence in real time, so the server still sees the turn end.
      session.sendAudio(muted ? new Uint8Array(e.detail.byteLength) : e.detail);
    });
    mic.addEventListener("level", renderLevel);
    mic.addEventListener("state", render);
    audio = { ctx, mic, player };
    // The meter and "Stop reply" follow playback even while the microphone is off.
    setInterval(renderLevel, 250);
  }
  if (audio.ctx.state === "suspended") audio.ctx.resume().catch(() => {});
  return audio;
}

async function openMic() {
  const { mic } = ensureAudio();
  try {
    await mic.start();
    return true;
  } catch (e) {
    notice(`The microphone is not available: ${e.message || e.name}.`, "error");
    return false;
  } finally {
    render();
  }
}

// ---- real-time calls ----

async function toggleCall() {
  if (session.wantCall) return endCall();
  ensureAudio();
  muted = false;
  session.start();
  if (await openMic()) audio.mic.streaming = true;
  else muted = true;
  render();
}

async function endCall({ keepMic = false } = {}) {
  if (audio) {
    audio.mic.streaming = false;
    audio.mic.clearPending();
    audio.player.stopAll();
    if (!keepMic) audio.mic.stop();
  }
  await session.end();
  render();
}

async function toggleMute() {
  if (!muted) {
    muted = true;
  } else if (await openMic()) {
    audio.mic.streaming = true;
    muted = false;
  }
  render();
}

function stopReply() {
  if (audio) audio.player.stopAll();
  session.interrupt();
  render();
}

// ---- modes ----

async function setMode(next, why) {
  if (next === mode) return;
  mode = next;
  for (const r of ui.modeRadios) r.checked = r.value === mode;
  ui.realtime.hidden = mode !== "realtime";
  ui.ptt.hidden = mode !== "ptt";
  hold.reset();
  if (why) notice(why, "warn");
  if (mode === "ptt") {
    if (session.wantCall) await endCall({ keepMic: true });
  } else if (audio && !session.wantCall) {
    audio.mic.stop();
  }
  render();
}

// ---- push-to-talk ----

function pttStart() {
  if (ptt.busy) return;
  const { mic, player } = ensureAudio();
  player.stopAll();
  ptt.recording = openMic().then((ok) => {
    if (ok) mic.beginRecording();
    return ok;
  });
  render();
}

async function pttStop() {
  const ok = await ptt.recording;
  ptt.recording = null;
  if (!ok) return render();
  const pcm = audio.mic.endRecording();
  if ((pcm.byteLength / 2 / MIC_RATE) * 1000 < MIN_RECORDING_MS) {
    notice("Too short: hold the button while you speak.", "warn");
    return render();
  }
  ptt.busy = true;
  notice("Thinking…", "info");
  render();
  try {
    // The socket's call and this turn share one conversation, which is live in one place only.
    if (session.live || session.starting || session.wantCall) await session.end();
    const token = await tokens.get();
    const turn = { pcm, sampleRate: MIC_RATE, token, callId: session.callId, agent: ui.agent.value };
    let result;
    try {
      result = await postTurn(turn);
    } catch (e) {
      if (!turn.callId || (e.code !== "call_not_found" && e.code !== "call_already_active")) {
        throw e;
      }
      result = await postTurn({ ...turn, callId: null }); // the old conversation is unavailable
    }
    await showTurn(result);
  } catch (e) {
    ptt.errors.push(e.code || e.name);
    notice(`Push-to-talk failed: ${e.message}`, "error");
  } finally {
    ptt.busy = false;
    render();
  }
}

async function showTurn(result) {
  session.callId = result.call_id;
  ptt.turns += 1;
  if (result.no_speech) {
    ptt.noSpeech += 1;
    notice("No speech was heard: hold the button while you speak.", "warn");
    return;
  }
  notice("", "info");
  const group = transcript.newGroup();
  transcript.callerFinal(group, 1, result.transcript);
  transcript.agentFinal(group, 2, result.response);
  latency.show(result.timings || {}, "push-to-talk turn");
  const key = `p${group}`;
  ptt.last = { key, transcript: result.transcript, response: result.response };
  if (result.audio) {
    const bytes = base64ToBytes(result.audio);
    const buffer = await audio.ctx.decodeAudioData(bytes.buffer);
    audio.player.playBuffer(key, { source: "http" }, buffer);
  }
}

const hold = new HoldToTalk(ui.pttBtn, {
  onStart: pttStart,
  onStop: () => {
    pttStop().catch((e) => notice(e.message, "error"));
  },
  spaceEnabled: () => mode === "ptt",
  canStart: () => !ptt.busy,
});

// ---- conversation controls ----

async function newConversation() {
  const running = session.wantCall;
  if (audio) audio.player.stopAll();
  if (running) await session.end();
  session.forget();
  transcript.clear();
  latency.clear();
  if (running) session.start();
  render();
}

async function agentChanged() {
  const running = session.wantCall;
  if (running) await session.end();
  session.forget();
  const name = ui.agent.value || "the server's default agent";
  transcript.note(`Agent: ${name}. The next turn starts a new conversation.`);
  if (running) session.start();
  render();
}

function sendText(event) {
  event.preventDefault();
  const text = ui.textInput.value.trim();
  if (!text) return;
  if (!connection.ready) {
    notice("Typed messages need the real-time connection, which is not up right now.", "warn");
    return;
  }
  ensureAudio();
  session.sendText(text);
  ui.textInput.value = "";
  render();
}

function useToken(event) {
  event.preventDefault();
  tokens.setPasted(ui.tokenInput.value);
  ui.tokenInput.value = "";
  notice(tokens.pasted ? "Using the pasted token." : "Using demo tokens.", "info");
  connection.reconnect();
}

async function loadAgents() {
  try {
    const res = await fetch("/api/agents", { cache: "no-store" });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const body = await res.json();
    ui.agent.replaceChildren();
    for (const name of body.agents) {
      const opt = document.createElement("option");
      opt.value = name;
      opt.textContent = name === body.default ? `${name} (default)` : name;
      opt.selected = name === body.default;
      ui.agent.append(opt);
    }
  } catch (e) {
    notice(`Could not list the agents (${e.message}); the server's default answers.`, "warn");
  }
}

// ---- rendering ----

let noticeTimer = null;
function notice(text, level) {
  clearTimeout(noticeTimer);
  ui.notice.textContent = text;
  ui.notice.dataset.level = level;
  if (level === "info" && text) noticeTimer = setTimeout(() => (ui.notice.textContent = ""), 8000);
}

function renderConnection({ state, detail }) {
  ui.conn.dataset.state = state;
  ui.connText.textContent = STATE_TEXT[state] || state;
  ui.connDetail.textContent = detail ? `(${detail})` : "";
  if (state === "error" && tokens.demoAvailable === false && !tokens.pasted) {
    ui.tokenBox.open = true;
  }
  const failing = (state === "error" || state === "reconnecting") && tokens.demoAvailable !== false;
  const limit = connection.everConnected ? FALLBACK_AFTER_LOSS : FALLBACK_AFTER_FAILURES;
  if (failing && connection.failures >= limit && mode === "realtime") {
    fallback = true;
    setMode(
      "ptt",
      "The real-time connection is not available: push-to-talk over HTTP works meanwhile.",
    ).catch(() => {});
  } else if (state === "connected" && fallback) {
    fallback = false;
    notice("The real-time connection is back: choose Real-time to talk hands-free.", "info");
  }
  render();
}

let lastLevelPaint = 0;
function renderLevel() {
  const now = performance.now();
  if (now - lastLevelPaint < 80) return;
  lastLevelPaint = now;
  const mic = audio && audio.mic;
  ui.meter.value = mic && mic.running ? meterValue(mic.level) : 0;
  let state = "off";
  if (mic && mic.running) {
    if (mode === "realtime" && muted) state = "muted";
    else if (mode === "ptt" && ptt.busy) state = "sent";
    else if (mode === "ptt" && !mic.recording) state = "ready";
    else if (mode === "ptt") state = "recording";
    else state = mic.speaking ? "speaking" : "listening";
  }
  if (ui.micState.textContent !== state) ui.micState.textContent = state;
  ui.stopReply.disabled = !(audio && audio.player.isPlaying());
}

function render() {
  const calling = session.wantCall;
  ui.callBtn.textContent = calling ? "End call" : "Start call";
  ui.callBtn.classList.toggle("danger", calling);
  ui.muteBtn.hidden = !calling;
  const micLive = audio && audio.mic.running && audio.mic.streaming;
  ui.muteBtn.setAttribute("aria-pressed", String(Boolean(muted || !micLive)));
  // Push-to-talk keeps its name; pressed while recording, and not disabled while a turn is
  // answered (it would lose keyboard focus), only marked so.
  ui.pttBtn.setAttribute("aria-pressed", String(hold.recording));
  ui.pttBtn.setAttribute("aria-disabled", String(ptt.busy));
  lastLevelPaint = 0;
  renderLevel();
}

// ---- start ----

ui.callBtn.addEventListener("click", () => toggleCall().catch((e) => notice(e.message, "error")));
ui.muteBtn.addEventListener("click", () => toggleMute().catch((e) => notice(e.message, "error")));
ui.stopReply.addEventListener("click", stopReply);
ui.newConv.addEventListener("click", () => newConversation().catch((e) => notice(e.message, "error")));
ui.agent.addEventListener("change", () => agentChanged().catch((e) => notice(e.message, "error")));
ui.textForm.addEventListener("submit", sendText);
ui.tokenForm.addEventListener("submit", useToken);
for (const radio of ui.modeRadios) {
  radio.addEventListener("change", () => {
    if (!radio.checked) return;
    fallback = false;
    if (radio.value === "ptt") openMic(); // a click: the microphone may open now
    setMode(radio.value).catch((e) => notice(e.message, "error"));
  });
}
connection.addEventListener("state", (e) => renderConnection(e.detail));
session.addEventListener("change", render);
session.addEventListener("notice", (e) => notice(e.detail.text, e.detail.level));
session.addEventListener("engines", (e) => {
  const { stt, llm, tts } = e.detail || {};
  ui.engines.textContent = `Engines: speech-to-text ${stt}, language model ${llm}, voice ${tts}.`;
});
window.addEventListener("online", () => connection.retryNow());

/** A read-only view of the page's state for tests and curious developers. */
window.voxwireDebug = {
  snapshot() {
    const a = audio;
    return {
      connection: { state: connection.state, detail: connection.detail, ...connection.stats },
      mode,
      fallback,
      callId: session.callId,
      live: session.live,
      wantCall: session.wantCall,
      session: { ...session.stats, errors: [...session.stats.errors] },
      player: a && {
        ...a.player.stats,
        playedMs: { ...a.player.played },
        totalPlayedMs: a.player.totalPlayedMs(),
        playing: a.player.isPlaying(),
        contextState: a.ctx.state,
        sampleRate: a.ctx.sampleRate,
      },
      mic: a && {
        running: a.mic.running,
        streaming: a.mic.streaming,
        muted,
        level: a.mic.level,
        speaking: a.mic.speaking,
        now: a.ctx.currentTime,
        ...a.mic.stats,
      },
      ptt: { busy: ptt.busy, turns: ptt.turns, noSpeech: ptt.noSpeech, last: ptt.last, errors: [...ptt.errors] },
    };
  },
  /** Drops the socket as a network failure would; the page reconnects and resumes the call. */
  dropConnection() {
    connection.simulateDrop();
  },
};

render();
loadAgents();
connection.start();
