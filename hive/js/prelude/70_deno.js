// Deno.serve, Deno.env, EdgeRuntime.waitUntil, and dispatch(): one request in, one wire response out.

let handler = null;
let onError = null;

function serve(a, b) {
  let options = {};
  let fn = null;
  if (typeof a === "function") {
    fn = a;
  } else if (a !== null && typeof a === "object") {
    options = a;
    fn = typeof b === "function" ? b : typeof a.handler === "function" ? a.handler : null;
  }
  if (typeof fn !== "function") throw new TypeError("Deno.serve needs a handler function: Deno.serve((req) => new Response(\"hi\"))");
  if (handler) throw new Error("Deno.serve was called twice: an Edge Hive function serves exactly one handler");
  handler = fn;
  onError = typeof options.onError === "function" ? options.onError : null;
  const addr = { transport: "tcp", hostname: options.hostname ?? "0.0.0.0", port: options.port ?? 8000 };
  if (typeof options.onListen === "function") {
    const listen = options.onListen;
    queueMicrotask(() => listen(addr));
  }
  return {
    addr,
    finished: new Promise(() => {}),
    shutdown: async () => {},
    ref() {},
    unref() {},
    [Symbol.asyncDispose]: async () => {},
  };
}

let envMap = null;

function envTable() {
  if (!envMap) {
    envMap = new Map();
    const flat = native.env();
    for (let i = 0; i < flat.length; i += 2) envMap.set(flat[i], flat[i + 1]);
  }
  return envMap;
}

const env = {
  get(name) { return envTable().get(String(name)); },
  has(name) { return envTable().has(String(name)); },
  toObject() { return Object.fromEntries(envTable()); },
  set(name) { throw new TypeError(`Deno.env.set(${JSON.stringify(String(name))}) is not available in Edge Hive: a function's environment is its deployed config`); },
  delete(name) { throw new TypeError(`Deno.env.delete(${JSON.stringify(String(name))}) is not available in Edge Hive: a function's environment is its deployed config`); },
};

// Deno APIs a function might reach for: each fails with a message that names it.
const DENO_MISSING = [
  "readFile", "readTextFile", "readFileSync", "readTextFileSync", "writeFile", "writeTextFile", "writeFileSync",
  "writeTextFileSync", "open", "openSync", "create", "remove", "removeSync", "mkdir", "mkdirSync", "readDir",
  "readDirSync", "stat", "statSync", "lstat", "realPath", "rename", "copyFile", "truncate", "chmod", "chown",
  "symlink", "link", "makeTempDir", "makeTempFile", "cwd", "chdir", "connect", "connectTls", "listen", "listenTls",
  "listenDatagram", "resolveDns", "startTls", "upgradeWebSocket", "Command", "run", "kill", "exit", "openKv", "cron",
  "hostname", "osRelease", "osUptime", "loadavg", "systemMemoryInfo", "networkInterfaces", "memoryUsage", "dlopen",
  "serveHttp", "watchFs", "addSignalListener", "removeSignalListener", "execPath", "uid", "gid",
];

class NotCapable extends Error {
  get name() { return "NotCapable"; }
}

const Deno = { serve, env, args: [], noColor: true, pid: 1, mainModule: "file:///function.js", errors: { NotCapable } };
for (const name of ["NotFound", "PermissionDenied", "ConnectionRefused", "ConnectionReset", "AlreadyExists", "BadResource", "Interrupted", "InvalidData", "TimedOut", "Http", "NotSupported"]) {
  Deno.errors[name] = { [name]: class extends Error { get name() { return name; } } }[name];
}
for (const name of DENO_MISSING) {
  Deno[name] = function () {
    throw new NotCapable(`Deno.${name} is not available in Edge Hive: functions have no file system, sockets, subprocesses or KV; the Deno namespace offers serve and env`);
  };
}

// Work that continues after the response: Edge Hive runs it before the invocation returns.
const waitList = [];
const EdgeRuntime = {
  waitUntil(promise) {
    waitList.push(Promise.resolve(promise));
  },
};

// addEventListener on globalThis (Supabase's "beforeunload" examples register one); nothing fires.
const globalEvents = new EventTarget();

defineGlobals({
  Deno,
  EdgeRuntime,
  navigator: { userAgent: "Edge-Hive", language: "en-US", languages: ["en-US"], hardwareConcurrency: 1 },
  addEventListener: (...a) => globalEvents.addEventListener(...a),
  removeEventListener: (...a) => globalEvents.removeEventListener(...a),
  dispatchEvent: (e) => globalEvents.dispatchEvent(e),
});

class HandlerError extends Error {}

function errorCode(e) {
  if (e instanceof HandlerError) return "handler_failed";
  if (e instanceof InternalError && e.message === "out of memory") return "out_of_memory";
  return "uncaught_exception";
}

function errorMessage(e) {
  try {
    if (e instanceof Error) return `${e.name}: ${e.message}`;
    return typeof e === "string" ? e : inspect(e);
  } catch {
    return "(an exception that cannot be shown)";
  }
}

function failure(e) {
  emit(2, `Uncaught ${formatError(e)}`);
  const code = errorCode(e);
  return [500, ["content-type", "application/json"], JSON.stringify({ error: code, message: errorMessage(e) })];
}

function describe(v) {
  if (v === undefined) return "undefined";
  if (v === null) return "null";
  return typeof v === "object" ? `a ${ctorName(v) || "object"}` : `a ${typeof v}`;
}

function toWire(res) {
  if (!(res instanceof Response)) throw new HandlerError(`the handler must return a Response (or a promise of one), not ${describe(res)}`);
  if (res.type === "error") throw new HandlerError("the handler returned Response.error()");
  const wire = responseToWire(res);
  return waitList.length ? Promise.resolve(wire).then(drainWaitUntil) : wire;
}

function onFailure(e) {
  if (onError) {
    const handle = onError;
    return Promise.resolve()
      .then(() => handle(e))
      .then(toWire, (e2) => drainWaitUntil(failure(e2)));
  }
  const wire = failure(e);
  return waitList.length ? drainWaitUntil(wire) : wire;
}

async function drainWaitUntil(wire) {
  while (waitList.length) {
    for (const r of await Promise.allSettled(waitList.splice(0))) {
      if (r.status === "rejected") emit(2, `Uncaught (in promise) ${formatError(r.reason)}`);
    }
  }
  return wire;
}

const PLAIN_TARGET = /^\/[\x21-\x7e]*$/;

// Supabase's gateway strips its route prefix: a function sees /NAME/rest (so a router's basePath is
// "/NAME"), whichever of the server's routes (/functions/v1/NAME/..., /api/v1/edge/NAME) it came by.
function unprefixed(path) {
  if (path.startsWith("/functions/v1/")) return path.slice(13);
  if (path.startsWith("/api/v1/edge/")) return path.slice(12);
  return path;
}

function requestUrl(path, query, flat) {
  path = unprefixed(path);
  let host = "localhost";
  let proto = "http";
  for (let i = 0; i < flat.length; i += 2) {
    if (flat[i] === "host") host = flat[i + 1];
    else if (flat[i] === "x-forwarded-proto" && /^https?$/.test(flat[i + 1])) proto = flat[i + 1];
  }
  const raw = `${proto}://${host}${path.startsWith("/") ? path : "/" + path}${query ? "?" + query : ""}`;
  // Most targets are plain ASCII already; anything else goes through the URL parser to be encoded.
  if (PLAIN_TARGET.test(path) && /^[\x21-\x7e]*$/.test(query) && /^[A-Za-z0-9.\-:[\]]+$/.test(host) && !/[#\\]/.test(path + query)) return raw;
  try {
    return new URL(raw).href;
  } catch {
    return `${proto}://localhost/`;
  }
}

function remoteAddr(flat) {
  for (let i = 0; i < flat.length; i += 2) {
    if (flat[i] === "x-forwarded-for") return flat[i + 1].split(",")[0].trim();
    if (flat[i] === "x-real-ip") return flat[i + 1].trim();
  }
  return "127.0.0.1";
}

// The wire response, or a promise of it: a handler that answers synchronously costs no microtasks.
api.dispatch = (method, path, query, flat, body) => {
  let req;
  try {
    req = serverRequest(method, requestUrl(path, query, flat), flat, body);
  } catch (e) {
    return failure(e);
  }
  let res;
  try {
    res = handler(req, connInfo(flat));
  } catch (e) {
    return onFailure(e);
  }
  if (res !== null && typeof res === "object" && typeof res.then === "function") return Promise.resolve(res).then(toWire, onFailure);
  try {
    return toWire(res);
  } catch (e) {
    return onFailure(e);
  }
};

const COMPLETED = Promise.resolve();

// Deno's second handler argument, its remote address read from the proxy headers when asked for.
function connInfo(flat) {
  let addr = null;
  return {
    get remoteAddr() {
      return (addr ??= { transport: "tcp", hostname: remoteAddr(flat), port: 0 });
    },
    completed: COMPLETED,
  };
}

api.endInvocation = () => {
  timers.clear();
  waitList.length = 0;
  inflight.clear(); // fetches in flight (60_fetch.js): the host drops them when the call returns
};

api.hasHandler = () => handler !== null;

// import.meta of the function's module: the bundle is one file, /function.js.
const MAIN_MODULE = "file:///function.js";
api.fillImportMeta = (meta) => {
  meta.url = MAIN_MODULE;
  meta.main = true;
  meta.filename = "/function.js";
  meta.dirname = "/";
  meta.resolve = (specifier) => new URL(String(specifier), MAIN_MODULE).href;
};

// A module that exports `default { fetch(req, info) }` (the `deno serve` form) and never called
// Deno.serve is served by that fetch.
api.adoptExports = (ns) => {
  const main = ns.default;
  if (handler || main === null || typeof main !== "object" || typeof main.fetch !== "function") return;
  handler = (req, info) => main.fetch(req, info);
  if (typeof main.onError === "function") onError = (e) => main.onError(e);
};
