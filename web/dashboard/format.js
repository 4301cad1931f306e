// Small formatting helpers for the dashboard: durations, milliseconds, times, state names.

/** 75_000 -> "1:15"; 3_725_000 -> "1:02:05". */
export function clock(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "–";
  const total = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

/** 612.3 -> "612 ms"; null -> "–". */
export function millis(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "–";
  return `${Math.round(ms)} ms`;
}

/** 0.25 -> "25%"; null -> "–". */
export function percent(share) {
  if (share === null || share === undefined || !Number.isFinite(share)) return "–";
  return `${Math.round(share * 100)}%`;
}

/** A Unix ms time as the local date and time. */
export function dateTime(ms) {
  if (!ms) return "–";
  return new Date(ms).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

/** A Unix ms time as the local time of day. */
export function timeOfDay(ms) {
  if (!ms) return "–";
  return new Date(ms).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

/** Local midnight (Unix ms) of the day holding `ms`. */
export function localMidnight(ms = Date.now()) {
  const d = new Date(ms);
  d.setHours(0, 0, 0, 0);
  return d.getTime();
}

/** A date input's value ("2026-12-02") as local midnight in Unix ms; null when empty. */
export function dayStart(value) {
  if (!value) return null;
  const [y, m, d] = value.split("-").map(Number);
  return new Date(y, m - 1, d).getTime();
}

export const STATE_LABELS = {
  listening: "listening",
  caller_speaking: "caller speaking",
  thinking: "thinking",
  speaking: "speaking",
  taken_over: "taken over",
  waiting: "waiting for an operator",
  ended: "ended",
};

/** A new element with attributes (`class`, `dataset`, `onclick`...) and children. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k in node && typeof v !== "string") node[k] = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}
