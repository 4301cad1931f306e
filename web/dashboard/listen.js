// Listening in: the call's two audio streams from the operator socket, each on its own
// Player (web/player.js) so the caller and the agent can sound at once. The agent's queued
// audio is dropped when the caller interrupts it.

import { Player } from "../player.js";

export class Listener {
  /** @param {AudioContext} ctx */
  constructor(ctx) {
    this.ctx = ctx;
    this.players = { caller: new Player(ctx), agent: new Player(ctx) };
    this.segment = { caller: 0, agent: 0 };
    this.stats = { caller: 0, agent: 0, flushed: 0 };
  }

  key(stream) {
    return `${stream}${this.segment[stream]}`;
  }

  /** One chunk from the socket: {stream, sampleRate, pcm}. */
  play({ stream, sampleRate, pcm }) {
    if (this.ctx.state === "suspended") this.ctx.resume().catch(() => {});
    this.stats[stream] += 1;
    this.players[stream].enqueuePcm16(this.key(stream), { stream }, pcm, sampleRate);
  }

  /** The agent's reply was cut: stop it and drop what is queued. */
  flushAgent() {
    this.players.agent.stop(this.key("agent"));
    this.segment.agent += 1;
    this.stats.flushed += 1;
  }

  stop() {
    for (const stream of ["caller", "agent"]) {
      this.players[stream].stopAll();
      this.segment[stream] += 1;
    }
  }

  playedMs() {
    return { caller: this.players.caller.totalPlayedMs(), agent: this.players.agent.totalPlayedMs() };
  }
}
