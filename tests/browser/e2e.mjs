// End-to-end test of the demo page in headless Chromium, against the release server with its
// local engines (demo mode, loopback). Chromium's fake microphone plays a spoken sentence made
// with espeak-ng, looped with a long pause, so each sentence is one caller turn.
//
// Checks: the page connects; in a real-time call the sentence comes back as a final transcript,
// a reply is written and its audio played, and the latency panel fills in; a dropped socket
// reconnects and resumes the call; push-to-talk (mouse, then the space bar) sends the sentence
// over HTTP, shows transcript and reply and plays it; without a socket the page falls back to
// push-to-talk; the layout fits a phone; and no page logs an error or a warning.
//
// Usage: node tests/browser/e2e.mjs (the server binary is built by scripts/test). Exits non-zero
// on any failure; always stops the server and the browser. Screenshots: target/browser/.

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
  sleep,
  startServer,
  step,
  watchConsole as watch,
  wordShare as shareOf,
} from "./harness.mjs";

const SENTENCE = "What time do you open tomorrow?";
const MIN_WORD_SHARE = 0.6;
/** The whole test, whatever happens. */
const OVERALL_MS = 5 * 60_000;

let page = null;
const problems = [];

/** Share of the sentence's words found in `text`. */
const wordShare = (text) => shareOf(text, SENTENCE);

const snapshot = (p = page) => p.evaluate(() => window.voxwireDebug.snapshot());

/** Transcript lines as shown: role, group, item, text, whether still partial. */
function lines(p = page) {
  return p.$$eval("#transcript li.msg", (els) =>
    els.map((li) => ({
      role: li.classList.contains("caller") ? "caller" : "agent",
      group: Number(li.dataset.group),
      item: Number(li.dataset.item),
      text: li.querySelector(".text").textContent.trim(),
      partial: li.classList.contains("partial"),
      cut: li.classList.contains("cut"),
    })),
  );
}

/** Final caller lines that say the sentence. */
async function matchingCallerLines(p = page) {
  return (await lines(p)).filter((l) => l.role === "caller" && !l.partial && wordShare(l.text) >= MIN_WORD_SHARE);
}

const watchConsole = (p, name) => watch(p, name, problems);

// ---- the checks ----

/**
 * Holds push-to-talk while the fake microphone says the sentence once: presses just before the
 * sentence is due (the loop's phase comes from the page's speech meter), releases once a whole
 * sentence was heard after the press.
 */
async function holdForSentence(speech, press, release) {
  let s = await snapshot();
  if (s.mic.onsets === 0) {
    await poll("the fake microphone to speak", 30_000, async () => (await snapshot()).mic.onsets > 0, 100);
    s = await snapshot();
  }
  let due = s.mic.lastOnset;
  while (due - 0.8 < s.mic.now + 0.2) due += speech.period;
  await poll("the moment before the sentence", 30_000, async () => (await snapshot()).mic.now >= due - 0.8, 50);
  const before = await snapshot();
  await press();
  await poll("a whole sentence while holding", 45_000, async () => {
    const m = (await snapshot()).mic;
    return m.onsets > before.mic.onsets && !m.speaking;
  }, 100);
  await sleep(300);
  await release();
  return (await snapshot()).mic.now - before.mic.now;
}

/** Waits for the push-to-talk turn after `turnsBefore` and checks it. */
async function checkPttTurn(turnsBefore) {
  const s = await poll("the push-to-talk reply", 120_000, async () => {
    const snap = await snapshot();
    return snap.ptt.turns > turnsBefore && !snap.ptt.busy ? snap : null;
  }, 250);
  if (s.ptt.noSpeech > 0 || s.ptt.errors.length > 0) {
    throw new Error(`push-to-talk: no speech ${s.ptt.noSpeech}, errors ${s.ptt.errors.join(", ")}`);
  }
  const share = wordShare(s.ptt.last.transcript);
  if (share < MIN_WORD_SHARE) throw new Error(`push-to-talk transcript "${s.ptt.last.transcript}" misses the sentence`);
  const shown = await lines();
  const caller = shown.filter((l) => l.role === "caller" && l.text === s.ptt.last.transcript);
  const agent = shown.filter((l) => l.role === "agent" && l.text && caller.some((c) => c.group === l.group));
  if (caller.length === 0 || agent.length === 0) throw new Error("the push-to-talk turn is not in the transcript");
  const played = await poll("the push-to-talk reply's audio", 60_000, async () => {
    const p = (await snapshot()).player.playedMs[s.ptt.last.key];
    return p > 0 ? p : null;
  });
  return `"${s.ptt.last.transcript}" -> "${s.ptt.last.response}", ${played} ms played so far`;
}

async function run() {
  const dir = scratchDir();
  const speech = makeSpeech(dir, SENTENCE);
  log(`fake microphone: "${SENTENCE}" (${speech.speech.toFixed(2)} s), looping every ${speech.period.toFixed(2)} s`);

  let base;
  await step("server started (demo mode, local engines)", async () => {
    base = await startServer(dir);
    return base;
  });

  const browser = await launchBrowser(speech.wav);
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  watchConsole(page, "demo page");

  await step("page loads, connects and lists the agents", async () => {
    await page.goto(`${base}/`);
    await page.waitForSelector('#conn[data-state="connected"]', { timeout: 60_000 });
    const agents = await page.$$eval("#agent option", (os) => os.map((o) => o.value));
    if (!agents.includes("receptionist")) throw new Error(`agents listed: ${agents.join(", ")}`);
    return `connection state shown: "${await page.textContent("#conn-text")}"; agents ${agents.join(", ")}`;
  });

  await step("real-time call starts with the microphone", async () => {
    await page.click("#call-btn");
    await poll("the call to start", 30_000, async () => {
      const s = await snapshot();
      return s.live && s.mic && s.mic.running && s.mic.streaming;
    });
    return `button now reads "${await page.textContent("#call-btn")}"`;
  });

  let heard;
  await step("the spoken sentence appears as a final transcript", async () => {
    heard = await poll("a final transcript of the sentence", 150_000, async () => (await matchingCallerLines())[0]);
    return `"${heard.text}" (item ${heard.item})`;
  });

  await step("a reply appears, streamed and then complete", async () => {
    const reply = await poll("the agent's whole reply", 120_000, async () => {
      const shown = await lines();
      return shown.find(
        (l) => l.role === "agent" && l.group === heard.group && l.item === heard.item + 1 && l.text && !l.partial,
      );
    });
    return `"${reply.text}"${reply.cut ? " (cut off by the next sentence)" : ""}`;
  });

  await step("reply audio is played and reported", async () => {
    const found = await poll("reply audio to a transcribed sentence", 120_000, async () => {
      const s = await snapshot();
      for (const l of await matchingCallerLines()) {
        const ms = s.player.playedMs[`s${l.group}:${l.item + 1}`];
        if (ms > 0 && s.session.playbackReports > 0) return { ms, s, item: l.item + 1 };
      }
      return null;
    });
    const { ms, s, item } = found;
    return `item ${item}: ${ms} ms played; ${s.session.framesReceived} audio frames received, ${s.session.playbackReports} playback reports sent, context at ${s.player.sampleRate} Hz`;
  });

  await step("the latency panel shows the turn", async () => {
    const v2v = await poll("voice-to-voice latency", 60_000, async () => {
      const t = await page.textContent('#latency dd[data-field="voice_to_voice_ms"]');
      return /\d+ ms/.test(t) ? t : null;
    });
    const stt = await page.textContent('#latency dd[data-field="stt_ms"]');
    return `voice to voice ${v2v}, speech to text ${stt}`;
  });

  await step("a dropped connection reconnects and resumes the call", async () => {
    const before = await snapshot();
    await page.evaluate(() => window.voxwireDebug.dropConnection());
    const s = await poll("the call to be resumed", 60_000, async () => {
      const snap = await snapshot();
      return snap.connection.state === "connected" && snap.live && snap.session.resumed > before.session.resumed ? snap : null;
    });
    if (s.callId !== before.callId) throw new Error(`resumed ${s.callId}, expected ${before.callId}`);
    return `${s.callId} resumed after ${s.connection.lost} lost socket(s)`;
  });

  await step("switching to push-to-talk ends the socket call", async () => {
    await page.check('input[name="mode"][value="ptt"]');
    await page.waitForSelector("#ptt-btn", { state: "visible" });
    await poll("the socket call to end", 30_000, async () => {
      const s = await snapshot();
      return s.mode === "ptt" && !s.live && !s.wantCall && s.mic.running;
    });
  });

  await step("push-to-talk by holding the button", async () => {
    const turns = (await snapshot()).ptt.turns;
    const box = await page.locator("#ptt-btn").boundingBox();
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
    const held = await holdForSentence(
      speech,
      async () => {
        await page.mouse.down();
        await poll("recording to start", 10_000, async () => (await page.getAttribute("#ptt-btn", "aria-pressed")) === "true", 50);
      },
      () => page.mouse.up(),
    );
    return `held ${held.toFixed(1)} s; ${await checkPttTurn(turns)}`;
  });

  await step("push-to-talk with the space bar", async () => {
    const turns = (await snapshot()).ptt.turns;
    await page.focus("#transcript");
    const held = await holdForSentence(
      speech,
      () => page.keyboard.down("Space"),
      () => page.keyboard.up("Space"),
    );
    return `held ${held.toFixed(1)} s; ${await checkPttTurn(turns)}`;
  });

  await step("screenshot", async () => {
    const file = path.join(ARTIFACTS, "demo.png");
    await page.screenshot({ path: file, fullPage: true });
    return path.relative(ROOT, file);
  });

  await step("without a socket the page falls back to push-to-talk", async () => {
    const p = await context.newPage();
    watchConsole(p, "fallback page");
    await p.routeWebSocket(/\/ws/, (ws) => ws.close({ code: 1011, reason: "refused by the test" }));
    await p.goto(`${base}/`);
    await p.waitForSelector("#ptt-btn", { state: "visible", timeout: 60_000 });
    const mode = await p.$eval('input[name="mode"]:checked', (r) => r.value);
    const state = await p.getAttribute("#conn", "data-state");
    const notice = await p.textContent("#notice");
    await p.close();
    if (mode !== "ptt" || !/push-to-talk/.test(notice)) throw new Error(`mode ${mode}, notice "${notice}"`);
    return `state "${state}", notice "${notice}"`;
  });

  await step("phone-width layout (375 px) has no sideways scrolling", async () => {
    const phone = await browser.newContext({ viewport: { width: 375, height: 812 }, isMobile: true, hasTouch: true });
    onCleanup(() => phone.close());
    const p = await phone.newPage();
    watchConsole(p, "phone page");
    await p.goto(`${base}/`);
    await p.waitForSelector('#conn[data-state="connected"]', { timeout: 60_000 });
    const width = await p.evaluate(() => document.documentElement.scrollWidth);
    const file = path.join(ARTIFACTS, "demo-phone.png");
    await p.screenshot({ path: file, fullPage: true });
    await p.close();
    if (width > 375) throw new Error(`the page is ${width} px wide`);
    return `${width} px wide; ${path.relative(ROOT, file)}`;
  });

  await step("no console errors or warnings", async () => {
    if (problems.length) throw new Error(problems.join("\n"));
  });
}

main({
  name: "browser end-to-end test",
  overallMs: OVERALL_MS,
  run,
  onFailure: async () => {
    if (page) {
      console.error(`page state: ${JSON.stringify(await snapshot())}`);
      console.error(`transcript: ${JSON.stringify(await lines())}`);
      await page.screenshot({ path: path.join(ARTIFACTS, "failure.png"), fullPage: true });
    }
    if (problems.length) console.error(`console:\n${problems.join("\n")}`);
  },
});
