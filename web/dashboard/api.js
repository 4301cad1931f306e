// The operators' HTTP routes: JSON requests with the operator's token as a bearer header,
// errors as ApiError with the server's code, and downloads (export) through a blob, since a
// plain link could not carry the token in a header.

export class ApiError extends Error {
  /**
   * @param {number} status  HTTP status (0: the server could not be reached)
   * @param {string} code    the server's error code (`forbidden`, `already_taken_over`...)
   * @param {string} message
   * @param {object} [extra] other fields of the error (`taken_over_by`)
   */
  constructor(status, code, message, extra = {}) {
    super(message);
    Object.assign(this, { status, code, extra });
  }

  /** "409 already_taken_over: the call is taken over by `sup1`" */
  describe() {
    return this.status ? `${this.status} ${this.code}: ${this.message}` : this.message;
  }
}

/** An ApiError from a failed response (its JSON error body when it has one). */
export async function errorOf(res) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    // not JSON (a proxy's page, an empty body)
  }
  const e = body && body.error;
  if (e && e.code) {
    const { code, message, ...extra } = e;
    return new ApiError(res.status, code, message || code, extra);
  }
  return new ApiError(res.status, `http_${res.status}`, res.statusText || "request failed");
}

export class Api {
  /** @param {{get(): Promise<string>}} tokens  the operator's tokens (see auth.js) */
  constructor(tokens) {
    this.tokens = tokens;
  }

  async request(method, path, { query, body, signal } = {}) {
    const url = new URL(path, location.href);
    for (const [k, v] of Object.entries(query || {})) {
      if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, String(v));
    }
    const headers = { Authorization: `Bearer ${await this.tokens.get()}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let res;
    try {
      res = await fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        signal,
      });
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new ApiError(0, "unreachable", "the server cannot be reached");
    }
    if (!res.ok) throw await errorOf(res);
    return res;
  }

  async json(method, path, options) {
    const res = await this.request(method, path, options);
    return res.json();
  }

  get(path, query) {
    return this.json("GET", path, { query });
  }

  post(path, body) {
    return this.json("POST", path, { body });
  }

  /**
   * Fetches a file and hands it to the browser as a download; resolves with
   * {filename, bytes, truncated}.
   */
  async download(path, query, fallbackName) {
    const res = await this.request("GET", path, { query });
    const blob = await res.blob();
    const disposition = res.headers.get("Content-Disposition") || "";
    const m = disposition.match(/filename="?([^";]+)"?/);
    const filename = m ? m[1] : fallbackName;
    const href = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = href;
    a.download = filename;
    a.hidden = true;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(href), 10_000);
    return { filename, bytes: blob.size, truncated: res.headers.get("X-Voxwire-Truncated") === "true" };
  }
}
