// fetch over the host's outbound calls (docs/abi.md, "Host calls for I/O"): native.fetchSend starts a
// request and returns its handle at once; glue.c's loop waits in the host (hive.wait) when nothing else
// can run, until an answer comes or the next timer is due, and hands each result to api.fetchDone,
// which settles that fetch's promise. The host's allow-list, limits and accounting apply as to any
// guest: a refusal is a rejected promise (a TypeError naming the URL and the host's error code), never
// a crash.

const inflight = new Map(); // handle -> { resolve, reject, request, signal, onAbort }

const STATUS_TEXT = {
  200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 206: "Partial Content", 301: "Moved Permanently",
  302: "Found", 303: "See Other", 304: "Not Modified", 307: "Temporary Redirect", 308: "Permanent Redirect",
  400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
  406: "Not Acceptable", 409: "Conflict", 410: "Gone", 412: "Precondition Failed", 413: "Payload Too Large",
  415: "Unsupported Media Type", 416: "Range Not Satisfiable", 422: "Unprocessable Entity", 429: "Too Many Requests",
  500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
  504: "Gateway Timeout",
};

// The response's URL, as Deno gives it: without a fragment; after redirects, the last one the host
// followed (finalUrl, as the host's URL parser wrote it, serialised again by ours).
function responseUrl(request, redirects, finalUrl) {
  let url = request.url;
  if (redirects > 0 && finalUrl) {
    try {
      url = new URL(finalUrl).href;
    } catch {
      url = finalUrl;
    }
  }
  const hash = url.indexOf("#");
  return hash < 0 ? url : url.slice(0, hash);
}

function fetchedResponse(request, status, flat, body, redirects, finalUrl) {
  const res = Object.create(Response.prototype);
  const headers = new Headers();
  const list = headers[kHeaders];
  for (let i = 0; i < flat.length; i += 2) list.push([flat[i].toLowerCase(), flat[i + 1]]);
  const empty = request.method === "HEAD" || NULL_BODY_STATUS.has(status);
  const url = responseUrl(request, redirects, finalUrl);
  res[kRes] = { status, statusText: STATUS_TEXT[status] ?? "", headers, type: "basic", url, redirected: redirects > 0 };
  res[kBody] = bodyState(empty || body === null ? null : body);
  return res;
}

async function hostFetch(request) {
  const r = request[kReq];
  const signal = request.signal;
  const body = request[kBody].src === null ? null : asBytes(await consume(request, "fetch()"));
  if (signal.aborted) throw signal.reason;
  const headers = request.headers;
  if (!headers.has("accept")) headers.set("accept", "*/*");
  if (!headers.has("user-agent")) headers.set("user-agent", "Edge-Hive");
  const handle = native.fetchSend(r.method, r.url, headersToWire(headers), body);
  if (handle < 0) {
    throw new TypeError(`fetch ${r.method} ${r.url} was not sent: this invocation holds 64 fetch results it has not read (await your fetches)`);
  }
  return new Promise((resolve, reject) => {
    const entry = { resolve, reject, request, signal, onAbort: null };
    entry.onAbort = () => {
      if (inflight.get(handle) !== entry) return;
      inflight.delete(handle); // its answer, when the host has it, is dropped
      reject(signal.reason);
    };
    signal.addEventListener("abort", entry.onAbort, { once: true });
    inflight.set(handle, entry);
  });
}

// [0, status, [name, value, ...], body, redirects, final URL] or [1, code, message] for the fetch with
// this handle.
api.fetchDone = (handle, result) => {
  const e = inflight.get(handle);
  if (!e) return; // aborted meanwhile
  inflight.delete(handle);
  e.signal.removeEventListener("abort", e.onAbort);
  if (result[0] !== 0) {
    const [, code, message] = result;
    e.reject(new TypeError(`fetch ${e.request.method} ${e.request.url} failed: ${message} (${code})`, { cause: { code, message } }));
    return;
  }
  e.resolve(fetchedResponse(e.request, result[1], result[2], result[3], result[4], result[5]));
};

function fetch(input, init) {
  try {
    const request = new Request(input, init);
    if (request.signal.aborted) return Promise.reject(request.signal.reason);
    return hostFetch(request);
  } catch (e) {
    return Promise.reject(e);
  }
}

// WebSocket exists (supabase-js's realtime client looks for the constructor when a client is created)
// but cannot connect: Edge Hive functions have no outbound sockets.
class WebSocket extends EventTarget {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;
  constructor(url) {
    super();
    throw new DOMException(`WebSocket connections are not available in Edge Hive (${String(url)})`, "NotSupportedError");
  }
}

defineGlobals({ fetch, WebSocket });
