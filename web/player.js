// Reply playback: pcm16 chunks become AudioBuffers scheduled back to back on the context's clock
// (gapless as long as audio arrives in time), grouped by reply. A reply can be stopped at once,
// dropping what is queued; while a reply plays, how much of it was heard is reported every
// 250 ms, and once more when it ends or is stopped.

import { pcm16ToFloat32 } from "./audio-util.js";

/** Head room when scheduling the first chunk, or the next one after the queue ran dry. */
const LEAD_SECS = 0.06;
const REPORT_MS = 250;

export class Player {
  /**
   * @param {AudioContext} ctx
   * @param {{onReport?: (meta: object, playedMs: number, final: boolean) => void}} options
   */
  constructor(ctx, { onReport } = {}) {
    this.ctx = ctx;
    this.out = ctx.createGain();
    this.out.connect(ctx.destination);
    this.onReport = onReport || (() => {});
    /** Replies with audio still scheduled or playing, by key. */
    this.items = new Map();
    this.nextTime = 0;
    this.timer = null;
    /** Played ms of every reply seen, by key (kept after it ends). */
    this.played = {};
    this.stats = { chunks: 0, scheduledMs: 0, stopped: 0, underruns: 0 };
  }

  /** Queues a chunk of little-endian pcm16 mono audio for the reply `key`. */
  enqueuePcm16(key, meta, bytes, sampleRate) {
    const samples = pcm16ToFloat32(bytes);
    if (samples.length === 0) return;
    const buffer = this.ctx.createBuffer(1, samples.length, sampleRate);
    buffer.copyToChannel(samples, 0);
    this.schedule(key, meta, buffer);
  }

  /** Plays a whole decoded reply (push-to-talk). */
  playBuffer(key, meta, buffer) {
    this.schedule(key, meta, buffer);
    this.finish(key);
  }

  /** No more audio will come for `key`: its final report goes out when it has played. */
  finish(key) {
    const item = this.items.get(key);
    if (item) item.done = true;
  }

  /** Whether any reply audio is scheduled or sounding now. */
  isPlaying() {
    const now = this.ctx.currentTime;
    for (const item of this.items.values()) {
      const last = item.segments[item.segments.length - 1];
      if (!item.stopped && last && last.end > now) return true;
    }
    return false;
  }

  /** Stops the reply `key` now and drops its queued audio; returns the ms that were played. */
  stop(key) {
    const item = this.items.get(key);
    if (!item) return this.played[key] || 0;
    const now = this.ctx.currentTime;
    for (const src of item.sources) {
      src.onended = null;
      try {
        src.stop();
      } catch {
        // not started yet in some engines: disconnecting silences it anyway
      }
      src.disconnect();
    }
    item.sources.clear();
    item.segments = item.segments
      .filter((s) => s.start < now)
      .map((s) => ({ start: s.start, end: Math.min(s.end, now) }));
    item.stopped = true;
    this.stats.stopped += 1;
    this.items.delete(key);
    this.nextTime = 0;
    for (const other of this.items.values()) {
      const last = other.segments[other.segments.length - 1];
      if (last) this.nextTime = Math.max(this.nextTime, last.end);
    }
    return this.report(item, true);
  }

  /** Stops every reply. */
  stopAll() {
    for (const key of [...this.items.keys()]) this.stop(key);
  }

  schedule(key, meta, buffer) {
    let item = this.items.get(key);
    if (!item) {
      if (key in this.played) return; // stopped or finished earlier: stale audio
      item = { key, meta, segments: [], sources: new Set(), done: false, stopped: false, sent: -1 };
      this.items.set(key, item);
      this.played[key] = 0;
    }
    const now = this.ctx.currentTime;
    let start = this.nextTime;
    if (start < now + 0.01) {
      if (item.segments.length > 0) this.stats.underruns += 1;
      start = now + LEAD_SECS;
    }
    const src = this.ctx.createBufferSource();
    src.buffer = buffer;
    src.connect(this.out);
    src.onended = () => {
      item.sources.delete(src);
      src.disconnect();
    };
    src.start(start);
    item.sources.add(src);
    const end = start + buffer.duration;
    const last = item.segments[item.segments.length - 1];
    if (last && Math.abs(last.end - start) < 1e-6) last.end = end;
    else item.segments.push({ start, end });
    this.nextTime = end;
    this.stats.chunks += 1;
    this.stats.scheduledMs += buffer.duration * 1000;
    if (!this.timer) this.timer = setInterval(() => this.tick(), REPORT_MS);
  }

  playedMsOf(item) {
    const now = this.ctx.currentTime;
    let secs = 0;
    for (const s of item.segments) secs += Math.max(0, Math.min(now, s.end) - s.start);
    return Math.round(secs * 1000);
  }

  report(item, final) {
    const ms = this.playedMsOf(item);
    this.played[item.key] = ms;
    if (final || ms !== item.sent) {
      item.sent = ms;
      this.onReport(item.meta, ms, final);
    }
    return ms;
  }

  tick() {
    const now = this.ctx.currentTime;
    for (const item of [...this.items.values()]) {
      const last = item.segments[item.segments.length - 1];
      if (item.done && (!last || now >= last.end)) {
        this.items.delete(item.key);
        this.report(item, true);
      } else if (last && now > item.segments[0].start) {
        this.report(item, false);
      }
    }
    if (this.items.size === 0) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  /** Total ms of reply audio played so far. */
  totalPlayedMs() {
    let sum = 0;
    for (const [key, ms] of Object.entries(this.played)) {
      const live = this.items.get(key);
      sum += live ? this.playedMsOf(live) : ms;
    }
    return sum;
  }
}
