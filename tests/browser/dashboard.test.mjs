// The dashboard's logic without a browser: a live call's state from monitor events, the
// operator socket's audio frames, and the operator's sign-in kept in sessionStorage.
// Run: node --test tests/browser/

import assert from "node:assert/strict";
import { test } from "node:test";
import { claimsOf, OperatorAuth } from "../../web/dashboard/auth.js";
import { LiveCalls, nextState } from "../../web/dashboard/live-calls.js";
import { parseAudioFrame } from "../../web/dashboard/operator-socket.js";

const base = { call_id: "call_1", agent: "support", sub: "alice", started_at: 1000, state: "listening", taken_over_by: null, v2v: null };
const ev = (type, fields = {}) => ({ type, call_id: "call_1", agent: "support", sub: "alice", at: 2000, ...fields });

test("a turn moves a call through caller speaking, thinking, speaking and listening", () => {
  const states = [];
  let call = base;
  for (const e of [
    ev("speech_started", { item_id: 1 }),
    ev("transcript", { is_final: false, text: "what" }),
    ev("transcript", { is_final: true, text: "what time" }),
    ev("response_delta", { delta: "We" }),
    ev("response", { text: "We open at nine." }),
    ev("speech_started", { item_id: 3 }),
    ev("interrupted", { heard: "We" }),
  ]) {
    call = nextState(call, e);
    states.push(call.state);
  }
  assert.deepEqual(states, ["caller_speaking", "caller_speaking", "thinking", "speaking", "listening", "caller_speaking", "listening"]);
  assert.equal(base.state, "listening", "the call given is not changed");
});

test("an empty final transcript (no speech) goes back to listening", () => {
  assert.equal(nextState({ ...base, state: "caller_speaking" }, ev("transcript", { is_final: true, text: "" })).state, "listening");
});

test("a call taken over stays so until it is handed back", () => {
  let call = nextState(base, ev("takeover_started", { operator: "sup" }));
  assert.equal(call.state, "taken_over");
  assert.equal(call.taken_over_by, "sup");
  for (const type of ["speech_started", "response_delta", "response"]) call = nextState(call, ev(type, { is_final: true, text: "x" }));
  assert.equal(call.state, "taken_over");
  call = nextState(call, ev("takeover_ended", { operator: "sup" }));
  assert.equal(call.state, "listening");
  assert.equal(call.taken_over_by, null);
});

test("a call its flow queued for operators waits until one takes it over", () => {
  let call = nextState(base, ev("queued"));
  assert.equal(call.state, "waiting");
  for (const type of ["speech_started", "transcript", "response"]) call = nextState(call, ev(type, { is_final: true, text: "hello?" }));
  assert.equal(call.state, "waiting", "the caller's words do not change it");
  call = nextState(call, ev("takeover_started", { operator: "sam" }));
  assert.equal(call.state, "taken_over");
  assert.equal(call.taken_over_by, "sam");
});

test("metrics keep the last voice-to-voice latency", () => {
  const call = nextState(base, ev("metrics", { turn_id: 1, timings: { voice_to_voice_ms: 612.5 } }));
  assert.equal(call.v2v, 612.5);
  assert.equal(nextState(call, ev("metrics", { turn_id: 2, timings: {} })).v2v, 612.5);
});

test("the live list follows the snapshot, then call starts and ends", () => {
  const live = new LiveCalls();
  live.apply({ type: "live_calls", at: 5, calls: [{ ...base }, { ...base, call_id: "call_2", taken_over_by: "sup", state: "listening" }] });
  assert.equal(live.list().length, 2);
  assert.equal(live.get("call_2").state, "taken_over");
  live.apply(ev("call_started", { call_id: "call_3", at: 3000 }));
  assert.equal(live.list()[0].call_id, "call_3", "newest first");
  live.apply(ev("call_ended", { call_id: "call_1", reason: "client_ended" }));
  assert.equal(live.get("call_1"), null);
  live.apply({ type: "live_calls", at: 6, calls: [] });
  assert.equal(live.list().length, 0, "a fresh snapshot replaces everything");
});

test("audio frames: stream, sample rate and samples", () => {
  const frame = new Uint8Array([2, 0, 0x22, 0x56, 1, 0, 0xff, 0x7f]);
  const parsed = parseAudioFrame(frame.buffer);
  assert.equal(parsed.stream, "agent");
  assert.equal(parsed.sampleRate, 22050);
  assert.deepEqual([...parsed.pcm], [1, 0, 0xff, 0x7f]);
  assert.equal(parseAudioFrame(new Uint8Array([1, 0, 0x80, 0x3e]).buffer).sampleRate, 16000);
  assert.equal(parseAudioFrame(new Uint8Array([3, 0, 0x80, 0x3e]).buffer), null, "unknown stream");
  assert.equal(parseAudioFrame(new Uint8Array([1, 0]).buffer), null, "too short");
});

function jwt(claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}.c2ln`;
}

class MemoryStorage {
  constructor() {
    this.map = new Map();
  }
  getItem(k) {
    return this.map.has(k) ? this.map.get(k) : null;
  }
  setItem(k, v) {
    this.map.set(k, String(v));
  }
  removeItem(k) {
    this.map.delete(k);
  }
}

test("a pasted operator token is kept in session storage until sign-out", async () => {
  const storage = new MemoryStorage();
  const token = jwt({ sub: "sup", role: "operator", org: "acme", exp: Math.floor(Date.now() / 1000) + 3600 });
  const auth = new OperatorAuth(storage);
  assert.equal(auth.signedIn, false);
  auth.usePasted(` ${token} `);
  assert.deepEqual(claimsOf(token).sub, "sup");
  const again = new OperatorAuth(storage);
  assert.equal(again.signedIn, true);
  assert.equal(await again.get(), token);
  assert.equal(again.who.org, "acme");
  again.signOut();
  assert.equal(new OperatorAuth(storage).signedIn, false);
});

test("a caller's token, an expired one and garbage are refused at sign-in", () => {
  const auth = new OperatorAuth(new MemoryStorage());
  const hour = Math.floor(Date.now() / 1000) + 3600;
  assert.throws(() => auth.usePasted(jwt({ sub: "alice", exp: hour })), /role is caller/);
  assert.throws(() => auth.usePasted(jwt({ sub: "sup", role: "operator", exp: 1 })), /expired/);
  assert.throws(() => auth.usePasted("not a token"), /not a token/);
  assert.equal(auth.signedIn, false);
});

class FakeEventSource {
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.closed = false;
    FakeEventSource.all.push(this);
  }
  close() {
    this.closed = true;
    this.readyState = 2;
  }
  receive(ev) {
    this.onmessage({ data: JSON.stringify(ev) });
  }
}

test("the monitor stream: a token in the URL, a fresh snapshot after `lagged`, a new token after a refusal", async (t) => {
  globalThis.location = { href: "http://127.0.0.1:3001/dashboard/" };
  const realFetch = globalThis.fetch;
  t.after(() => {
    globalThis.fetch = realFetch;
    delete globalThis.location;
  });
  const { Monitor } = await import("../../web/dashboard/monitor.js");
  let n = 0;
  let invalidated = 0;
  const tokens = { get: async () => `tok${++n}`, invalidate: () => invalidated++ };
  FakeEventSource.all = [];
  const m = new Monitor(tokens, { EventSourceImpl: FakeEventSource });
  const got = [];
  let resyncs = 0;
  m.addEventListener("event", (e) => got.push(e.detail.type));
  m.addEventListener("resync", () => resyncs++);
  m.start();
  await new Promise((r) => setTimeout(r, 0));
  const first = FakeEventSource.all[0];
  assert.match(first.url, /\/api\/monitor\/events\?deltas=true&token=tok1$/);
  first.onopen();
  assert.equal(m.state, "live");
  first.receive({ type: "live_calls", calls: [] });
  first.receive({ type: "lagged", missed: 12, reason: "slow_reader" });
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(got, ["live_calls"]);
  assert.equal(resyncs, 1);
  assert.ok(first.closed, "the lagging stream is closed");
  const second = FakeEventSource.all[1];
  assert.ok(second, "and a new one opened for a fresh snapshot");
  // Refused (the token expired): EventSource gives up; the monitor asks why and retries.
  globalThis.fetch = async () =>
    new Response(JSON.stringify({ error: { code: "unauthorized", message: "token has expired" } }), { status: 401 });
  second.readyState = 2;
  second.onerror();
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(m.state, "error");
  assert.match(m.detail, /401 unauthorized: token has expired; retrying in 1 s/);
  assert.equal(invalidated, 1);
  m.stop();
  assert.equal(FakeEventSource.all.length, 2, "stopped: no retry");
});
