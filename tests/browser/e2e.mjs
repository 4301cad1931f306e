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

import { execFileSync, spawn } from "node:child_process";
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const TARGET = path.resolve(ROOT, process.env.CARGO_TARGET_DIR || "target");
const BIN = process.env.VOXWIRE_BIN || path.join(TARGET, "release", "voxwire");
const CHROMIUM = process.env.VOXWIRE_CHROMIUM || "/usr/bin/chromium";
const ARTIFACTS = path.join(ROOT, "target", "browser");

const SENTENCE = "What time do you open tomorrow?";
const LEAD_SECS = 0.3;
/** Silence after the sentence before the fake microphone loops: room for a reply. */
const TRAIL_SECS = 8;
const MIN_WORD_SHARE = 0.6;
/** The whole test, whatever happens. */
const OVERALL_MS = 5 * 60_000;

const started = Date.now();
const cleanups = [];
let serverLog = null;
let page = null;
const problems = [];

const secs = (ms) => `${(ms / 1000).toFixed(1)} s`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function log(line) {
  console.log(`[${secs(Date.now() - started).padStart(7)}] ${line}`);
}

/** Runs one named check, printing its outcome and how long it took. */
let passed = 0;
async function step(name, fn) {
  const t0 = Date.now();
  const detail = await fn();
  passed += 1;
  log(`ok   ${name} (${secs(Date.now() - t0)})${detail ? `: ${detail}` : ""}`);
}

/** Calls `fn` every `everyMs` until it returns a truthy value; fails after `timeoutMs`. */
async function poll(what, timeoutMs, fn, everyMs = 200) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${secs(timeoutMs)} waiting for ${what}`);
    await sleep(everyMs);
  }
}

function words(text) {
  return text.toLowerCase().replace(/[^a-z0-9' ]+/g, " ").split(/\s+/).filter(Boolean);
}

/** Share of the sentence's words found in `text`. */
function wordShare(text) {
  const heard = new Set(words(text));
  const expected = words(SENTENCE);
  return expected.filter((w) => heard.has(w)).length / expected.length;
}

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

function watchConsole(p, name) {
  p.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") problems.push(`${name}: console ${m.type()}: ${m.text()}`);
  });
  p.on("pageerror", (e) => problems.push(`${name}: uncaught ${e.message}`));
}

// ---- setup ----

function makeSpeech(dir) {
  const raw = path.join(dir, "sentence.wav");
  const wav = path.join(dir, "mic-48k.wav");
  execFileSync("espeak-ng", ["-w", raw, SENTENCE]);
  execFileSync("sox", [raw, "-r", "48000", "-c", "1", "-b", "16", wav, "pad", String(LEAD_SECS), String(TRAIL_SECS)]);
  const period = Number(execFileSync("soxi", ["-D", wav]).toString().trim());
  const speech = Number(execFileSync("soxi", ["-D", raw]).toString().trim());
  return { wav, period, speech };
}

async function startServer(dir) {
  if (!existsSync(BIN)) throw new Error(`no server binary at ${BIN}: build it with cargo build --release`);
  // Demo mode with the default local engines, whatever the caller's environment says; a scratch
  // working directory so no .env is read.
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k === "JWT_SECRET" || k.startsWith("VOXWIRE_")) continue;
    env[k] = v;
  }
  for (const k of ["VOXWIRE_MODELS_DIR", "VOXWIRE_ORT_LIB", "VOXWIRE_ESPEAK_DATA"]) {
    if (process.env[k]) env[k] = process.env[k];
  }
  Object.assign(env, {
    VOXWIRE_WEB_DIR: path.join(ROOT, "web"),
    VOXWIRE_AGENTS: path.join(ROOT, "agents.toml"),
    RUST_LOG: "voxwire=info",
  });
  mkdirSync(ARTIFACTS, { recursive: true });
  serverLog = path.join(ARTIFACTS, "server.log");
  const logFile = createWriteStream(serverLog);
  const server = spawn(BIN, ["serve", "--bind", "127.0.0.1:0", "--offline"], {
    cwd: dir,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const stopServer = async () => {
    if (server.exitCode !== null || server.signalCode !== null) return;
    server.kill("SIGTERM");
    const exited = new Promise((r) => server.once("exit", r));
    if (!(await Promise.race([exited.then(() => true), sleep(8000).then(() => false)]))) {
      server.kill("SIGKILL");
    }
  };
  cleanups.push(stopServer);
  process.on("exit", () => server.kill("SIGKILL"));
  server.stdout.pipe(logFile);
  let text = "";
  const address = new Promise((resolve, reject) => {
    server.stderr.on("data", (chunk) => {
      logFile.write(chunk);
      text += chunk.toString();
      const m = text.match(/listening on (http:\/\/127\.0\.0\.1:\d+)/);
      if (m) resolve(m[1]);
    });
    server.once("exit", (code) => reject(new Error(`the server exited (${code}) before listening`)));
  });
  const base = await Promise.race([
    address,
    sleep(180_000).then(() => {
      throw new Error("the server did not start listening within 180 s");
    }),
  ]);
  await poll("/health", 60_000, async () => {
    try {
      const res = await fetch(`${base}/health`);
      return res.ok && (await res.json()).status === "ok";
    } catch {
      return false;
    }
  });
  return base;
}

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
  const dir = mkdtempSync(path.join(tmpdir(), "voxwire-browser-"));
  cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
  const speech = makeSpeech(dir);
  log(`fake microphone: "${SENTENCE}" (${speech.speech.toFixed(2)} s), looping every ${speech.period.toFixed(2)} s`);

  let base;
  await step("server started (demo mode, local engines)", async () => {
    base = await startServer(dir);
    return base;
  });

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 60_000,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-quic",
      "--disable-sync",
      "--no-first-run",
      "--use-fake-ui-for-media-stream",
      "--use-fake-device-for-media-stream",
      `--use-file-for-fake-audio-capture=${speech.wav}`,
      "--autoplay-policy=no-user-gesture-required",
    ],
  });
  cleanups.push(() => browser.close());
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
    cleanups.push(() => phone.close());
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

async function cleanup() {
  for (const fn of cleanups.reverse()) {
    try {
      await Promise.race([fn(), sleep(10_000)]);
    } catch {
      // keep cleaning up
    }
  }
}

async function main() {
  const overall = setTimeout(async () => {
    console.error(`FAIL: the browser test took longer than ${secs(OVERALL_MS)}`);
    await cleanup();
    console.log(`browser: ${passed} passed, 1 failed`);
    process.exit(1);
  }, OVERALL_MS);
  for (const signal of ["SIGINT", "SIGTERM"]) {
    process.on(signal, async () => {
      await cleanup();
      process.exit(130);
    });
  }
  let code = 0;
  try {
    await run();
    log("browser end-to-end test passed");
  } catch (e) {
    code = 1;
    console.error(`FAIL: ${e.message}`);
    if (page) {
      try {
        console.error(`page state: ${JSON.stringify(await snapshot())}`);
        console.error(`transcript: ${JSON.stringify(await lines())}`);
        await page.screenshot({ path: path.join(ARTIFACTS, "failure.png"), fullPage: true });
      } catch {
        // the page may be gone
      }
    }
    if (problems.length) console.error(`console:\n${problems.join("\n")}`);
    if (serverLog && existsSync(serverLog)) {
      const tail = readFileSync(serverLog, "utf8").trim().split("\n").slice(-25).join("\n");
      console.error(`server log (last lines, full log in ${path.relative(ROOT, serverLog)}):\n${tail}`);
    }
  } finally {
    clearTimeout(overall);
    await cleanup();
  }
  console.log(`browser: ${passed} passed, ${code} failed`);
  process.exit(code);
}

main();
