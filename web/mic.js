// The microphone: getUserMedia with echo cancellation and noise suppression, an AudioWorklet
// that resamples to 16 kHz pcm16, 500 ms chunks for the socket, recordings for push-to-talk,
// and a loudness meter with a simple "speaking" indicator.

import { concatBytes } from "./audio-util.js";

export const MIC_RATE = 16000;
/** Level (dBFS) above which the meter shows the caller as speaking. */
const SPEECH_DB = -45;
/** Quiet time after which the meter shows the caller as silent again. */
const QUIET_SECS = 0.4;

const loadedContexts = new WeakSet();

export class Mic extends EventTarget {
  /**
   * @param {AudioContext} ctx
   * @param {{chunkMs?: number}} options  `chunkMs`: length of each `chunk` event's audio
   */
  constructor(ctx, { chunkMs = 500 } = {}) {
    super();
    this.ctx = ctx;
    this.chunkBytes = Math.round((MIC_RATE * 2 * chunkMs) / 1000);
    this.running = false;
    /** When true, `chunk` events carry the audio (real-time mode). */
    this.streaming = false;
    this.level = -120;
    this.speaking = false;
    this.stats = { onsets: 0, ends: 0, lastOnset: null, lastEnd: null, blocks: 0, chunks: 0 };
    this.pending = [];
    this.pendingBytes = 0;
    this.recording = null;
    this.opening = null;
  }

  /** Opens the microphone (asks for permission the first time). Safe to call repeatedly. */
  start() {
    if (this.running) return Promise.resolve();
    if (!this.opening) this.opening = this.open().finally(() => (this.opening = null));
    return this.opening;
  }

  async open() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("this page cannot use the microphone (it needs https or localhost)");
    }
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: {
        echoCancellation: true,
        noiseSuppression: true,
        autoGainControl: true,
        channelCount: 1,
      },
    });
    try {
      if (!loadedContexts.has(this.ctx)) {
        await this.ctx.audioWorklet.addModule(new URL("./mic-worklet.js", import.meta.url));
        loadedContexts.add(this.ctx);
      }
      this.stream = stream;
      this.source = this.ctx.createMediaStreamSource(stream);
      this.node = new AudioWorkletNode(this.ctx, "voxwire-mic", {
        numberOfInputs: 1,
        numberOfOutputs: 1,
        outputChannelCount: [1],
        processorOptions: { targetRate: MIC_RATE, blockMs: 50 },
      });
      // The processor must be pulled by the graph, but its output is silence: a muted sink.
      this.sink = this.ctx.createGain();
      this.sink.gain.value = 0;
      this.source.connect(this.node);
      this.node.connect(this.sink);
      this.sink.connect(this.ctx.destination);
      this.node.port.onmessage = (e) => this.onBlock(e.data);
      const track = stream.getAudioTracks()[0];
      if (track) track.addEventListener("ended", () => this.stop());
      this.running = true;
      this.dispatchEvent(new Event("state"));
    } catch (e) {
      stream.getTracks().forEach((t) => t.stop());
      throw e;
    }
  }

  /** Closes the microphone and drops unsent audio. */
  stop() {
    if (!this.running) return;
    this.running = false;
    this.node.port.onmessage = null;
    this.source.disconnect();
    this.node.disconnect();
    this.sink.disconnect();
    this.stream.getTracks().forEach((t) => t.stop());
    this.pending = [];
    this.pendingBytes = 0;
    this.recording = null;
    this.level = -120;
    this.speaking = false;
    this.dispatchEvent(new Event("level"));
    this.dispatchEvent(new Event("state"));
  }

  /** Drops audio not yet sent as a chunk. */
  clearPending() {
    this.pending = [];
    this.pendingBytes = 0;
  }

  /** Starts keeping everything the microphone hears, for push-to-talk. */
  beginRecording() {
    this.recording = [];
  }

  /** Stops recording; returns the pcm16 bytes at `MIC_RATE`. */
  endRecording() {
    const parts = this.recording || [];
    this.recording = null;
    return concatBytes(parts);
  }

  onBlock({ pcm, level, time }) {
    const bytes = new Uint8Array(pcm);
    this.stats.blocks += 1;
    this.level = level;
    this.detect(level, time);
    if (this.recording) this.recording.push(bytes);
    if (this.streaming) {
      this.pending.push(bytes);
      this.pendingBytes += bytes.byteLength;
      if (this.pendingBytes >= this.chunkBytes) {
        const all = concatBytes(this.pending);
        let offset = 0;
        while (all.byteLength - offset >= this.chunkBytes) {
          const chunk = all.slice(offset, offset + this.chunkBytes);
          offset += this.chunkBytes;
          this.stats.chunks += 1;
          this.dispatchEvent(new CustomEvent("chunk", { detail: chunk }));
        }
        this.pending = offset < all.byteLength ? [all.slice(offset)] : [];
        this.pendingBytes = all.byteLength - offset;
      }
    }
    this.dispatchEvent(new Event("level"));
  }

  detect(level, time) {
    if (level > SPEECH_DB) {
      this.lastLoud = time;
      if (!this.speaking) {
        this.speaking = true;
        this.stats.onsets += 1;
        this.stats.lastOnset = time;
      }
    } else if (this.speaking && time - this.lastLoud > QUIET_SECS) {
      this.speaking = false;
      this.stats.ends += 1;
      this.stats.lastEnd = time;
    }
  }
}

/** The meter's 0..1 value for a level in dBFS (-60 dB and below read as 0). */
export function meterValue(db) {
  return Math.max(0, Math.min(1, (db + 60) / 60));
}
