// The operators' dashboard in headless Chromium, with a caller on the demo page in the same
// browser (a separate context), against the release server with its local engines (demo mode,
// loopback), like e2e.mjs. Chromium's fake microphone says a question, looped with a pause.
//
// Checks: the operator signs in with a demo token and sees the caller's call in the live list;
// the call's view shows the caller's words and the agent's reply; the operator takes the call
// over (over HTTP: the caller's next question is still transcribed, the agent stays silent),
// listens in (the operator socket: the caller's audio, then the operator's line, played), types
// a line that the caller's page shows as a reply and plays, leaves a note, talks with the
// microphone (transcribed as the operator's line, played on the caller's page); hands back,
// and the agent answers the caller's next question; the finished call is in the history with
// its transcript, found again by the operator's words and exported as CSV and JSON; today's
// figures count it; the layout fits a phone; and no page logs an error or a warning.
//
// Usage: node tests/browser/dashboard.mjs (the server binary is built by scripts/test).
// Screenshots: target/browser/dashboard*.png.

import { readFileSync } from "node:fs";
import path from "node:path";
import {
  ARTIFACTS,
  ROOT,
  launchBrowser,
  main,
  makeSpeech,
  onCleanup,
  poll,
  log,
  scratchDir,
  startServer,
  step,
  watchConsole,
  wordShare,
} from "./harness.mjs";

const SENTENCE = "What time do you open tomorrow?";
const OPERATOR_LINE = "Hi, this is Sam from the front desk. We open at nine tomorrow.";
const NOTE = "The caller asked about opening hours twice.";
const MIN_WORD_SHARE = 0.6;
const OVERALL_MS = 6 * 60_000;

const problems = [];
let caller = null;
let dash = null;

const callerSnap = () => caller.evaluate(() => window.voxwireDebug.snapshot());
const dashSnap = (p = dash) => p.evaluate(() => window.voxwireDashboard.snapshot());

/** Lines of a transcript list as shown: who says it, item, text, partial or not. */
function lines(p, selector) {
  return p.$$eval(`${selector} li.msg`, (els) =>
    els.map((li) => ({
      role: ["caller", "agent", "operator"].find((r) => li.classList.contains(r)),
      who: li.querySelector(".who").textContent.trim(),
      group: Number(li.dataset.group),
      item: Number(li.dataset.item),
      text: li.querySelector(".text").textContent.trim(),
      partial: li.classList.contains("partial"),
      cut: li.classList.contains("cut"),
    })),
  );
}

const isQuestion = (l) => l.role === "caller" && !l.partial && wordShare(l.text, SENTENCE) >= MIN_WORD_SHARE;

/** The first final line of the question in the call view after item `after`. */
async function questionAfter(after) {
  return (await lines(dash, "#call-transcript")).find((l) => isQuestion(l) && l.item > after);
}

async function run() {
  const dir = scratchDir();
  const speech = makeSpeech(dir, SENTENCE);
  log(`fake microphone: "${SENTENCE}" (${speech.speech.toFixed(2)} s), looping every ${speech.period.toFixed(2)} s`);

  let base;
  await step("server started (demo mode, local engines)", async () => {
    // A fresh store in the scratch directory: the history holds this test's call only.
    const store = `sqlite://${path.join(dir, "calls.db")}`;
    base = await startServer(dir, { logName: "dashboard-server.log", env: { VOXWIRE_DATABASE_URL: store } });
    return base;
  });

  const browser = await launchBrowser(speech.wav);
  const callerContext = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const operatorContext = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
  caller = await callerContext.newPage();
  dash = await operatorContext.newPage();
  watchConsole(caller, "caller page", problems);
  watchConsole(dash, "dashboard", problems);

  await step("the operator signs in with a demo token", async () => {
    await dash.goto(`${base}/dashboard`);
    await dash.waitForSelector("#signin-form", { state: "visible" });
    await dash.click("#use-demo");
    await dash.waitForSelector('#feed[data-state="connected"]', { timeout: 30_000 });
    const who = await dash.textContent("#who-text");
    const stored = await dash.evaluate(() => JSON.parse(sessionStorage.getItem("voxwire.operator")).kind);
    return `signed in as ${who}; token kept in sessionStorage (${stored}); stream "${await dash.textContent("#feed-text")}"`;
  });

  let callId;
  await step("the caller's call appears in the live list", async () => {
    await caller.goto(`${base}/`);
    await caller.waitForSelector('#conn[data-state="connected"]', { timeout: 60_000 });
    await caller.click("#call-btn");
    callId = await poll("the caller's call to start", 30_000, async () => {
      const s = await callerSnap();
      return s.live && s.mic && s.mic.streaming ? s.callId : null;
    });
    const row = await dash.waitForSelector(`#live-body tr[data-call-id="${callId}"]`, { timeout: 30_000 });
    const cells = await row.$$eval("td", (tds) => tds.map((td) => td.textContent.trim()));
    return `${callId}: ${cells.join(" | ")}`;
  });

  let first;
  await step("the call's view shows the caller's words and the agent's reply", async () => {
    await dash.click(`#live-body tr[data-call-id="${callId}"] button`);
    await dash.waitForSelector("#call:not([hidden])");
    const focused = await dash.evaluate(() => document.activeElement.id);
    first = await poll("the question in the call view", 150_000, () => questionAfter(0));
    const reply = await poll("the agent's reply in the call view", 120_000, async () =>
      (await lines(dash, "#call-transcript")).find((l) => l.role === "agent" && l.item > first.item && !l.partial && l.text),
    );
    const v2v = await poll("the call's voice-to-voice latency", 60_000, async () => {
      const t = await dash.textContent("#call-v2v");
      return /\d+ ms/.test(t) ? t : null;
    });
    const listed = await dash.textContent(`#live-body tr[data-call-id="${callId}"] td:last-child`);
    return `focus on #${focused}; ${first.who}: "${first.text}"; ${reply.who}: "${reply.text}"; voice to voice ${v2v} (list: ${listed})`;
  });

  let held;
  await step("the operator takes the call over; the caller is still transcribed", async () => {
    await dash.click("#takeover");
    await poll("the takeover", 15_000, async () => /taken over by you/.test(await dash.textContent("#call-state")));
    const listState = await dash.textContent(`#live-body tr[data-call-id="${callId}"] .state`);
    const lastItem = Math.max(0, ...(await lines(dash, "#call-transcript")).map((l) => l.item));
    // The question comes round again: transcribed, and no agent reply follows it.
    held = await poll("the caller's next question during the takeover", 60_000, () => questionAfter(lastItem));
    await dash.waitForTimeout(2500);
    const after = (await lines(dash, "#call-transcript")).filter((l) => l.item > held.item && l.role === "agent");
    if (after.length) throw new Error(`the agent answered during the takeover: ${JSON.stringify(after)}`);
    return `list shows "${listState}"; "${held.text}" (item ${held.item}) transcribed, no agent reply`;
  });

  await step("listening in: the operator socket opens and plays the caller's audio", async () => {
    await dash.click("#listen");
    const v = await poll("caller audio frames", 20_000, async () => {
      const view = (await dashSnap()).view;
      return view.socket && view.socket.open && view.listener && view.listener.playedMs.caller > 0 ? view : null;
    });
    return `${v.socket.audioFrames.caller} caller frames, ${v.listener.playedMs.caller} ms played; commands now go over the socket ("${await dash.textContent("#socket-state")}")`;
  });

  await step("the operator's typed line reaches the caller as a reply and is played", async () => {
    await dash.fill("#say-input", OPERATOR_LINE);
    await dash.press("#say-input", "Enter");
    const shown = await poll("the operator's line on the caller's page", 30_000, async () =>
      (await lines(caller, "#transcript")).find((l) => l.role !== "caller" && l.text.startsWith(OPERATOR_LINE)),
    );
    const key = `s${shown.group}:${shown.item}`;
    const played = await poll("the operator's line to be played", 30_000, async () => {
      const ms = (await callerSnap()).player.playedMs[key];
      return ms > 0 ? ms : null;
    });
    const op = await poll("the operator's line in the call view", 15_000, async () =>
      (await lines(dash, "#call-transcript")).find((l) => l.role === "operator" && l.text === OPERATOR_LINE),
    );
    const v = await poll("the line in the listen-in audio", 15_000, async () => {
      const view = (await dashSnap()).view;
      return view.listener.playedMs.agent > 0 ? view : null;
    });
    return `caller page: "${shown.text}" (item ${shown.item}), ${played} ms played; dashboard labels it "${op.who}", listen-in played ${v.listener.playedMs.agent} ms of it (${v.socket.audioFrames.agent} frames)`;
  });

  await step("a note for the agent shows in the call view", async () => {
    await dash.fill("#note-input", NOTE);
    await dash.click("#note-btn");
    await poll("the note", 15_000, async () =>
      (await dash.$$eval("#call-transcript li.note", (els) => els.map((e) => e.textContent))).some((t) => t.includes(NOTE)),
    );
  });

  await step("the operator talks to the caller with the microphone", async () => {
    // The operator's fake microphone says the question too, from the start when it opens. Right
    // after the caller's question, with nothing playing to the caller, so the line plays whole.
    const lastItem = Math.max(0, ...(await lines(dash, "#call-transcript")).map((l) => l.item));
    await poll("the caller's next question", 60_000, () => questionAfter(lastItem));
    await poll("the caller's page to be quiet", 30_000, async () => !(await callerSnap()).player.playing);
    const before = (await dashSnap()).view.talk.chunks;
    const box = await dash.locator("#talk").boundingBox();
    await dash.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
    await dash.mouse.down();
    await poll("the microphone to stream", 15_000, async () => (await dashSnap()).view.talk.chunks > before);
    await dash.waitForTimeout(3000);
    await dash.mouse.up();
    const sent = (await dashSnap()).view.talk.chunks - before;
    const said = await poll("the operator's spoken line, transcribed", 60_000, async () =>
      (await lines(dash, "#call-transcript")).find((l) => l.role === "operator" && !l.partial && !l.cut && wordShare(l.text, SENTENCE) >= MIN_WORD_SHARE),
    );
    const heard = await poll("the spoken line on the caller's page", 30_000, async () => {
      const shown = (await lines(caller, "#transcript")).find((l) => l.role !== "caller" && l.item === said.item);
      const ms = shown && (await callerSnap()).player.playedMs[`s${shown.group}:${shown.item}`];
      return ms > 0 ? { shown, ms } : null;
    });
    return `${sent} frames of 100 ms sent; transcribed "${said.text}"; the caller's page shows "${heard.shown.text}" and played ${heard.ms} ms`;
  });

  await step("screenshots of both pages during the takeover", async () => {
    const files = [path.join(ARTIFACTS, "dashboard.png"), path.join(ARTIFACTS, "dashboard-caller.png")];
    await dash.screenshot({ path: files[0], fullPage: true });
    await caller.screenshot({ path: files[1], fullPage: true });
    return files.map((f) => path.relative(ROOT, f)).join(", ");
  });

  await step("phone-width dashboard (375 px) with the call open has no sideways scrolling", async () => {
    const phone = await browser.newContext({ viewport: { width: 375, height: 812 }, isMobile: true, hasTouch: true });
    onCleanup(() => phone.close());
    const p = await phone.newPage();
    watchConsole(p, "phone dashboard", problems);
    await p.goto(`${base}/dashboard`);
    await p.click("#use-demo");
    await p.waitForSelector('#feed[data-state="connected"]', { timeout: 30_000 });
    await p.click(`#live-body tr[data-call-id="${callId}"] button`);
    await poll("the operator's line on the phone", 15_000, async () =>
      (await lines(p, "#call-transcript")).some((l) => l.role === "operator"),
    );
    const width = await p.evaluate(() => document.documentElement.scrollWidth);
    const file = path.join(ARTIFACTS, "dashboard-phone.png");
    await p.screenshot({ path: file, fullPage: true });
    await p.close();
    if (width > 375) throw new Error(`the dashboard is ${width} px wide`);
    return `${width} px wide; ${path.relative(ROOT, file)}`;
  });

  await step("handed back, the agent answers the caller's next question", async () => {
    await dash.click("#release");
    await poll("the hand-back", 15_000, async () => !/taken over/.test(await dash.textContent("#call-state")));
    const lastItem = Math.max(0, ...(await lines(dash, "#call-transcript")).map((l) => l.item));
    const next = await poll("the caller's next question", 60_000, () => questionAfter(lastItem));
    // Item ids are the call's, the same on both pages.
    const reply = await poll("the agent's reply on the caller's page", 120_000, async () =>
      (await lines(caller, "#transcript")).find((l) => l.role === "agent" && l.item > next.item && l.text && !l.partial),
    );
    const inView = await poll("the agent's reply in the call view", 30_000, async () =>
      (await lines(dash, "#call-transcript")).find((l) => l.role === "agent" && l.item > next.item && l.text && !l.partial),
    );
    return `"${next.text}" (item ${next.item}) -> caller hears "${reply.text}" (item ${reply.item}); the dashboard labels it ${inView.who}`;
  });

  await step("the finished call is in the history with its transcript", async () => {
    await caller.click("#call-btn"); // end the call
    await poll("the call to leave the live list", 30_000, async () => !(await dash.$(`#live-body tr[data-call-id="${callId}"]`)));
    await dash.fill("#f-sub", "demo");
    await dash.click('#history-form button[type="submit"]');
    const row = await dash.waitForSelector(`#history-body tr[data-call-id="${callId}"]`, { timeout: 15_000 });
    await row.$eval("button", (b) => b.click());
    await dash.waitForSelector("#history-detail:not([hidden])");
    const shown = await lines(dash, "#detail-transcript");
    const who = [...new Set(shown.map((l) => l.who))];
    if (!shown.some((l) => l.role === "operator" && l.text === OPERATOR_LINE)) throw new Error(`no operator line in ${JSON.stringify(shown)}`);
    const metrics = await dash.$$eval("#detail-metrics tbody tr", (trs) => trs.length);
    await dash.click("#detail-back");
    return `${shown.length} lines (${who.join(", ")}), ${metrics} measured turns`;
  });

  await step("the call's summary shows in the call view once it is made", async () => {
    // Made by the local model after the call ends: reopen the call until it is there.
    const shown = await poll("the call's summary", 90_000, async () => {
      const row = await dash.waitForSelector(`#history-body tr[data-call-id="${callId}"]`, { timeout: 15_000 });
      await row.$eval("button", (b) => b.click());
      await dash.waitForSelector("#history-detail:not([hidden])");
      const summary = await dash.$eval("#detail-summary", (box) =>
        box.hidden ? null : { text: box.querySelector("#detail-summary-text").textContent, how: box.querySelector("#detail-summary-how").textContent },
      );
      await dash.click("#detail-back");
      return summary && summary.text ? summary : null;
    }, 1_000);
    if (!/^(Written|Drawn from the call) by |^The caller's own words/.test(shown.how)) throw new Error(`how the summary was made: ${shown.how}`);
    return `"${shown.text}" (${shown.how})`;
  });

  await step("searching the history for the operator's words finds the call", async () => {
    await dash.fill("#f-sub", "");
    await dash.fill("#f-q", "front desk");
    const today = await dash.evaluate(() => new Date().toLocaleDateString("en-CA")); // YYYY-MM-DD
    await dash.fill("#f-from", today);
    await dash.fill("#f-to", today);
    await dash.click('#history-form button[type="submit"]');
    await poll("the search's answer", 15_000, async () => {
      const ids = await dash.$$eval("#history-body tr", (trs) => trs.map((tr) => tr.dataset.callId));
      return ids.length > 0 && ids.every((id) => id === callId) ? ids : null;
    });
    await dash.fill("#f-q", "zebra crossing");
    await dash.click('#history-form button[type="submit"]');
    await dash.waitForSelector("#history-empty:not([hidden])", { timeout: 15_000 });
    await dash.fill("#f-q", "front desk");
    return `q "front desk", from and to ${today}: only ${callId}; "zebra crossing": none`;
  });

  await step("the history exports as CSV and JSON with the same filters", async () => {
    const got = [];
    for (const [button, format] of [["#export-csv", "csv"], ["#export-json", "json"]]) {
      const [download] = await Promise.all([dash.waitForEvent("download", { timeout: 15_000 }), dash.click(button)]);
      const file = path.join(ARTIFACTS, `dashboard-export.${format}`);
      await download.saveAs(file);
      const text = readFileSync(file, "utf8");
      if (format === "csv") {
        const rows = text.trim().split(/\r?\n/);
        if (!rows[0].startsWith("call_id,agent,sub,started_at") || rows.length !== 2 || !rows[1].startsWith(callId)) {
          throw new Error(`unexpected CSV: ${text.slice(0, 300)}`);
        }
      } else {
        const body = JSON.parse(text);
        if (body.calls.length !== 1 || body.calls[0].call_id !== callId) throw new Error(`unexpected JSON: ${text.slice(0, 300)}`);
      }
      got.push(`${download.suggestedFilename()} (${text.length} bytes)`);
    }
    return got.join(", ");
  });

  await step("today's figures count the call", async () => {
    await dash.reload();
    const calls = await poll("today's figures", 15_000, async () => {
      const t = await dash.textContent('.today dd[data-field="calls"]');
      return /^\d+$/.test(t) && Number(t) >= 1 ? t : null;
    });
    const fig = await dash.$$eval(".today .tile", (tiles) => tiles.map((t) => `${t.querySelector("dt").textContent} ${t.querySelector("dd").textContent}`));
    return `${fig.join(", ")} (calls: ${calls})`;
  });

  await step("no console errors or warnings on either page", async () => {
    if (problems.length) throw new Error(problems.join("\n"));
  });
}

main({
  name: "dashboard browser test",
  overallMs: OVERALL_MS,
  run,
  onFailure: async () => {
    for (const [name, p, shot] of [["dashboard", dash, "dashboard-failure.png"], ["caller page", caller, "dashboard-caller-failure.png"]]) {
      if (!p) continue;
      try {
        const snap = name === "dashboard" ? await dashSnap(p) : await callerSnap();
        console.error(`${name} state: ${JSON.stringify(snap)}`);
        const sel = name === "dashboard" ? "#call-transcript" : "#transcript";
        console.error(`${name} transcript: ${JSON.stringify(await lines(p, sel))}`);
        await p.screenshot({ path: path.join(ARTIFACTS, shot), fullPage: true });
      } catch {
        // the page may be gone
      }
    }
    if (problems.length) console.error(`console:\n${problems.join("\n")}`);
  },
});
