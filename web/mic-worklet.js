// The microphone's AudioWorklet processor: mixes the input to mono, resamples it from the
// context's rate to 16 kHz with a windowed-sinc low-pass (no aliasing from 44.1/48 kHz), and
// posts little-endian pcm16 blocks of 50 ms with their loudness (dBFS) to the main thread.

const TABLE_STEPS = 512; // filter table entries per input sample
const ZERO_CROSSINGS = 8; // sinc lobes kept on each side

class Resampler {
  constructor(inRate, outRate) {
    this.step = inRate / outRate;
    // Cut-off in cycles per input sample: 90% of the output's Nyquist frequency.
    const fc = 0.45 * Math.min(1, outRate / inRate);
    this.half = Math.ceil(ZERO_CROSSINGS / (2 * fc));
    this.table = new Float32Array(this.half * TABLE_STEPS + 1);
    for (let i = 0; i < this.table.length; i++) {
      const t = i / TABLE_STEPS;
      const x = 2 * fc * t;
      const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
      const w = t / this.half;
      const blackman = 0.42 + 0.5 * Math.cos(Math.PI * w) + 0.08 * Math.cos(2 * Math.PI * w);
      this.table[i] = 2 * fc * sinc * blackman;
    }
    // Input history, primed with silence so the first outputs have a left context.
    this.buf = new Float32Array(4096);
    this.len = this.half;
    this.pos = this.half;
  }

  /** Feeds input samples; calls `emit(sample)` for each output sample now computable. */
  push(input, emit) {
    if (this.len + input.length > this.buf.length) {
      const bigger = new Float32Array((this.len + input.length) * 2);
      bigger.set(this.buf.subarray(0, this.len));
      this.buf = bigger;
    }
    this.buf.set(input, this.len);
    this.len += input.length;
    const { buf, table, half } = this;
    while (Math.floor(this.pos) + half < this.len) {
      const base = Math.floor(this.pos);
      const frac = this.pos - base;
      let acc = 0;
      for (let k = 1 - half; k <= half; k++) {
        const idx = Math.round(Math.abs(k - frac) * TABLE_STEPS);
        if (idx < table.length) acc += buf[base + k] * table[idx];
      }
      emit(acc);
      this.pos += this.step;
    }
    const drop = Math.floor(this.pos) - half;
    if (drop > 0) {
      buf.copyWithin(0, drop, this.len);
      this.len -= drop;
      this.pos -= drop;
    }
  }
}

class MicProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions || {};
    this.targetRate = opts.targetRate || 16000;
    this.blockSamples = Math.round((this.targetRate * (opts.blockMs || 50)) / 1000);
    this.resampler = new Resampler(sampleRate, this.targetRate);
    this.startBlock();
    this.emit = (s) => {
      const v = Math.max(-1, Math.min(1, s));
      this.energy += v * v;
      this.view.setInt16(this.filled * 2, Math.round(v * 32767), true);
      this.filled += 1;
      if (this.filled === this.blockSamples) this.flush();
    };
    this.mono = new Float32Array(128);
  }

  startBlock() {
    this.block = new ArrayBuffer(this.blockSamples * 2);
    this.view = new DataView(this.block);
    this.filled = 0;
    this.energy = 0;
  }

  flush() {
    const rms = Math.sqrt(this.energy / this.blockSamples);
    const level = rms > 0 ? 20 * Math.log10(rms) : -120;
    this.port.postMessage({ pcm: this.block, level, time: currentTime }, [this.block]);
    this.startBlock();
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const n = channels[0].length;
    if (this.mono.length !== n) this.mono = new Float32Array(n);
    const mono = this.mono;
    if (channels.length === 1) {
      mono.set(channels[0]);
    } else {
      mono.fill(0);
      for (const ch of channels) for (let i = 0; i < n; i++) mono[i] += ch[i] / channels.length;
    }
    this.resampler.push(mono, this.emit);
    return true;
  }
}

registerProcessor("voxwire-mic", MicProcessor);
