// The live transcript: caller lines (partial, then final for the same item), agent replies
// streamed from deltas, replies cut short by an interruption, and (on the operators' dashboard)
// an operator's lines and notes. Lines are ordered by group
// (one per call start or push-to-talk turn) and then by item_id. Final lines are also spoken
// through a polite live region, so screen readers hear each line once, not every partial.

const GROUP_SPAN = 1_000_000;

export class Transcript {
  /**
   * @param {HTMLOListElement} list      the visible transcript
   * @param {HTMLElement} announcer      an aria-live="polite" region
   * @param {{caller?: string, agent?: string, operator?: string}} [labels]  who says a line
   */
  constructor(list, announcer, labels = {}) {
    this.list = list;
    this.announcer = announcer;
    this.labels = { caller: "You", agent: "Agent", operator: "Operator", ...labels };
    this.group = 0;
    this.entries = new Map();
    this.lastOrder = 0;
  }

  /** Starts a new group (a call started or resumed, a push-to-talk turn); returns its number. */
  newGroup() {
    this.group += 1;
    return this.group;
  }

  clear() {
    this.list.replaceChildren();
    this.entries.clear();
    this.lastOrder = 0;
    this.announce("Transcript cleared");
  }

  /** A line from the page itself (call resumed, reconnecting...), placed at the end. */
  note(text) {
    const li = document.createElement("li");
    li.className = "note";
    li.textContent = text;
    this.insert(li, this.lastOrder + 0.001);
  }

  /** A line from outside the conversation at its place (an operator's note, item `itemId`). */
  noteAt(group, itemId, text) {
    const k = key(group, itemId);
    if (this.entries.has(k)) return;
    const li = document.createElement("li");
    li.className = "note";
    li.textContent = text;
    this.entries.set(k, { li, role: "note", text, full: text, cut: false, kept: "" });
    this.insert(li, group * GROUP_SPAN + Number(itemId));
  }

  /** The caller started speaking: a placeholder until the first transcript. */
  callerListening(group, itemId) {
    const e = this.entry(group, itemId, "caller");
    if (!e.text) this.render(e, "…", true);
  }

  callerPartial(group, itemId, text) {
    const e = this.entry(group, itemId, "caller");
    this.render(e, text || "…", true);
  }

  callerFinal(group, itemId, text) {
    if (!text) return this.remove(group, itemId);
    const e = this.entry(group, itemId, "caller");
    this.render(e, text, false);
    this.announce(`${this.labels.caller}: ${text}`);
  }

  agentDelta(group, itemId, delta) {
    const e = this.entry(group, itemId, "agent");
    if (e.cut || e.final) return; // a late delta (from a second source) after the whole reply
    e.full = (e.full || "") + delta;
    this.render(e, e.full, true);
  }

  agentFinal(group, itemId, text) {
    const e = this.entry(group, itemId, "agent");
    e.full = text;
    e.final = true;
    if (e.cut) return this.renderCut(e);
    this.render(e, text, false);
    this.announce(`${this.labels.agent}: ${text}`);
  }

  /** A line an operator said to the caller (in the agent's voice); `partial` while they talk. */
  operatorFinal(group, itemId, text, partial = false) {
    const e = this.entry(group, itemId, "operator");
    if (e.role !== "operator") {
      e.role = "operator";
      e.li.classList.replace("agent", "operator");
      e.li.querySelector(".who").textContent = this.labels.operator;
    }
    if (partial) {
      if (!e.full) this.render(e, text, true);
      return;
    }
    if (e.full === text && !e.li.classList.contains("partial")) return;
    e.full = text;
    e.final = true;
    if (e.cut) return this.renderCut(e);
    this.render(e, text, false);
    this.announce(`${this.labels.operator}: ${text}`);
  }

  /** The reply was interrupted: `kept` is what the caller heard of it. */
  agentCut(group, itemId, kept) {
    const e = this.entry(group, itemId, "agent");
    e.cut = true;
    e.kept = kept || "";
    this.renderCut(e);
    const who = this.labels[e.role] || this.labels.agent;
    this.announce(kept ? `${who}, cut off: ${kept}` : `${who} cut off`);
  }

  agentDone(group, itemId, reason) {
    const e = this.entries.get(key(group, itemId));
    if (!e) return;
    e.li.classList.remove("partial");
    if (reason === "error") {
      e.li.classList.add("failed");
      if (!e.full) this.render(e, "(no reply: the server reported an error)", false);
    }
    if (!e.full && !e.cut && reason !== "error") this.remove(group, itemId);
  }

  /** The call ended or its socket was lost: lines still in progress will not be finished. */
  settle(group) {
    for (const [k, e] of this.entries) {
      if (!k.startsWith(`${group}:`) || !e.li.classList.contains("partial")) continue;
      if (e.role === "caller" && e.text === "…") {
        e.li.remove();
        this.entries.delete(k);
      } else {
        e.li.classList.remove("partial");
        e.li.classList.add("unfinished");
      }
    }
  }

  remove(group, itemId) {
    const k = key(group, itemId);
    const e = this.entries.get(k);
    if (!e) return;
    e.li.remove();
    this.entries.delete(k);
  }

  entry(group, itemId, role) {
    const k = key(group, itemId);
    let e = this.entries.get(k);
    if (e) return e;
    const li = document.createElement("li");
    li.className = `msg ${role}`;
    li.dataset.group = String(group);
    li.dataset.item = String(itemId);
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = this.labels[role] || role;
    const text = document.createElement("p");
    text.className = "text";
    li.append(who, text);
    e = { li, textEl: text, role, text: "", full: "", cut: false, kept: "" };
    this.entries.set(k, e);
    this.insert(li, group * GROUP_SPAN + Number(itemId));
    return e;
  }

  render(e, text, partial) {
    const stick = this.isNearBottom();
    e.text = text;
    e.textEl.textContent = text;
    e.li.classList.toggle("partial", partial);
    if (stick) this.scroll();
  }

  renderCut(e) {
    const stick = this.isNearBottom();
    const kept = e.kept;
    const rest = e.full && e.full.startsWith(kept) ? e.full.slice(kept.length) : "";
    e.li.classList.remove("partial");
    e.li.classList.add("cut");
    const keptEl = document.createElement("span");
    keptEl.textContent = kept || "(nothing heard)";
    const parts = [keptEl];
    if (rest.trim()) {
      if (!kept || !/\s$/.test(kept)) parts.push(" ");
      const restEl = document.createElement("span");
      restEl.className = "unheard";
      restEl.textContent = rest;
      restEl.title = "not heard";
      parts.push(restEl);
    }
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = "cut off";
    parts.push(" ", badge);
    e.textEl.replaceChildren(...parts);
    e.text = kept;
    if (stick) this.scroll();
  }

  insert(li, order) {
    li.dataset.order = String(order);
    this.lastOrder = Math.max(this.lastOrder, order);
    let after = this.list.lastElementChild;
    while (after && Number(after.dataset.order) > order) after = after.previousElementSibling;
    const nearBottom = this.isNearBottom();
    if (after) after.after(li);
    else this.list.prepend(li);
    if (nearBottom) this.scroll();
  }

  isNearBottom() {
    const l = this.list;
    return l.scrollHeight - l.scrollTop - l.clientHeight < 80;
  }

  scroll() {
    this.list.scrollTop = this.list.scrollHeight;
  }

  announce(text) {
    // A fresh node per line, so each is read once even when the text repeats; a few are kept so
    // lines arriving together are all read.
    const p = document.createElement("p");
    p.textContent = text;
    this.announcer.append(p);
    while (this.announcer.childElementCount > 4) this.announcer.firstElementChild.remove();
  }
}

function key(group, itemId) {
  return `${group}:${itemId}`;
}
