// The operator's sign-in: a pasted token, or in local demo mode an operator token from
// GET /api/demo/token?role=operator (fetched again shortly before it expires). Kept in
// sessionStorage, so a reload keeps the operator signed in and closing the tab signs out.

import { TokenSource } from "../token.js";

const KEY = "voxwire.operator";

/** The claims of a JWT, unverified (to show who is signed in); null when unreadable. */
export function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
  } catch {
    return null;
  }
}

export class OperatorAuth extends EventTarget {
  constructor(storage = sessionStorage) {
    super();
    this.storage = storage;
    this.tokens = new TokenSource("/api/demo/token?role=operator");
    this.kind = null; // "pasted" | "demo" | null
    this.restore();
  }

  get signedIn() {
    return this.kind !== null;
  }

  /** Who the token names: {sub, role, org}. */
  get who() {
    const token = this.kind === "pasted" ? this.tokens.pasted : this.tokens.token;
    const c = (token && claimsOf(token)) || {};
    return { sub: c.sub || "?", role: c.role || "caller", org: c.org || null, exp: c.exp || null };
  }

  restore() {
    let saved = null;
    try {
      saved = JSON.parse(this.storage.getItem(KEY) || "null");
    } catch {
      saved = null;
    }
    if (!saved || !saved.token) return;
    if (saved.kind === "pasted") {
      this.tokens.setPasted(saved.token);
      this.kind = "pasted";
    } else if (saved.kind === "demo") {
      this.tokens.token = saved.token;
      this.tokens.expiresAt = saved.expiresAt || 0;
      this.kind = "demo";
    }
  }

  save() {
    const t = this.tokens;
    const saved =
      this.kind === "pasted"
        ? { kind: "pasted", token: t.pasted }
        : { kind: "demo", token: t.token, expiresAt: t.expiresAt };
    this.storage.setItem(KEY, JSON.stringify(saved));
  }

  /** Signs in with a pasted token; throws when it is plainly not an operator's. */
  usePasted(token) {
    const text = (token || "").trim();
    const claims = claimsOf(text);
    if (!claims) throw new Error("that is not a token (a JWT has three parts separated by dots)");
    if (claims.role !== "operator" && claims.role !== "admin") {
      throw new Error(`this token's role is ${claims.role || "caller"}: the dashboard needs an operator or admin token`);
    }
    if (claims.exp && claims.exp * 1000 < Date.now()) throw new Error("this token has expired");
    this.tokens.setPasted(text);
    this.kind = "pasted";
    this.save();
    this.changed();
  }

  /** Signs in with a demo operator token (local demo mode only). */
  async useDemo() {
    this.tokens.setPasted(null);
    this.tokens.invalidate();
    this.tokens.demoAvailable = null;
    await this.tokens.get();
    this.kind = "demo";
    this.save();
    this.changed();
  }

  signOut() {
    this.tokens.setPasted(null);
    this.tokens.invalidate();
    this.kind = null;
    this.storage.removeItem(KEY);
    this.changed();
  }

  /** A token to use now (a demo token is renewed before it expires). */
  async get() {
    if (!this.kind) throw new Error("not signed in");
    const before = this.tokens.token;
    const token = await this.tokens.get();
    if (this.kind === "demo" && token !== before) this.save();
    return token;
  }

  /** Forgets a refused demo token, so the next `get()` fetches a fresh one. */
  invalidate() {
    if (this.kind === "demo") this.tokens.invalidate();
  }

  changed() {
    this.dispatchEvent(new Event("change"));
  }
}
