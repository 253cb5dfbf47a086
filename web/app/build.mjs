// Build the field app into the Python package (src/fieldsync/webapp/static/): the app and
// the SDK's engine worker bundled by esbuild, SQLite's WebAssembly, the shell files, and the
// service worker with the list of files and a content hash. Deterministic: the same sources
// give the same bytes (no timestamps, sorted lists, no absolute paths in the output).
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const out = join(root, "src", "fieldsync", "webapp", "static");
const require = createRequire(import.meta.url);
const sqliteDir = dirname(require.resolve("@sqlite.org/sqlite-wasm/package.json"));

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, "icons"), { recursive: true });

const common = {
  bundle: true,
  format: /** @type {const} */ ("esm"),
  target: ["chrome109", "safari16", "firefox111"],
  minify: true,
  legalComments: /** @type {const} */ ("none"),
  charset: /** @type {const} */ ("utf8"),
  absWorkingDir: join(root, "web"),
  logLevel: /** @type {const} */ ("warning"),
};
// the page and the engine's worker in one build, split: the page's bundle holds the app and
// the proxy to the worker; the engine (and SQLite's JavaScript) is in a chunk that only the
// worker loads (the page reaches it only through index.js's dynamic import for node)
await build({
  ...common,
  entryPoints: [
    { in: join(here, "src", "main.js"), out: "app" },
    { in: require.resolve("@fieldsync/device/worker"), out: "engine-worker" },
  ],
  outdir: out,
  splitting: true,
  chunkNames: "chunk-[hash]",
  // sqlite3.wasm is fetched next to the chunk that loads it (new URL(..., import.meta.url)), not inlined
  loader: { ".wasm": "file" },
});
copyFileSync(join(sqliteDir, "dist", "sqlite3.wasm"), join(out, "sqlite3.wasm"));
for (const name of ["index.html", "app.css", "manifest.webmanifest"]) {
  copyFileSync(join(here, name), join(out, name));
}
for (const name of readdirSync(join(here, "icons")).sort()) {
  copyFileSync(join(here, "icons", name), join(out, "icons", name));
}

const sqliteVersion = JSON.parse(readFileSync(join(sqliteDir, "package.json"), "utf8")).version;
const notice = readFileSync(join(sqliteDir, "dist", "index.mjs"), "utf8").match(/\/\* @preserve[\s\S]*?\*\//)?.[0];
const licenses = [
  "Third-party software in this directory (bundled into the engine's chunk that engine-worker.js loads, and sqlite3.wasm).",
  "",
  `== @sqlite.org/sqlite-wasm ${sqliteVersion}: the SQLite WebAssembly build ==`,
  "SQLite is in the public domain. The package is published under the Apache License 2.0",
  "(below); its Emscripten glue is under the MIT and University of Illinois/NCSA licenses.",
  "Its own notice:",
  "",
  notice || "(notice not found)",
  "",
  "== Apache License 2.0 ==",
  "",
  readFileSync(join(here, "licenses", "Apache-2.0.txt"), "utf8").trim(),
  "",
  "== Emscripten ==",
  "",
  readFileSync(join(here, "licenses", "emscripten-MIT.txt"), "utf8").trim(),
  "",
  "== fieldsync: the field app and @fieldsync/device ==",
  "Part of fieldsync, under the project's license.",
  "",
].join("\n");
writeFileSync(join(out, "LICENSES.txt"), licenses);

// the service worker: every file of the shell, and a version that changes with any of them
const files = [];
const walk = (dir) => {
  for (const name of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, name.name);
    if (name.isDirectory()) walk(path);
    else files.push(relative(out, path).split("\\").join("/"));
  }
};
walk(out);
files.sort();
const hash = createHash("sha256");
for (const f of files) hash.update(f).update("\0").update(readFileSync(join(out, f)));
const version = hash.digest("hex").slice(0, 16);
const shell = ["./", ...files.filter((f) => f !== "index.html" && f !== "LICENSES.txt").map((f) => `./${f}`)];
const sw = readFileSync(join(here, "sw.js"), "utf8")
  .replace('"SHELL_VERSION"', JSON.stringify(version))
  .replace("/* SHELL_FILES */ []", JSON.stringify(shell, null, 2));
writeFileSync(join(out, "sw.js"), sw);
console.log(`built ${files.length + 1} files into ${relative(root, out)} (shell ${version})`);
