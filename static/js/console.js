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
  const panel = event.detail.elt && event.detail.elt.closest("[data-panel]");
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
