// Stemtone's service worker. JavaScript because a service worker can be nothing else.
// Two jobs:
//  1. Cross-origin isolation on any static server: PyScript workers need
//     SharedArrayBuffer, which needs the COOP/COEP headers; this worker adds them to every
//     same-origin response it hands the pages (the technique of the coi-serviceworker npm
//     package, in the few lines it takes here, because the same worker also has to cache
//     the app and a scope has only one service worker).
//  2. Offline use: on install it caches the whole app shell (pages, Pyodide, PyScript,
//     pycore + kernels, the model lists) under this build's version, and serves it from
//     there. A new build is a new version: its worker caches the new shell completely,
//     each file checked against this build's sha256 (a server caught halfway through an
//     upload fails the install, and the old version stays), before it takes over; only
//     then are older versions deleted. A page never runs files of two builds: site/boot.js
//     checks for a new version before it starts Python and reloads onto it.
//     The weights are cached by the pages themselves on first use (site/worker_kit.py,
//     checked against their sha256), in the "stemtone-weights" cache, which this worker
//     leaves alone.
//
// `stemtone build-site` (pycore/cli/site_build.py) replaces the next line with this build's
// {"version": ..., "shell": {URL relative to this file: sha256}}.
self.BUILD = {};

const CACHE = `stemtone-app-${self.BUILD.version}`;
const SHELL = self.BUILD.shell || {};
const BASE = new URL("./", self.location).href;  // the site's root: it may live in a subfolder
const ISOLATION = {
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
  "Cross-Origin-Resource-Policy": "same-origin",
};

async function sha256(response) {
  const digest = await crypto.subtle.digest("SHA-256", await response.clone().arrayBuffer());
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

self.addEventListener("install", (event) => {
  // every shell file fresh from the server (not the HTTP cache) and as this build made it;
  // any failure fails the install, and the previous version stays in charge
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    try {
      await Promise.all(Object.entries(SHELL).map(async ([rel, digest]) => {
        const response = await fetch(new Request(BASE + rel, { cache: "reload" }));
        if (!response.ok) throw new Error(`${rel}: HTTP ${response.status}`);
        if (await sha256(response) !== digest) throw new Error(`${rel} is not the file of build ${self.BUILD.version}`);
        await cache.put(BASE + rel, response);
      }));
    } catch (e) {
      await caches.delete(CACHE);
      throw e;
    }
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

// the response with the isolation headers; build: the version whose cache it comes from,
// sent as X-Stemtone-Build (which build served a file: the browser's network panel, the tests)
function isolated(response, build = null) {
  if (response.status === 0 || response.type === "opaque") return response;
  const headers = new Headers(response.headers);
  for (const [k, v] of Object.entries(ISOLATION)) headers.set(k, v);
  if (build) headers.set("X-Stemtone-Build", build);
  return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
}

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin) return;
  event.respondWith((async () => {
    const page = url.origin + url.pathname;
    const rel = page.startsWith(BASE) ? page.slice(BASE.length).replace(/(^|\/)$/, "$1index.html") : null;
    if (rel !== null && Object.hasOwn(SHELL, rel) && !url.search) {
      const hit = await caches.match(BASE + rel, { cacheName: CACHE });
      if (hit) return isolated(hit, self.BUILD.version);
    }
    return isolated(await fetch(event.request));
  })());
});
