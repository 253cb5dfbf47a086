// The service worker of the field app: it keeps the app shell (HTML, scripts, styles, the
// SQLite WebAssembly, icons) in Cache Storage so the app opens with no network. Data never
// goes through here: the replica lives in OPFS and API calls go to the network untouched.
// The build replaces SHELL_VERSION and SHELL_FILES with the bundle's content hash and files.
const VERSION = "27d91822520a6d92";
const FILES = [
  "./",
  "./app.css",
  "./app.js",
  "./chunk-BO7OUEAM.js",
  "./chunk-C6XVLQXV.js",
  "./chunk-PWWBNVLP.js",
  "./engine-worker.js",
  "./icons/icon-192.png",
  "./icons/icon-512.png",
  "./icons/icon-maskable-512.png",
  "./manifest.webmanifest",
  "./sqlite3.wasm"
];
const CACHE = `fieldsync-shell-${VERSION}`;

self.addEventListener("install", (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    // exact URLs (no ignoreSearch later): sqlite's worker scripts read their own query string
    await cache.addAll(FILES.map((f) => new Request(new URL(f, self.registration.scope), { cache: "reload" })));
    await self.skipWaiting();
  })());
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const key of await caches.keys()) {
      if (key.startsWith("fieldsync-shell-") && key !== CACHE) await caches.delete(key);
    }
    await self.clients.claim();
  })());
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  const scope = new URL(self.registration.scope);
  if (url.origin !== scope.origin || !url.pathname.startsWith(scope.pathname)) return;
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    if (request.mode === "navigate") {
      // every address of the app is the one page; the network first keeps a fresh shell
      // when online, the cache answers when not
      try {
        const fresh = await fetch(request);
        if (fresh.ok) return fresh;
      } catch (e) {
        /* offline: the cached shell */
      }
      const shell = await cache.match(new URL("./", scope).href);
      if (shell) return shell;
      return fetch(request);
    }
    const hit = await cache.match(request);
    if (hit) return hit;
    return fetch(request);
  })());
});
