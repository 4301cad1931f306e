// Where the page's token comes from: a pasted token, or in local demo mode a short-lived one
// from GET /api/demo/token, fetched again shortly before it expires.

export class TokenError extends Error {
  /** @param {"needs_token" | "unreachable"} code */
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/** Refresh a demo token this long before it expires. */
const MARGIN_MS = 60_000;

export class TokenSource {
  constructor(demoUrl = "/api/demo/token") {
    this.demoUrl = demoUrl;
    this.pasted = null;
    this.token = null;
    this.expiresAt = 0;
    /** null until asked; false when the server hands out no demo tokens. */
    this.demoAvailable = null;
  }

  /** Uses this token from now on (empty: back to demo tokens). */
  setPasted(token) {
    this.pasted = token ? token.trim() : null;
  }

  /** Forgets the current demo token (say, after the server said it expired). */
  invalidate() {
    this.token = null;
  }

  /** A token to use now. Throws a TokenError when there is none to be had. */
  async get() {
    if (this.pasted) return this.pasted;
    if (this.token && Date.now() < this.expiresAt - MARGIN_MS) return this.token;
    if (this.demoAvailable === false) {
      throw new TokenError("needs_token", "paste a token: this server hands out no demo tokens");
    }
    let res;
    try {
      res = await fetch(this.demoUrl, { cache: "no-store" });
    } catch {
      throw new TokenError("unreachable", "the server cannot be reached");
    }
    if (res.status === 404) {
      this.demoAvailable = false;
      throw new TokenError("needs_token", "paste a token: this server hands out no demo tokens");
    }
    if (!res.ok) throw new TokenError("unreachable", `token request failed (HTTP ${res.status})`);
    const body = await res.json();
    this.demoAvailable = true;
    this.token = body.token;
    this.expiresAt = Date.now() + (body.expires_in || 300) * 1000;
    return this.token;
  }
}
