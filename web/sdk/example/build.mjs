// Bundle the example (page and worker) into example/dist with sqlite3.wasm beside the worker.
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "dist");
mkdirSync(out, { recursive: true });
await build({
  entryPoints: { main: join(here, "main.js"), worker: join(here, "..", "src", "worker.js") },
  bundle: true,
  format: "esm",
  splitting: true,
  target: "es2022",
  platform: "browser",
  outdir: out,
  logLevel: "warning",
});
const require = createRequire(import.meta.url);
const wasm = join(dirname(require.resolve("@sqlite.org/sqlite-wasm/package.json")), "dist", "sqlite3.wasm");
copyFileSync(wasm, join(out, "sqlite3.wasm"));
