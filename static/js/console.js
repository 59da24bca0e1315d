// Store Ops Console: the little JavaScript the pages need, hooked on data-* attributes.
// Pause polling panels while the tab is hidden; refresh them when it comes back.
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && window.htmx) {
    document.querySelectorAll("[data-refresh-on-visible]").forEach((el) => htmx.trigger(el, "refresh"));
  }
});

// A panel whose request fails (server error, network down) keeps its last content
// and says so; the next successful refresh replaces the whole panel, box included.
function panelFailed(event) {
  const elt = event.detail.elt;
  // An action button inside a panel reports its own failure (actionFailed below).
  if (elt && elt.closest && elt.closest(".action-form, [data-opens-action]")) return;
  const panel = elt && elt.closest && elt.closest("[data-panel]");
  if (!panel || panel.querySelector(":scope > .panel-request-error")) return;
  const box = document.createElement("div");
  box.className = "alert alert-danger py-1 small panel-request-error";
  box.setAttribute("role", "alert");
  const status = event.detail.xhr && event.detail.xhr.status;
  box.textContent = status
    ? `Refresh failed (HTTP ${status}); showing the last data. Retrying on the next refresh.`
    : "Refresh failed (no connection); showing the last data. Retrying on the next refresh.";
  panel.appendChild(box);
}
document.addEventListener("htmx:responseError", panelFailed);
document.addEventListener("htmx:sendError", panelFailed);

// An action form whose request gets no usable answer (a 5xx, or no connection)
// is left as typed, idempotency key included, and says so inside the form: the
// retry sends the same key, so the server applies the action at most once.
// Refusals (403/409/422) are not handled here: htmx swaps their form-sized
// answers in (responseHandling in base.html).
function actionFailed(event) {
  const elt = event.detail.elt;
  const box = elt && elt.closest && elt.closest(".action-form");
  if (!box) return false;
  const form = box.querySelector("form") || box;
  let note = form.querySelector(":scope > [data-request-error]");
  if (!note) {
    note = document.createElement("div");
    note.className = "alert alert-danger py-1 px-2 small mb-2";
    note.setAttribute("role", "alert");
    note.dataset.requestError = "";
    form.prepend(note);
  }
  const status = event.detail.xhr && event.detail.xhr.status;
  note.textContent = status
    ? `The server could not complete this (HTTP ${status}). What you typed is kept: submit again to retry; it is applied at most once.`
    : "No answer from the server (the connection failed). What you typed is kept: submit again to retry; it is applied at most once.";
  return true;
}
document.addEventListener("htmx:responseError", actionFailed);
document.addEventListener("htmx:sendError", actionFailed);
