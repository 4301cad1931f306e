// What the headless Chromium tests share: the release server in demo mode with its local
// engines, espeak-ng speech for Chromium's fake microphone, the browser, named steps with
// timings, polling, console watching, and a runner that always cleans up and prints
// "browser: N passed, M failed". Screenshots and the server's log go to target/browser/.

import { execFileSync, spawn } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const TARGET = path.resolve(ROOT, process.env.CARGO_TARGET_DIR || "target");
const BIN = process.env.VOXWIRE_BIN || path.join(TARGET, "release", "voxwire");
const CHROMIUM = process.env.VOXWIRE_CHROMIUM || "/usr/bin/chromium";
export const ARTIFACTS = path.join(ROOT, "target", "browser");

const started = Date.now();
const cleanups = [];
let passed = 0;

export const secs = (ms) => `${(ms / 1000).toFixed(1)} s`;
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function log(line) {
  console.log(`[${secs(Date.now() - started).padStart(7)}] ${line}`);
}

/** Something to undo when the test ends, whatever happens (run last first). */
export function onCleanup(fn) {
  cleanups.push(fn);
}

/** Runs one named check, printing its outcome and how long it took. */
export async function step(name, fn) {
  const t0 = Date.now();
  const detail = await fn();
  passed += 1;
  log(`ok   ${name} (${secs(Date.now() - t0)})${detail ? `: ${detail}` : ""}`);
}

/** Calls `fn` every `everyMs` until it returns a truthy value; fails after `timeoutMs`. */
export async function poll(what, timeoutMs, fn, everyMs = 200) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${secs(timeoutMs)} waiting for ${what}`);
    await sleep(everyMs);
  }
}

export function words(text) {
  return text.toLowerCase().replace(/[^a-z0-9' ]+/g, " ").split(/\s+/).filter(Boolean);
}

/** Share of `sentence`'s words found in `text`. */
export function wordShare(text, sentence) {
  const heard = new Set(words(text));
  const expected = words(sentence);
  return expected.filter((w) => heard.has(w)).length / expected.length;
}

/** Collects a page's console errors and warnings and its uncaught exceptions into `problems`. */
export function watchConsole(p, name, problems) {
  p.on("console", (m) => {
    if (m.type() !== "error" && m.type() !== "warning") return;
    const where = m.location() && m.location().url;
    problems.push(`${name}: console ${m.type()}: ${m.text()}${where ? ` (${where})` : ""}`);
  });
  p.on("pageerror", (e) => problems.push(`${name}: uncaught ${e.message}`));
}

/** A scratch directory, removed at the end. */
export function scratchDir() {
  const dir = mkdtempSync(path.join(tmpdir(), "voxwire-browser-"));
  onCleanup(async () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * The fake microphone's file: `sentence` spoken by espeak-ng at 48 kHz, after `leadSecs` and
 * followed by `trailSecs` of silence (Chromium loops it). Returns {wav, period, speech} (s).
 */
export function makeSpeech(dir, sentence, { leadSecs = 0.3, trailSecs = 8, name = "mic" } = {}) {
  const raw = path.join(dir, `${name}-sentence.wav`);
  const wav = path.join(dir, `${name}-48k.wav`);
  execFileSync("espeak-ng", ["-w", raw, sentence]);
  execFileSync("sox", [raw, "-r", "48000", "-c", "1", "-b", "16", wav, "pad", String(leadSecs), String(trailSecs)]);
  const period = Number(execFileSync("soxi", ["-D", wav]).toString().trim());
  const speech = Number(execFileSync("soxi", ["-D", raw]).toString().trim());
  return { wav, period, speech };
}

let serverLog = null;

/** Starts the release server in demo mode on a free loopback port; resolves with its base URL. */
export async function startServer(dir, { logName = "server.log", env: extra = {} } = {}) {
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
    // A scratch store in the scratch directory: a test never writes to the user's own.
    VOXWIRE_DATABASE_URL: `sqlite://${path.join(dir, "calls.db")}`,
    RUST_LOG: "voxwire=info",
    ...extra,
  });
  mkdirSync(ARTIFACTS, { recursive: true });
  serverLog = path.join(ARTIFACTS, logName);
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
  onCleanup(stopServer);
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

/** Headless Chromium with a fake microphone playing `wav` (looped). */
export async function launchBrowser(wav) {
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
      `--use-file-for-fake-audio-capture=${wav}`,
      "--autoplay-policy=no-user-gesture-required",
    ],
  });
  onCleanup(() => browser.close());
  return browser;
}

async function cleanup() {
  for (const fn of cleanups.splice(0).reverse()) {
    try {
      await Promise.race([fn(), sleep(10_000)]);
    } catch {
      // keep cleaning up
    }
  }
}

/**
 * Runs a whole test: `run()` makes its steps; on failure `onFailure()` prints what helps (page
 * state, screenshots), then the server log's tail. Always cleans up; exits 0 or 1.
 */
export async function main({ name, overallMs, run, onFailure = async () => {} }) {
  const overall = setTimeout(async () => {
    console.error(`FAIL: the ${name} took longer than ${secs(overallMs)}`);
    await cleanup();
    console.log(`browser: ${passed} passed, 1 failed`);
    process.exit(1);
  }, overallMs);
  for (const signal of ["SIGINT", "SIGTERM"]) {
    process.on(signal, async () => {
      await cleanup();
      process.exit(130);
    });
  }
  let code = 0;
  try {
    await run();
    log(`${name} passed`);
  } catch (e) {
    code = 1;
    console.error(`FAIL: ${e.message}`);
    try {
      await onFailure();
    } catch {
      // the page may be gone
    }
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
