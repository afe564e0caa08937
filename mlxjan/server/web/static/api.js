// The page's only way to the server: the public API under the configured prefix, with the
// API key (kept in sessionStorage only: gone when the tab closes) as a Bearer token.

const KEY_ITEM = "mlxjan.apiKey";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

// Where sessionStorage is off, the key lives for this page load only.
let memoryKey = "";

export const keyStore = {
  get() {
    try { return sessionStorage.getItem(KEY_ITEM) || memoryKey; } catch { return memoryKey; }
  },
  set(key) {
    memoryKey = key;
    try { sessionStorage.setItem(KEY_ITEM, key); } catch { /* memoryKey holds it */ }
  },
};

export class Api {
  // `onUnauthorized(wrong)` is called when a key is needed: none yet, or a wrong one (401).
  constructor(prefix, onUnauthorized, keyRequired) {
    this.prefix = prefix.replace(/\/+$/, "");
    this.onUnauthorized = onUnauthorized;
    this.keyRequired = keyRequired;
  }

  url(path) {
    return `${this.prefix}${path}`;
  }

  headers(json) {
    const headers = { Accept: json ? "application/json" : "text/event-stream" };
    const key = keyStore.get();
    if (key) headers.Authorization = `Bearer ${key}`;
    return headers;
  }

  async request(path, { method = "GET", body, signal, stream = false } = {}) {
    // A keyed server without a key yet: ask for it rather than send a call bound to fail.
    if (this.keyRequired && !keyStore.get()) {
      this.onUnauthorized?.(false);
      throw new ApiError(401, "This server needs its API key.");
    }
    const headers = this.headers(!stream);
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(this.url(path), {
      method, headers, signal, cache: "no-store", credentials: "omit",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!response.ok) {
      if (response.status === 401) this.onUnauthorized?.(true);
      throw new ApiError(response.status, await errorMessage(response));
    }
    return response;
  }

  async json(path, options) {
    return (await this.request(path, options)).json();
  }

  // The `data:` payloads of an event stream, parsed as JSON, until [DONE].
  async *events(path, body, signal) {
    const response = await this.request(path, { method: "POST", body, signal, stream: true });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    const parser = new SSEParser();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const data of parser.feed(value)) {
          if (data === "[DONE]") return;
          yield JSON.parse(data);
        }
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }
}

async function errorMessage(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    return body.error?.message || body.detail || text;
  } catch {
    return text || `${response.status} ${response.statusText}`;
  }
}

// Server-Sent Events framing: feed text as it arrives, get each complete event's data.
// Comments (": keep-alive") and other fields are skipped.
export class SSEParser {
  constructor() {
    this.buffer = "";
    this.data = [];
  }

  feed(text) {
    this.buffer += text;
    const out = [];
    let nl;
    while ((nl = this.buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = this.buffer.slice(0, nl);
      const eol = this.buffer.startsWith("\r\n", nl) ? 2 : 1;
      // A lone \r at the end might be half of \r\n: wait for more.
      if (eol === 1 && this.buffer[nl] === "\r" && nl === this.buffer.length - 1) break;
      this.buffer = this.buffer.slice(nl + eol);
      if (line === "") {
        if (this.data.length) out.push(this.data.join("\n"));
        this.data = [];
      } else if (line.startsWith("data:")) {
        this.data.push(line.slice(line[5] === " " ? 6 : 5));
      }
    }
    return out;
  }
}
