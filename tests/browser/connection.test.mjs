// The page's socket logic (web/connection.js) against a scripted stand-in for WebSocket: the
// token goes in the subprotocol, a missing pong counts as a dead connection, reconnects back
// off exponentially, an expired token is fetched again, and stop() closes for good.
// Run: node --test tests/browser/

import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { Connection } from "../../web/connection.js";

class FakeSocket {
  static all = [];
  static onCreate = null;
  static onSend = null;

  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.sent = [];
    this.closedWith = undefined;
    FakeSocket.all.push(this);
    if (FakeSocket.onCreate) FakeSocket.onCreate(this);
  }

  send(text) {
    const msg = JSON.parse(text);
    this.sent.push(msg);
    if (FakeSocket.onSend) FakeSocket.onSend(this, msg);
  }

  close(code) {
    this.closedWith = code ?? null;
  }

  /** The server sends a frame. */
  receive(msg) {
    if (this.onmessage) this.onmessage({ data: JSON.stringify(msg) });
  }

  /** The socket closes from the server's side or the network's. */
  drop(code = 1006) {
    if (this.onclose) this.onclose({ code, reason: "" });
  }
}

const HELLO = { type: "connected", session_id: "sess_1", protocol: "voxwire.v1", limits: {}, engines: {} };

function tokens(...values) {
  const t = { calls: 0, invalidated: 0 };
  t.get = async () => values[Math.min(t.calls++, values.length - 1)];
  t.invalidate = () => {
    t.invalidated += 1;
  };
  return t;
}

async function until(what, fn, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

let conn = null;
function connection(options) {
  conn = new Connection({ url: "ws://test/ws", WebSocketImpl: FakeSocket, random: () => 0.5, ...options });
  return conn;
}

afterEach(() => {
  if (conn) conn.stop();
  conn = null;
  FakeSocket.all = [];
  FakeSocket.onCreate = null;
  FakeSocket.onSend = null;
});

test("connects with the token as a subprotocol and reports its states", async () => {
  const c = connection({ tokens: tokens("tok") });
  const states = [];
  const messages = [];
  c.addEventListener("state", (e) => states.push(e.detail.state));
  c.addEventListener("message", (e) => messages.push(e.detail.type));
  c.start();
  await until("a socket", () => FakeSocket.all.length === 1);
  const ws = FakeSocket.all[0];
  assert.deepEqual(ws.protocols, ["voxwire.v1", "bearer.tok"]);
  assert.equal(c.send({ type: "ping" }), false, "nothing is sent before `connected`");
  ws.receive(HELLO);
  assert.deepEqual(states, ["connecting", "connected"]);
  assert.deepEqual(messages, ["connected"]);
  assert.equal(c.send({ type: "text", text: "hi" }), true);
  assert.deepEqual(ws.sent, [{ type: "text", text: "hi" }]);
});

test("a ping without a pong counts as a dead connection, and it reconnects", async () => {
  const c = connection({ tokens: tokens("tok"), pingMs: 10, pongTimeoutMs: 30, baseDelayMs: 5 });
  const states = [];
  c.addEventListener("state", (e) => states.push(e.detail.state));
  c.start();
  await until("a socket", () => FakeSocket.all.length === 1);
  const first = FakeSocket.all[0];
  first.receive(HELLO);
  await until("a second socket", () => FakeSocket.all.length === 2);
  assert.deepEqual(first.sent, [{ type: "ping", id: 1 }]);
  assert.notEqual(first.closedWith, undefined, "the dead socket is closed");
  assert.ok(states.includes("reconnecting"));
  FakeSocket.all[1].receive(HELLO);
  assert.equal(c.state, "connected");
});

test("pongs keep the connection alive", async () => {
  FakeSocket.onSend = (ws, msg) => {
    if (msg.type === "ping") ws.receive({ type: "pong", id: msg.id });
  };
  const c = connection({ tokens: tokens("tok"), pingMs: 5, pongTimeoutMs: 20 });
  c.start();
  await until("a socket", () => FakeSocket.all.length === 1);
  FakeSocket.all[0].receive(HELLO);
  await until("three pongs", () => c.stats.pongs >= 3);
  assert.equal(FakeSocket.all.length, 1);
  assert.equal(c.state, "connected");
});

test("reconnect delays double per failed attempt up to the cap", async () => {
  FakeSocket.onCreate = (ws) => queueMicrotask(() => ws.drop(1006));
  const c = connection({ tokens: tokens("tok"), baseDelayMs: 4, maxDelayMs: 32 });
  const delays = [];
  c.addEventListener("state", (e) => {
    if (e.detail.state === "error") delays.push(c.lastDelayMs);
  });
  c.start();
  await until("six failed attempts", () => delays.length >= 6);
  assert.deepEqual(delays.slice(0, 6), [4, 8, 16, 32, 32, 32]);
  assert.equal(c.state, "error", "never connected: an error, not a reconnect");
});

test("after a drop the backoff starts again from the first delay", async () => {
  const c = connection({ tokens: tokens("tok"), baseDelayMs: 4, maxDelayMs: 32 });
  c.start();
  await until("a socket", () => FakeSocket.all.length === 1);
  FakeSocket.all[0].receive(HELLO);
  FakeSocket.all[0].drop(1006);
  assert.equal(c.state, "reconnecting");
  assert.equal(c.lastDelayMs, 4);
  await until("a second socket", () => FakeSocket.all.length === 2);
  FakeSocket.all[1].receive(HELLO);
  assert.equal(c.state, "connected");
});

test("an expired token (close 1008) is fetched again for the next attempt", async () => {
  const t = tokens("old", "new");
  const c = connection({ tokens: t, baseDelayMs: 1 });
  c.start();
  await until("a socket", () => FakeSocket.all.length === 1);
  FakeSocket.all[0].receive(HELLO);
  FakeSocket.all[0].drop(1008);
  assert.equal(t.invalidated, 1);
  await until("a second socket", () => FakeSocket.all.length === 2);
  assert.deepEqual(FakeSocket.all[1].protocols, ["voxwire.v1", "bearer.new"]);
});

test("without any token it waits for one instead of retrying", async () => {
  const err = Object.assign(new Error("paste a token"), { code: "needs_token" });
  const t = { get: async () => Promise.reject(err), invalidate() {} };
  const c = connection({ tokens: t, baseDelayMs: 1 });
  c.start();
  await until("the error state", () => c.state === "error");
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(FakeSocket.all.length, 0);
  assert.equal(c.detail, "paste a token");
});

test("reconnect() replaces the socket at once, with the token in force now", async () => {
  const t = tokens("demo", "pasted");
  const c = connection({ tokens: t, baseDelayMs: 10_000 });
  c.start();
  await until("a socket", () => FakeSocket.all.length === 1);
  FakeSocket.all[0].receive(HELLO);
  c.reconnect();
  assert.equal(FakeSocket.all[0].closedWith, null, "the old socket is closed");
  await until("a second socket", () => FakeSocket.all.length === 2);
  assert.deepEqual(FakeSocket.all[1].protocols, ["voxwire.v1", "bearer.pasted"]);
  FakeSocket.all[1].receive(HELLO);
  assert.equal(c.state, "connected");
});

test("stop() closes with 1000 and does not reconnect", async () => {
  const c = connection({ tokens: tokens("tok"), baseDelayMs: 1 });
  c.start();
  await until("a socket", () => FakeSocket.all.length === 1);
  FakeSocket.all[0].receive(HELLO);
  c.stop();
  assert.equal(FakeSocket.all[0].closedWith, 1000);
  assert.equal(c.state, "closed");
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(FakeSocket.all.length, 1);
});
