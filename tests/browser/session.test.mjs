// The page's call logic (web/session.js) against a stand-in connection: a call the server
// hands on (it stops, or another node holds the call now) is resumed by its id after the
// reconnect; a call that really ended is not.
// Run: node --test tests/browser/

import assert from "node:assert/strict";
import { test } from "node:test";
import { Session } from "../../web/session.js";

class FakeConnection extends EventTarget {
  constructor() {
    super();
    this.ready = true;
    this.sent = [];
  }
  send(msg) {
    this.sent.push(msg);
    return true;
  }
  /** The socket closes and comes back: `down`, then the server's `connected`. */
  bounce(session) {
    this.ready = false;
    this.dispatchEvent(new CustomEvent("down", { detail: { wasReady: true } }));
    this.ready = true;
    session.handle({ type: "connected", engines: {} });
  }
}

const transcript = {
  notes: [],
  newGroup: () => 1,
  settle() {},
  note(text) {
    this.notes.push(text);
  },
};

function session() {
  const connection = new FakeConnection();
  transcript.notes = [];
  const s = new Session({
    connection,
    transcript,
    latency: { show() {} },
    player: () => null,
    agent: () => "",
  });
  const notices = [];
  s.addEventListener("notice", (e) => notices.push(e.detail.text));
  s.start();
  s.handle({ type: "call_started", call_id: "call_1", agent: "receptionist", resumed: false });
  return { s, connection, notices };
}

const starts = (c) => c.sent.filter((m) => m.type === "start_call");

for (const reason of ["moved", "server_shutdown"]) {
  test(`a call ended with ${reason} is resumed by its id after the reconnect`, () => {
    const { s, connection, notices } = session();
    s.handle({ type: "call_ended", call_id: "call_1", reason, turns: 2 });
    // Not on the socket that is closing.
    assert.equal(starts(connection).length, 1);
    assert.deepEqual(notices, []);
    connection.bounce(s);
    const again = starts(connection);
    assert.equal(again.length, 2);
    assert.equal(again[1].call_id, "call_1");
    s.handle({ type: "call_started", call_id: "call_1", agent: "receptionist", resumed: true });
    assert.equal(s.stats.resumed, 1);
    assert.ok(transcript.notes.includes("The server handed the call on: resuming…"), transcript.notes);
  });
}

test("a call the server ended for good is not started again", () => {
  const { s, connection, notices } = session();
  s.handle({ type: "call_ended", call_id: "call_1", reason: "max_duration", turns: 2 });
  connection.bounce(s);
  assert.equal(starts(connection).length, 1);
  assert.deepEqual(notices, ["The call ended: it reached its time limit."]);
});
