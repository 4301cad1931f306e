// The operator's voice while they hold a takeover: a hold-to-talk button (web/ptt.js's
// HoldToTalk: pointer, or Space/Enter on the button; a tap latches it until the next press)
// that streams web/mic.js's 16 kHz pcm16 in 100 ms binary frames over the operator socket,
// and sends `voice_end` on release.

import { Mic } from "../mic.js";
import { HoldToTalk } from "../ptt.js";

export class Talk {
  /**
   * @param {HTMLButtonElement} button
   * @param {object} o
   * @param {() => AudioContext} o.audio            the page's audio context (made on a click)
   * @param {() => Promise<import("./operator-socket.js").OperatorSocket>} o.socket  an open socket
   * @param {() => boolean} o.allowed                 the operator holds the takeover
   * @param {(text: string, level: string) => void} o.status
   */
  constructor(button, { audio, socket, allowed, status }) {
    Object.assign(this, { button, audio, socket, allowed, status });
    this.mic = null;
    this.live = null; // the socket the voice goes to while talking
    this.stats = { segments: 0, chunks: 0 };
    this.hold = new HoldToTalk(button, {
      onStart: () => this.begin().catch((e) => this.fail(e)),
      onStop: () => this.end(),
      spaceEnabled: () => false,
      canStart: () => this.allowed(),
    });
  }

  get talking() {
    return this.hold.recording;
  }

  async begin() {
    this.render();
    const ctx = this.audio();
    if (!this.mic) {
      this.mic = new Mic(ctx, { chunkMs: 100 });
      this.mic.addEventListener("chunk", (e) => {
        if (this.live && this.talking) {
          this.stats.chunks += 1;
          this.live.sendAudio(e.detail);
        }
      });
    }
    const [sock] = await Promise.all([this.socket(), this.mic.start()]);
    if (!this.talking) return; // released meanwhile
    this.live = sock;
    this.mic.clearPending();
    this.mic.streaming = true;
    this.stats.segments += 1;
    this.status("Talking to the caller: release the button to stop.", "info");
  }

  end() {
    if (this.mic) {
      this.mic.streaming = false;
      this.mic.clearPending();
    }
    if (this.live) {
      this.live.send({ type: "voice_end" });
      this.status("Stopped talking: your words are being transcribed for the call's history.", "info");
    }
    this.live = null;
    this.render();
  }

  fail(e) {
    this.hold.reset();
    this.end();
    this.status(`Cannot talk: ${e.describe ? e.describe() : e.message}`, "error");
  }

  /** Stops talking and closes the microphone (hand back, call closed). */
  stop() {
    if (this.talking) {
      this.hold.reset();
      this.end();
    }
    if (this.mic) this.mic.stop();
    this.render();
  }

  render() {
    const on = this.talking;
    this.button.setAttribute("aria-pressed", String(on));
    this.button.textContent = on ? "Talking… (release to stop)" : "Hold to talk";
  }
}
