// Store Ops Console: the little JavaScript the pages need, hooked on data-* attributes.
// Pause polling panels while the tab is hidden; refresh them when it comes back.
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && window.htmx) {
    document.querySelectorAll("[data-refresh-on-visible]").forEach((el) => htmx.trigger(el, "refresh"));
  }
});

// A poll (no triggering event) of a panel while the tab is hidden is cancelled here:
// htmx's trigger filter "[...]" would need eval, which the Content-Security-Policy refuses.
document.addEventListener("htmx:confirm", (event) => {
  const elt = event.detail.elt;
  if (!event.detail.triggeringEvent && document.visibilityState !== "visible" &&
      elt && elt.matches && elt.matches("[data-refresh-on-visible]")) {
    event.preventDefault();
  }
});

// A control with data-submit-on-change submits its form (the form= attribute's too):
// the "Rows per page" select. A listener here, as hx-on would need eval.
document.addEventListener("change", (event) => {
  const control = event.target.closest && event.target.closest("[data-submit-on-change]");
  if (control && control.form && window.htmx) htmx.trigger(control.form, "submit");
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
  if (!box) {
    // A button that opens a form: the form never came.
    if (elt && elt.closest && elt.closest("[data-opens-action]")) {
      const status = event.detail.xhr && event.detail.xhr.status;
      showToast(status ? `Could not open the form (HTTP ${status}).` : "Could not open the form: no answer from the server.", "danger");
    }
    return false;
  }
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

// --- The action dialog (templates/dashboard/includes/action_dialog.html) ---------
// A button with hx-target="#action-dialog-body" loads a fresh form there; once it has
// landed the dialog opens over the page, where the click was, with focus on the first
// field. Esc, Cancel or the close button shut it and drop the form (and its key). A
// result (data-action="...-result") closes it and stays on screen as a toast; the
// response's HX-Trigger event has already asked the panels and tables to refresh.
const FIELDS = "input:not([type=hidden]):not([disabled]), select:not([disabled]), textarea:not([disabled])";

function showToast(text, kind) {
  const box = document.querySelector("[data-toasts]");
  if (!box || !text) return;
  const toast = document.createElement("div");
  toast.className = `toast show align-items-center border-0 text-bg-${kind}`;
  toast.setAttribute("role", "status");
  const row = document.createElement("div");
  row.className = "d-flex";
  const body = document.createElement("div");
  body.className = "toast-body";
  body.textContent = text;
  const close = document.createElement("button");
  close.type = "button";
  close.className = "btn-close btn-close-white me-2 m-auto";
  close.setAttribute("aria-label", "Dismiss");
  close.addEventListener("click", () => toast.remove());
  row.append(body, close);
  toast.append(row);
  box.append(toast);
  setTimeout(() => toast.remove(), 10000);
}

// The rows an action changed, highlighted for a moment as the refreshes land.
let changed = null;
function highlightChanged() {
  if (!changed) return;
  if (Date.now() > changed.until) {
    changed = null;
    return;
  }
  document.querySelectorAll(changed.selector).forEach((row) => row.classList.add("row-changed"));
}
document.addEventListener("htmx:afterSettle", highlightChanged);

function settleActionDialog() {
  const dialog = document.querySelector("[data-action-dialog]");
  if (!dialog) return;
  const body = dialog.querySelector("#action-dialog-body");
  const result = body.querySelector('.action-form[data-action$="-result"]');
  if (result) {
    const message = result.querySelector('[role="status"]');
    showToast(message && message.textContent.trim(), "success");
    if (result.dataset.changed) changed = { selector: result.dataset.changed, until: Date.now() + 4000 };
    dialog.close();
    return;
  }
  const box = body.querySelector(".action-form");
  if (!box) return;
  const opening = !dialog.open;
  if (opening) {
    const title = dialog.querySelector("#action-dialog-title");
    title.textContent = box.dataset.title || "Action";
    dialog.showModal(); // focuses the close button: the first field is more useful
  }
  // Opening, or a refusal swapped in (the submit button that had focus is gone):
  // focus the first field in error, else the first field.
  if (opening || !dialog.contains(document.activeElement) || document.activeElement === dialog) {
    const invalid = box.querySelector('[role="alert"]') && box.querySelector(".invalid-feedback");
    const field = (invalid && invalid.parentElement.querySelector(FIELDS)) || box.querySelector(FIELDS);
    (field || dialog.querySelector("[data-dialog-close]")).focus();
  }
}
document.addEventListener("htmx:afterSettle", settleActionDialog);

document.addEventListener("click", (event) => {
  const closer = event.target.closest && event.target.closest("[data-dialog-close]");
  const dialog = closer && closer.closest("dialog[open]");
  if (!dialog) return; // outside a dialog, Cancel is a plain link back to the list
  event.preventDefault();
  dialog.close();
});

// However it closes (Esc included), drop the form: the next opening fetches a fresh one.
document.addEventListener(
  "close",
  (event) => {
    if (event.target.matches && event.target.matches("[data-action-dialog]")) {
      event.target.querySelector("#action-dialog-body").replaceChildren();
    }
  },
  true,
);
