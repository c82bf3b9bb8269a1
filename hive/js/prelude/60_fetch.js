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

defineGlobals({ fetch });
