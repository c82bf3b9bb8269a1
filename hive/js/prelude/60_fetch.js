// fetch: the one place outbound HTTP plugs in. `hostFetch(request)` takes a Request and resolves to a
// Response; until the host offers fetch calls it rejects, so a function learns at once, with the URL
// in the message, that nothing was sent. Replace hostFetch (or call api.setFetch) to wire the host in.

let hostFetch = async function hostFetch(request) {
  throw new TypeError(`fetch is not available yet in Edge Hive: ${request.method} ${request.url} was not sent (outbound HTTP needs the host's fetch calls)`);
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

api.setFetch = (fn) => {
  hostFetch = fn;
};

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
