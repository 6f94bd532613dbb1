// What a Stemtone page shows before Python runs: the runtime's loading progress, and the
// failures that Python cannot report because it never started. This is JavaScript only
// because nothing else runs that early; once Python starts, the page's Python takes over.
//
// Include it as a plain script before the page's PyScript tags, saying where to write:
//   <script src="boot.js" data-badge="status-badge" data-text="status-text"
//           data-outcome="status" data-failed="fail" data-fail-label="Fail"></script>
//   data-badge, data-text  ids of the status badge and of the line of text beside it
//   data-outcome           the body data attribute through which the page reports how it
//                          ended ("status": body[data-status]); once it is set, a later
//                          failure here changes nothing
//   data-failed            the value written there when Python cannot start
//   data-fail-label        the badge's text then
// A failure here also sets body[data-error] to "not-isolated" or "startup".
//
// It also starts the app: it registers the service worker (site/sw.js: cross-origin
// isolation on any static server, the app cached for offline use), reloads the page once
// when that worker is needed for isolation, asks the server whether a new build is out
// (if so, waits until its worker has cached it and reloads onto it, before any Python
// has run: a page never runs files of two builds), then loads PyScript (which runs the
// page's <script type="py"> tags), and writes the build the page runs into #app-version
// and body[data-version].
(() => {
  const opts = document.currentScript.dataset;
  const body = document.body.dataset;
  const badge = document.getElementById(opts.badge);
  const text = document.getElementById(opts.text);
  const loading = badge.textContent;  // the badge's first label, until Python or fail() changes it
  const fail = (message, error) => {
    if (body[opts.outcome]) return;
    badge.className = "badge fail";
    badge.textContent = opts.failLabel;
    text.textContent = message;
    body.error = error;
    body[opts.outcome] = opts.failed;
  };
  fetch("build.json").then((r) => r.json()).then(({ version }) => {
    body.version = version;
    const shown = document.getElementById("app-version");
    if (shown) shown.textContent = `version ${version}`;
  }).catch(() => {});
  const worker = "serviceWorker" in navigator ? navigator.serviceWorker.register("sw.js") : null;
  // PyScript workers reach the page's DOM through SharedArrayBuffer, which needs the
  // cross-origin isolation headers: `stemtone serve` sends them, and on any other server
  // the service worker adds them, once it controls the page (so reload once).
  if (!window.crossOriginIsolated) {
    if (worker && !sessionStorage.getItem("stemtone-isolating")) {
      sessionStorage.setItem("stemtone-isolating", "1");
      text.textContent = "Installing the app for offline use…";
      worker.then(() => navigator.serviceWorker.ready).then(() => location.reload(),
        (e) => fail(`The service worker could not be installed: ${e.message || e}`, "not-isolated"));
      return;
    }
    sessionStorage.removeItem("stemtone-isolating");
    fail("This page is not cross-origin isolated: this browser has no service workers here; serve it with "
         + "`stemtone serve` (or any server that sends the COOP/COEP headers).", "not-isolated");
    return;
  }
  sessionStorage.removeItem("stemtone-isolating");
  // A new build on the server: its service worker installs (the whole new app, checked),
  // takes over, and this page reloads onto it. Offline, or when its install fails, the
  // page runs the build it has.
  const latest = async (registration) => {
    try {
      await registration.update();
    } catch {
      return;  // offline, or the server is unreachable
    }
    const next = registration.installing || registration.waiting;
    if (!next) return;
    text.textContent = "Installing the new version…";
    await new Promise((resolve) => {
      navigator.serviceWorker.addEventListener("controllerchange", () => location.reload(), { once: true });
      next.addEventListener("statechange", () => next.state === "redundant" && resolve());
    });
  };
  const checked = worker ? worker.then(latest, (e) => console.warn(`stemtone: no offline use (${e.message || e})`))
    : Promise.resolve();
  addEventListener("py:progress", ({ detail }) => {
    if (badge.textContent === loading) text.textContent = `${detail}…`;
  });
  const crashed = (reason) => fail(`The Python runtime failed to start: ${reason}`, "startup");
  addEventListener("error", (e) => crashed(e.message || e.error));
  addEventListener("unhandledrejection", (e) => crashed(e.reason?.message || e.reason));
  checked.then(() => import("./vendor/pyscript/core.js"));
})();
