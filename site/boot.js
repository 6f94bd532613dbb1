// What a Stemtone page shows before Python runs: the runtime's loading progress, and the
// failures that Python cannot report because it never started. This is JavaScript only
// because nothing else runs that early; once Python starts, the page's Python takes over.
//
// Include it as a plain script before the page's PyScript tags, saying where to write:
//   <script src="/boot.js" data-badge="status-badge" data-text="status-text"
//           data-outcome="status" data-failed="fail" data-fail-label="Fail"></script>
//   data-badge, data-text  ids of the status badge and of the line of text beside it
//   data-outcome           the body data attribute through which the page reports how it
//                          ended ("status": body[data-status]); once it is set, a later
//                          failure here changes nothing
//   data-failed            the value written there when Python cannot start
//   data-fail-label        the badge's text then
// A failure here also sets body[data-error] to "not-isolated" or "startup".
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
  // PyScript workers reach the page's DOM through SharedArrayBuffer, which needs the
  // cross-origin isolation headers that `stemtone serve` sends.
  if (!window.crossOriginIsolated) {
    fail("This page is not cross-origin isolated: serve it with `stemtone serve` (or `make demo`).",
         "not-isolated");
    return;
  }
  addEventListener("py:progress", ({ detail }) => {
    if (badge.textContent === loading) text.textContent = `${detail}…`;
  });
  const crashed = (reason) => fail(`The Python runtime failed to start: ${reason}`, "startup");
  addEventListener("error", (e) => crashed(e.message || e.error));
  addEventListener("unhandledrejection", (e) => crashed(e.reason?.message || e.reason));
})();
