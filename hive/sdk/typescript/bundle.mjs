// Bundles a TypeScript/JavaScript function into one ES module for the Edge Hive engine, with esbuild.
// Run by hive/toolchains/typescript.py:  node bundle.mjs <config.json>
//
// Two passes. "scan" walks the function's own files and lists the npm packages it imports (`npm:`
// specifiers, bare imports, esm.sh URLs) without resolving them; Python installs those into a cache
// dir. "bundle" then resolves them from there and writes <out>.js (with its source map inline at the
// end, so that one upload carries both) and <out>.js.map.
//
// What Deno resolves and a build here cannot fetch fails with a message naming the import: jsr:
// packages and https:// modules, except the ones with an exact local equivalent (Deno's std/http
// `serve`, which is the built-in Deno.serve; esm.sh URLs, which are npm packages; .d.ts type imports).

import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const cfg = JSON.parse(readFileSync(process.argv[2], "utf8"));
const esbuild = await import(pathToFileURL(cfg.esbuild).href);

// Deno's std/http/server.ts `serve(handler, options)` is Deno.serve(options, handler).
const STD_HTTP_SERVER = `
export function serve(handler, options = {}) {
  return Deno.serve(options, handler);
}
export const serveTls = serve;
export function serveListener() {
  throw new TypeError("serveListener is not available in Edge Hive: use serve(handler) or Deno.serve(handler)");
}
`;
const DENO_STD_HTTP = /^https:\/\/deno\.land\/std(@[^/]+)?\/http\/server\.ts$/;
const NPM = /^npm:\/?((?:@[^/@]+\/)?[^/@]+)(?:@([^/]+))?(\/.*)?$/;
const SCHEME = /^[a-z][a-z0-9+.-]*:/i;

const deps = {}; // name -> version range ("latest" when the import named none)
const notes = [];

function want(name, version) {
  const have = deps[name];
  if (have === undefined || have === "latest") deps[name] = version || "latest";
  else if (version && version !== have) notes.push(`${name} is imported as ${have} and as ${version}: using ${have}`);
}

// An esm.sh URL is an npm package: https://esm.sh/[v135/|stable/]name@version[/sub][?query]
function fromEsmSh(url) {
  let u;
  try {
    u = new URL(url);
  } catch {
    return null;
  }
  if (u.hostname !== "esm.sh") return null;
  const p = u.pathname.replace(/^\/(v\d+|stable)\//, "/").replace(/^\/\*/, "/");
  return p.length > 1 ? "npm:" + p.slice(1) : null;
}

function bareName(spec) {
  const parts = spec.split("/");
  return spec.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0];
}

// The import map (deno.json or import_map.json "imports"): exact keys, then the longest "prefix/" key.
function mapImport(spec) {
  const imports = cfg.imports || {};
  let target = null;
  if (Object.hasOwn(imports, spec)) target = imports[spec];
  else {
    let best = "";
    for (const key of Object.keys(imports)) {
      if (key.endsWith("/") && spec.startsWith(key) && key.length > best.length) best = key;
    }
    if (best) target = imports[best] + spec.slice(best.length);
  }
  if (target === null) return { spec, mapped: false };
  if (target.startsWith("./") || target.startsWith("../")) target = path.resolve(cfg.importsBase, target);
  return { spec: target, mapped: true };
}

const WHAT_TO_DO = "use the npm: equivalent (npm:<package>@<version>) or copy the file into the function folder and import it by a relative path";

const hivePlugin = {
  name: "edge-hive",
  setup(build) {
    build.onResolve({ filter: /.*/ }, async (args) => {
      if (args.kind === "entry-point" || args.pluginData?.hiveInner) return undefined;
      // A package's own imports resolve the usual way, inside node_modules.
      if (args.namespace === "file" && args.importer.includes(`${path.sep}node_modules${path.sep}`)) return undefined;
      const { spec: mappedSpec, mapped } = mapImport(args.path);
      let spec = mappedSpec;
      if (spec.endsWith(".d.ts")) return { path: spec, namespace: "hive-empty" }; // types only
      if (DENO_STD_HTTP.test(spec)) return { path: "std/http/server.ts", namespace: "hive-shim" };
      if (/^https?:\/\//.test(spec)) {
        const npm = fromEsmSh(spec);
        if (!npm) return { errors: [{ text: `cannot bundle ${JSON.stringify(args.path)}: Edge Hive builds do not fetch https:// modules; ${WHAT_TO_DO}` }] };
        spec = npm;
      }
      if (spec.startsWith("jsr:")) {
        return { errors: [{ text: `cannot bundle ${JSON.stringify(args.path)}: JSR packages are not reachable from Edge Hive builds; ${WHAT_TO_DO}` }] };
      }
      if (spec.startsWith("node:")) {
        return { errors: [{ text: `cannot bundle ${JSON.stringify(args.path)}: Node.js built-in modules are not available in Edge Hive functions (use the web APIs: fetch, crypto.subtle, TextEncoder, ...)` }] };
      }
      let request;
      if (spec.startsWith("npm:")) {
        const m = NPM.exec(spec);
        if (!m) return { errors: [{ text: `cannot read the npm specifier ${JSON.stringify(spec)}: write npm:<package>[@<version>][/<path>]` }] };
        if (cfg.mode === "scan") want(m[1], m[2]);
        request = m[1] + (m[3] || "");
      } else if (SCHEME.test(spec)) {
        return { errors: [{ text: `cannot bundle ${JSON.stringify(args.path)}: the ${spec.split(":")[0]}: scheme is not supported; ${WHAT_TO_DO}` }] };
      } else if (spec.startsWith(".") || path.isAbsolute(spec)) {
        if (!mapped) return undefined; // the function's own files: esbuild's resolution
        return { path: path.resolve(args.resolveDir, spec) };
      } else {
        if (cfg.mode === "scan") want(bareName(spec), null);
        request = spec;
      }
      if (cfg.mode === "scan") return { path: request, external: true };
      const r = await build.resolve(request, { kind: args.kind, resolveDir: cfg.depsDir, pluginData: { hiveInner: true } });
      if (r.errors.length) return { errors: r.errors };
      return { path: r.path, namespace: r.namespace, sideEffects: r.sideEffects };
    });
    build.onLoad({ filter: /.*/, namespace: "hive-empty" }, () => ({ contents: "", loader: "js" }));
    build.onLoad({ filter: /.*/, namespace: "hive-shim" }, () => ({ contents: STD_HTTP_SERVER, loader: "js" }));
  },
};

// Map sources as a reader wants them: the function's files relative to its folder (esbuild writes them
// relative to the output's dir), packages as node_modules/...
function tidySources(map) {
  map.sources = map.sources.map((s) => {
    const at = s.lastIndexOf("node_modules/");
    if (at >= 0) return s.slice(at);
    if (/^hive-(shim|empty):/.test(s)) return s.replace(/^hive-(shim|empty):/, "edge-hive:");
    return path.relative(cfg.folder, path.resolve(path.dirname(cfg.outFile), s)).split(path.sep).join("/");
  });
  return map;
}

const options = {
  entryPoints: [cfg.entry],
  absWorkingDir: cfg.folder,
  bundle: true,
  format: "esm",
  platform: "browser",
  conditions: ["worker", "browser"],
  target: "es2023",
  charset: "utf8",
  write: false,
  logLevel: "silent",
  plugins: [hivePlugin],
  define: { "process.env.NODE_ENV": '"production"' },
  outfile: cfg.outFile || path.join(cfg.folder, "out.js"),
};

let result;
try {
  result = await esbuild.build(cfg.mode === "scan" ? options : { ...options, sourcemap: "external", sourcesContent: false, metafile: true });
} catch (e) {
  const messages = await esbuild.formatMessages(e.errors || [], { kind: "error", color: false });
  process.stderr.write(messages.join("") || String(e) + "\n");
  process.exit(1);
}
if (result.warnings.length && cfg.mode === "bundle") {
  const messages = await esbuild.formatMessages(result.warnings, { kind: "warning", color: false });
  process.stderr.write(messages.join(""));
}

if (cfg.mode === "scan") {
  writeFileSync(cfg.report, JSON.stringify({ deps, notes }));
} else {
  const js = result.outputFiles.find((f) => f.path.endsWith(".js"));
  const mapFile = result.outputFiles.find((f) => f.path.endsWith(".js.map"));
  const map = tidySources(JSON.parse(mapFile.text));
  const mapText = JSON.stringify(map);
  const inline = Buffer.from(mapText).toString("base64");
  const code = js.text.replace(/\n?$/, "\n") + `//# sourceMappingURL=data:application/json;base64,${inline}\n`;
  writeFileSync(cfg.outFile, code);
  writeFileSync(cfg.outFile + ".map", mapText);
  writeFileSync(cfg.report, JSON.stringify({ bytes: js.contents.length, mapBytes: mapText.length, notes, inputs: Object.keys(result.metafile.inputs).length }));
}
