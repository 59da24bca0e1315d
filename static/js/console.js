// Store Ops Console: the little JavaScript the pages need, hooked on data-* attributes.
// No inline scripts or handlers anywhere (a Content-Security-Policy forbids them).

// --- Page controls and polling (templates/dashboard/index.html) ------------------
// One page-wide timer asks each panel to refresh every data-interval seconds (0: off),
// except while the tab is hidden, the page is paused, a request for it is in flight
// or the user is typing in it. Refreshes morph the panel in place (idiomorph), so
// scroll positions, open <details>, focus and typed text survive them.
const loadedAt = new Map(); // panel name -> time its last good answer arrived
let paused = false;

function panelOf(elt) {
  return elt && elt.closest ? elt.closest("[data-panel]") : null;
}

// A request the panel makes for itself (poll, event, refresh button, repoll), as
// opposed to its options form or an action button inside it.
function isPanelRefresh(elt) {
  const panel = panelOf(elt);
  if (!panel || elt.closest(".action-form, [data-opens-action], .panel-controls")) return null;
  return panel;
}

function typingIn(panel) {
  const active = document.activeElement;
  return !!(active && panel.contains(active) && active.matches("input, select, textarea"));
}

function refreshPanel(panel) {
  if (panel.dataset.state !== "loaded" || panel.classList.contains("htmx-request")) return;
  htmx.trigger(panel, "refresh");
}

setInterval(() => {
  if (paused || document.visibilityState !== "visible" || !window.htmx) return;
  const now = Date.now();
  document.querySelectorAll('[data-panel][data-state="loaded"]').forEach((panel) => {
    const every = Number(panel.dataset.interval || 0);
    if (!every) return;
    const last = loadedAt.get(panel.dataset.panel) || 0;
    if (now - last >= every * 1000) refreshPanel(panel);
  });
}, 1000);

// Pause polling while the tab is hidden; refresh the panels when it comes back.
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && window.htmx && !paused) {
    document.querySelectorAll("[data-refresh-on-visible]").forEach(refreshPanel);
  }
});

// A control with data-submit-on-change submits its form (the form= attribute's too):
// the "Rows per page" select. A listener here, as hx-on would need eval (CSP).
document.addEventListener("change", (event) => {
  const control = event.target.closest && event.target.closest("[data-submit-on-change]");
  if (control && control.form && window.htmx) htmx.trigger(control.form, "submit");
});

// No refresh lands while the user types in a panel: it runs when they leave it.
document.addEventListener("htmx:confirm", (event) => {
  const panel = isPanelRefresh(event.detail.elt);
  if (panel && typingIn(panel)) {
    event.preventDefault();
    panel.dataset.deferred = "true";
  }
});
document.addEventListener("focusout", (event) => {
  const panel = panelOf(event.target);
  if (!panel || panel.dataset.deferred !== "true") return;
  setTimeout(() => {
    if (!typingIn(panel)) {
      delete panel.dataset.deferred;
      refreshPanel(panel);
    }
  }, 0);
});

document.addEventListener("click", (event) => {
  const pause = event.target.closest && event.target.closest("[data-page-pause]");
  if (pause) {
    paused = !paused;
    pause.setAttribute("aria-pressed", String(paused));
    pause.textContent = paused ? "Resume" : "Pause";
    document.body.classList.toggle("polling-paused", paused);
    return;
  }
  if (event.target.closest && event.target.closest("[data-page-refresh]")) {
    document.querySelectorAll('[data-panel][data-state="loaded"]').forEach((panel) => htmx.trigger(panel, "refresh"));
  }
});

// The page controls keep the panels' own parameters of the current URL (a panel's
// options change pushed them there after the page was rendered).
const PAGE_PARAMS = ["range", "start", "end", "refresh"];
document.addEventListener("htmx:configRequest", (event) => {
  if (!event.detail.elt.matches || !event.detail.elt.matches("#page-controls")) return;
  const params = event.detail.parameters;
  new URLSearchParams(window.location.search).forEach((value, key) => {
    if (!PAGE_PARAMS.includes(key)) params[key] = value;
  });
});
document.addEventListener("change", (event) => {
  const form = event.target.closest && event.target.closest("#page-controls");
  if (form && event.target.name === "range") form.dataset.range = event.target.value;
});

// Idiomorph: an open <details> stays open (the server never sends "open"), and the
// focused field keeps what the user typed.
if (window.Idiomorph) {
  Idiomorph.defaults.ignoreActiveValue = true;
  Idiomorph.defaults.callbacks.beforeAttributeUpdated = (name, node) =>
    !(name === "open" && node.tagName === "DETAILS");
}

// --- Staleness: "updated N s ago", failure badges, the summary line -------------
function ago(seconds) {
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  return `${Math.floor(seconds / 3600)} h`;
}

function tickAges() {
  const now = Date.now();
  document.querySelectorAll("[data-computed-at]").forEach((el) => {
    const at = Date.parse(el.dataset.computedAt);
    if (Number.isNaN(at)) return;
    const text = `updated ${ago(Math.max(0, Math.round((now - at) / 1000)))} ago`;
    if (el.textContent !== text) el.textContent = text;
  });
}
setInterval(tickAges, 1000);

function updateSummary() {
  const line = document.querySelector("#status-summary");
  if (!line) return;
  const panels = [...document.querySelectorAll("[data-panel]")];
  const problems = [];
  panels.forEach((panel) => {
    const title = panel.dataset.title || panel.dataset.panel;
    if (panel.dataset.stale === "true") problems.push(`${title}: ${panel.dataset.staleReason || "refresh failed"}`);
  });
  document.querySelectorAll("[data-attention]").forEach((el) => problems.push(el.dataset.attention));
  const loading = panels.some((panel) => panel.dataset.state === "loading");
  if (problems.length) {
    line.dataset.state = "attention";
    line.textContent = `Needs attention: ${problems.join(" · ")}`;
  } else if (loading) {
    line.dataset.state = "checking";
    line.textContent = "Checking…";
  } else {
    line.dataset.state = "ok";
    line.textContent = "All systems OK";
  }
}

// A panel whose refresh fails (server error, network down) keeps its last content,
// dimmed, with a warning badge in its header saying why; shard health cannot vouch
// for any database (or the cache) then, so every badge turns grey "unknown". The next good
// refresh morphs the panel back to what the server sends, which has none of this.
function panelFailed(event) {
  const panel = isPanelRefresh(event.detail.elt);
  if (!panel) return;
  const status = event.detail.xhr && event.detail.xhr.status;
  const reason = status ? `refresh failed: HTTP ${status}` : "refresh failed: no connection";
  panel.dataset.stale = "true";
  panel.dataset.staleReason = reason;
  const slot = panel.querySelector("[data-panel-status]");
  if (slot) {
    slot.replaceChildren();
    const badge = document.createElement("span");
    badge.className = "badge text-bg-warning";
    badge.setAttribute("role", "alert");
    badge.dataset.testid = "stale-badge";
    badge.textContent = `⚠ ${reason}; showing older data`;
    slot.append(badge);
  }
  if (panel.dataset.panel === "shard-health") {
    panel.querySelectorAll("tr[data-alias]").forEach((row) => {
      row.dataset.status = "unknown";
      const badge = row.querySelector(".badge");
      if (badge) {
        badge.className = "badge text-bg-secondary";
        badge.textContent = "unknown";
      }
    });
    const cacheHealth = panel.querySelector('[data-testid="cache-health"]');
    if (cacheHealth) {
      cacheHealth.dataset.status = "unknown";
      const badge = cacheHealth.querySelector(".badge");
      if (badge) {
        badge.className = "badge text-bg-secondary";
        badge.textContent = "unknown";
      }
    }
    const overall = panel.querySelector('[data-testid="overall-status"]');
    if (overall) overall.textContent = "unknown";
  }
  if (panel.dataset.state === "loading") panel.dataset.state = "failed";
  updateSummary();
}
document.addEventListener("htmx:responseError", panelFailed);
document.addEventListener("htmx:sendError", panelFailed);

document.addEventListener("htmx:afterRequest", (event) => {
  const panel = isPanelRefresh(event.detail.elt);
  if (panel && event.detail.successful) loadedAt.set(panel.dataset.panel, Date.now());
});
document.addEventListener("htmx:afterSettle", (event) => {
  tickAges();
  updateSummary();
  // Stale data was served while the server refreshes it: fetch the result in a second.
  // (After a first load the request's element is the placeholder, now gone: find by id.)
  const name = (panelOf(event.detail.elt) || { dataset: {} }).dataset.panel;
  const panel = name && document.getElementById(`panel-${name}`);
  // A first load's htmx:afterRequest fires on the placeholder it swapped out, which
  // no longer reaches the document: count the panel as loaded now, or the timer
  // would poll it again at its next tick.
  if (panel && isPanelRefresh(event.detail.elt)) loadedAt.set(name, Date.now());
  if (panel && panel.querySelector(":scope > [data-repoll]")) {
    setTimeout(() => {
      if (panel.isConnected && panel.querySelector(":scope > [data-repoll]")) refreshPanel(panel);
    }, 1000);
  }
});

// In DEBUG, django-htmx replaces the whole page with the error page of a failed
// request; a panel's failure stays in its panel (above). Capture phase on the
// document runs before django-htmx's listener.
document.addEventListener(
  "htmx:beforeOnLoad",
  (event) => {
    const xhr = event.detail.xhr;
    if (xhr && xhr.status >= 400 && isPanelRefresh(event.detail.elt)) event.stopPropagation();
  },
  true,
);

// The navbar's menu button on narrow screens (Bootstrap's collapse without its JS).
document.addEventListener("click", (event) => {
  const toggle = event.target.closest && event.target.closest("[data-nav-toggle]");
  if (!toggle) return;
  const menu = document.getElementById(toggle.getAttribute("aria-controls"));
  const open = toggle.getAttribute("aria-expanded") !== "true";
  toggle.setAttribute("aria-expanded", String(open));
  menu.classList.toggle("show", open);
});

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
    // Dropped now, not on "close" (a later task): a panel refresh settling in between
    // would find the result again and show its toast twice.
    body.replaceChildren();
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
