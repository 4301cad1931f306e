// Push-to-talk: a hold-to-talk button (pointer, Space or Enter on the button, or the space bar
// anywhere outside form fields; a quick tap latches recording until the next press), and one
// turn over HTTP: the recording as a WAV to POST /api/voice/turn, JSON back.

import { wavFromPcm16 } from "./audio-util.js";

/** A press shorter than this is a tap: recording goes on until the next press. */
const TAP_MS = 300;

export class HoldToTalk {
  /**
   * @param {HTMLButtonElement} button
   * @param {{onStart: () => void, onStop: () => void, spaceEnabled: () => boolean,
   *   canStart: () => boolean}} handlers  `canStart`: false while a turn is being answered
   */
  constructor(button, { onStart, onStop, spaceEnabled, canStart }) {
    Object.assign(this, { button, onStart, onStop, spaceEnabled, canStart });
    this.active = null; // what holds it: "pointer", "key" or "space"
    this.latched = false;
    button.addEventListener("pointerdown", (e) => {
      if (e.button !== 0) return;
      e.preventDefault();
      button.setPointerCapture(e.pointerId);
      this.press("pointer");
    });
    for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
      button.addEventListener(type, () => this.release("pointer"));
    }
    button.addEventListener("contextmenu", (e) => e.preventDefault());
    button.addEventListener("keydown", (e) => {
      if (!isTalkKey(e)) return;
      e.preventDefault();
      e.stopPropagation();
      if (!e.repeat) this.press("key");
    });
    button.addEventListener("keyup", (e) => {
      if (!isTalkKey(e)) return;
      e.preventDefault();
      e.stopPropagation();
      this.release("key");
    });
    document.addEventListener("keydown", (e) => {
      if (e.code !== "Space" || !this.spaceEnabled() || isInteractive(e.target)) return;
      e.preventDefault();
      if (!e.repeat) this.press("space");
    });
    document.addEventListener("keyup", (e) => {
      if (e.code !== "Space" || this.active !== "space") return;
      e.preventDefault();
      this.release("space");
    });
    // A key released in another window never comes back: stop rather than record on.
    window.addEventListener("blur", () => {
      if (this.active === "key" || this.active === "space") this.release(this.active, true);
    });
  }

  get recording() {
    return this.active !== null || this.latched;
  }

  press(via) {
    if (this.latched) {
      this.latched = false;
      this.active = null;
      this.onStop();
      return;
    }
    if (this.active || !this.canStart()) return;
    this.active = via;
    this.pressedAt = performance.now();
    this.onStart();
  }

  release(via, force = false) {
    if (this.active !== via) return;
    this.active = null;
    if (!force && performance.now() - this.pressedAt < TAP_MS) {
      this.latched = true;
      return;
    }
    this.onStop();
  }

  /** Forgets a press in progress without sending (say, the mode changed). */
  reset() {
    this.active = null;
    this.latched = false;
  }
}

function isTalkKey(e) {
  return e.code === "Space" || e.code === "Enter" || e.code === "NumpadEnter";
}

function isInteractive(target) {
  return (
    target instanceof Element &&
    target.closest("input, textarea, select, button, a[href], summary, [contenteditable]") !== null
  );
}

export class TurnError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * Sends one recorded turn to the push-to-talk route.
 * @returns {Promise<{call_id: string, transcript: string, response: string, audio: string|null,
 *   no_speech: boolean, timings: object}>}
 */
export async function postTurn({ pcm, sampleRate, token, callId, agent }) {
  const query = new URLSearchParams();
  if (callId) query.set("call_id", callId);
  if (agent) query.set("agent", agent);
  const qs = query.toString();
  let res;
  try {
    res = await fetch(`/api/voice/turn${qs ? `?${qs}` : ""}`, {
      method: "POST",
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "audio/wav" },
      body: wavFromPcm16(pcm, sampleRate),
    });
  } catch {
    throw new TurnError(0, "unreachable", "the server cannot be reached");
  }
  if (!res.ok) {
    let code = "http_error";
    let message = `HTTP ${res.status}`;
    try {
      const body = await res.json();
      code = body.error.code;
      message = body.error.message;
    } catch {
      // not a JSON error body
    }
    throw new TurnError(res.status, code, message);
  }
  return res.json();
}
