// The latency panel: the last turn's timings, from a `metrics` frame or the push-to-talk
// route's `timings`, in ms from the end of the caller's speech.

const FIELDS = [
  ["end_of_speech_ms", "End of speech"],
  ["stt_ms", "Speech to text"],
  ["llm_first_token_ms", "First token"],
  ["tts_first_audio_ms", "First audio"],
  ["voice_to_voice_ms", "Voice to voice"],
];

export class LatencyPanel {
  /**
   * @param {HTMLDListElement} list
   * @param {HTMLElement} caption  says which turn the figures are from
   */
  constructor(list, caption) {
    this.caption = caption;
    this.values = new Map();
    list.replaceChildren();
    for (const [field, label] of FIELDS) {
      const row = document.createElement("div");
      row.className = "row";
      const dt = document.createElement("dt");
      dt.textContent = label;
      const dd = document.createElement("dd");
      dd.dataset.field = field;
      row.append(dt, dd);
      list.append(row);
      this.values.set(field, dd);
    }
    this.clear();
  }

  /** Shows a turn's figures; `turnLabel` says which turn they are from. */
  show(timings, turnLabel) {
    for (const [field, dd] of this.values) {
      const v = timings[field];
      dd.textContent = typeof v === "number" ? `${Math.round(v)} ms` : "—";
    }
    this.caption.textContent = turnLabel;
  }

  clear() {
    for (const dd of this.values.values()) dd.textContent = "—";
    this.caption.textContent = "no turn yet";
  }
}
