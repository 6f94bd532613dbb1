// Stemtone's service worker. JavaScript because a service worker can be nothing else.
// Two jobs:
//  1. Cross-origin isolation on any static server: PyScript workers need
//     SharedArrayBuffer, which needs the COOP/COEP headers; this worker adds them to every
//     same-origin response it hands the pages (the technique of the coi-serviceworker npm
//     package, in the few lines it takes here, because the same worker also has to cache
//     the app and a scope has only one service worker).
//  2. Offline use: on install it caches the whole app shell (pages, Pyodide, PyScript,
//     pycore + kernels, the model lists) under this build's version, and serves it from
//     there. A new build is a new version: its shell is cached completely before it takes
//     over, and only then are older versions deleted, so a page never mixes two builds.
//     The weights are cached by the pages themselves on first use (site/worker_kit.py,
//     checked against their sha256), in the "stemtone-weights" cache, which this worker
//     leaves alone.
//
// `stemtone build-site` (pycore/cli/site_build.py) replaces the next line with this build's
// {"version": ..., "shell": [URL, ...]}.
self.BUILD = {};

const CACHE = `stemtone-app-${self.BUILD.version}`;
const SHELL = new Set(self.BUILD.shell || []);
const ISOLATION = {
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
  "Cross-Origin-Resource-Policy": "same-origin",
};

self.addEventListener("install", (event) => {
  // every shell file fresh from the server (not the HTTP cache); any failure fails the
  // install, and the previous version stays in charge
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    await cache.addAll([...SHELL].map((url) => new Request(url, { cache: "reload" })));
    await self.skipWaiting();
  })());
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith("stemtone-app-") && name !== CACHE) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

function isolated(response) {
  if (response.status === 0 || response.type === "opaque") return response;
  const headers = new Headers(response.headers);
  for (const [k, v] of Object.entries(ISOLATION)) headers.set(k, v);
  return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
}

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin) return;
  const path = url.pathname.endsWith("/") ? url.pathname + "index.html" : url.pathname;
  event.respondWith((async () => {
    if (SHELL.has(path) && !url.search) {
      const hit = await caches.match(path, { cacheName: CACHE });
      if (hit) return isolated(hit);
    }
    return isolated(await fetch(event.request));
  })());
});
