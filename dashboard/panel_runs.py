"""One panel's run for one request: its parameters, cache keys and lazy data.

Every panel renders through the ``panel`` partial of ``templates/dashboard/index.html``,
whose ``{% panel_fragment run %}`` block (``dashboard/templatetags/panel_fragments.py``)
is this user's rendered panel, kept in the cache under ``PanelRun.fragment_key`` (panel
name + user id + params + interval) together with the namespace versions it was
rendered under (``PanelRun.versions_key``). ``start`` reads the versions and the kept
fragment in one round trip; the fragment is used only if its versions are current.
The selector runs only when there is none (``run.result`` is lazy), and the block
renders only when no other request has rendered the same data snapshot with the same
parameters and permission flags (``PanelRun.render_shared``). A plain HTMX poll
(``PanelRun.plain``) is answered with the whole panel kept beside the fragment,
without rendering a template at all.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.cache import cache
from django.core.cache.utils import make_template_fragment_key
from django.db import DatabaseError
from django.http import QueryDict
from django.urls import get_script_prefix, reverse
from django.utils.html import format_html

from dashboard import forms
from dashboard.auth_backends import permissions_version
from dashboard.panels import PANELS, RANGE_NAMES, Panel, Params, encode_params
from store import caching, querylog, routing

logger = logging.getLogger("dashboard.panels")

# Every panel renders through its "panel" partial (the cached frame), which includes
# the panel's "<name>-body" partial.
TEMPLATE = "dashboard/index.html"
PANEL_PARTIAL = f"{TEMPLATE}#panel"
# Names the fragment keys (make_template_fragment_key's fragment name).
FRAGMENT_NAME = "panel"
SHARED_NAME = "panel-shared"
# A shared rendering is of one data snapshot, which a stream of writes replaces every
# refresh interval: long enough for every viewer polling every 5 s to be served it.
SHARED_TTL = 30


def panel_path(name: str) -> str:
    return _panel_path(name, get_script_prefix())


@functools.lru_cache(maxsize=64)
def _panel_path(name: str, script_prefix: str) -> str:
    # Every panel request and every dashboard page resolves these; they change only
    # with the script prefix (part of the key).
    return reverse("dashboard-panel", args=[name])


@dataclass
class PanelResult:
    computed: caching.Computed[Any] | None = None
    error: str = ""
    queries: querylog.QueryLog | None = None

    @property
    def value(self) -> Any:
        return self.computed.value if self.computed else None


@dataclass
class PanelRun:
    """One panel for one request: parameters, cache key parts, and lazy data."""

    panel: Panel
    params: Params
    problems: list[str]
    user: AbstractBaseUser | AnonymousUser
    versions: dict[str, int] = field(default_factory=dict)
    # This user's rendered panel from the cache, when it was rendered under ``versions``.
    fragment: str | None = None
    evaluated: bool = False
    # The permission flags the rendering shows by (the view's; template context too).
    shows: dict[str, bool] = field(default_factory=dict)
    # The rendering came from another request's, of the same data and flags.
    shared: bool = False
    # This user's whole panel as a plain poll got it (``plain``), kept with the fragment:
    # the answer before and after its state marker.
    section: tuple[bytes, bytes] | None = None
    # The block this request rendered (a fragment miss), kept by ``finish``.
    rendered: str | None = None

    @property
    def name(self) -> str:
        return self.panel.name

    @property
    def every(self) -> int:
        return int(self.params["every"])

    @property
    def controls(self) -> forms.PanelForm:
        """The parameter form, unbound, showing the values in effect."""
        return self.panel.form_class(
            initial=self.params, prefix=self.name, interval=self.panel.interval
        )

    def query_string_with(self, **changes: Any) -> str:
        """This panel's parameters (some changed), prefixed with its name."""
        # An unset optional value (a time range's dates) stays out of the URL.
        params = {**self.params, **changes}
        return urlencode([(f"{self.name}-{k}", v) for k, v in params.items() if v is not None])

    @property
    def query_string(self) -> str:
        return self.query_string_with()

    def url_with(self, **changes: Any) -> str:
        """The panel's URL with some of its parameters changed (e.g. a sort link)."""
        return f"{panel_path(self.name)}?{self.query_string_with(**changes)}"

    @property
    def url(self) -> str:
        return self.url_with()

    @property
    def trigger(self) -> str:
        # console.js fires "refresh" every ``every`` seconds (data-interval), except
        # while the tab is hidden, the page is paused or the user types in the panel
        # (an htmx filter "[...]" would need eval, which the CSP refuses).
        parts = ["refresh"] + [f"{event} from:body" for event in self.panel.events]
        return ", ".join(parts)

    @property
    def body_template(self) -> str:
        """This panel's content partial, included by the shared "panel" partial."""
        return f"{TEMPLATE}#{self.name}-body"

    @property
    def versions_key(self) -> str:
        key = ",".join(f"{ns}={v}" for ns, v in sorted(self.versions.items()))
        pinned_at = routing.pin_position.get()
        # A fragment rendered before the user's own write is never theirs: while pinned
        # their fragments are stamped with the pin too (store.caching checks the data).
        return f"{key},pin={pinned_at}" if pinned_at else key

    @property
    def fragment_key(self) -> str:
        """Where this user's rendering of the panel (these parameters and interval) is
        kept; the entry also holds the versions it was rendered under."""
        user_id = getattr(self.user, "pk", None)
        vary = f"{self.name}|{user_id}|{encode_params(self.params)}|{self.every}"
        return make_template_fragment_key(FRAGMENT_NAME, [vary])

    @property
    def shared_key(self) -> str | None:
        """Where the rendering of this data snapshot is kept for every request with
        the same parameters, interval and permission flags; None for an error.

        Within the fragment the rendering is a function of exactly these and the data
        (user-dependent buttons follow ``shows``; nothing per user or per render is
        inside), so under a stream of writes each snapshot renders once, not once per
        viewer. The snapshot is named by its compute time."""
        result = self.result
        if result.error or result.computed is None:
            return None
        flags = ",".join(f"{name}={int(on)}" for name, on in sorted(self.shows.items()))
        stamp = result.computed.computed_at.isoformat()
        vary = f"{self.name}|{encode_params(self.params)}|{self.every}|{flags}|{stamp}"
        return make_template_fragment_key(SHARED_NAME, [vary])

    def render_shared(self, render: Callable[[], str]) -> str:
        """The rendering of this run's data snapshot: another request's, else ``render()``."""
        key = self.shared_key
        if key is None:
            return render()
        found = cache.get(key)
        if isinstance(found, str):
            self.shared = True
            return found
        html = render()
        cache.set(key, html, SHARED_TTL)
        return html

    @property
    def state_marker(self) -> str:
        """Where this rendering came from, hidden, for users without the superuser
        footer (the tests read it): in a plain poll's answer, the only part that
        differs between the miss that kept it and the hits that serve it."""
        return format_html(
            '<span hidden data-testid="cache-state" id="cache-state-{}" data-cache="{}"></span>',
            self.name,
            self.cache_state,
        )

    def kept_answer(self) -> bytes | None:
        """The whole answer to a plain poll, from the kept section (None: render)."""
        if self.section is None:
            return None
        before, after = self.section
        return before + self.state_marker.encode() + after

    def plain(self, partial: bool) -> bool:
        """An HTMX poll whose whole answer is a function of the fragment key alone:
        no parameter problem to show (the key holds the parsed parameters, not what
        was sent) and no superuser footer (it shows this request's cache state)."""
        return partial and not self.problems and not self.shows.get("can_inspect")

    def _keep(self, html: str, section: bytes | None) -> None:
        """Keep a rendering for the next request under the same versions, unless it
        shows an error or stale data: those must not stick for a whole TTL (the entry
        left in place holds other versions, so it is not served either). Neither does
        the whole panel then: its frame carries the error or the repoll marker."""
        result = self.result if self.evaluated else None
        if result is not None and (
            result.error or (result.computed is not None and result.computed.stale)
        ):
            return
        before, marker, after = (section or b"").partition(self.state_marker.encode())
        kept = (before, after) if marker and marker not in after else None
        cache.set(self.fragment_key, (self.versions_key, html, kept), self.panel.ttl)

    @cached_property
    def result(self) -> PanelResult:
        """Runs the selector (through the shared data cache): only on a fragment miss."""
        self.evaluated = True
        return load(self.panel, self.params)

    @property
    def cache_state(self) -> str:
        """What the footer says about where this rendering came from."""
        if not self.evaluated:
            return "fragment hit"
        result = self.result
        if result.computed is None:
            return "miss"
        if result.computed.stale:
            return "stale data (refreshing)" if result.computed.refreshing else "stale data (due)"
        if self.shared:
            return "fragment miss, rendering shared"
        return "fragment miss, data hit" if result.computed.hit else "miss"

    @property
    def refreshing(self) -> bool:
        """Stale data was served and a refresh runs: the page asks again in a second,
        so a write reaches every viewer within about two seconds, not a poll later.
        Not when the stale data is younger than the refresh interval (its refresh is
        due then): under a stream of writes every panel would re-ask every second."""
        computed = self.result.computed if self.evaluated else None
        return computed is not None and computed.refreshing

    @property
    def counters(self) -> dict[str, int]:
        return caching.counters(self.name)

    def finish(self, *, section: bytes | None = None) -> None:
        """After rendering: keep what was rendered (``section``: the whole answer of a
        plain poll), count, and keep the queries for the inspector."""
        if self.rendered is not None:
            self._keep(self.rendered, section)
        elif section is not None and self.section is None and self.fragment is not None:
            # A plain poll served from a fragment a page or a bad-parameter request
            # kept: keep its answer too, or every poll renders until the data changes.
            self._keep(self.fragment, section)
        caching.count(self.name, "miss" if self.evaluated else "hit")
        if self.evaluated and self.result.queries is not None:
            querylog.save(self.result.queries)


def load(panel: Panel, params: Params) -> PanelResult:
    """A panel's data: shared by every user (it is user-independent), computed by
    one worker at a time (stale data is served while a background thread refreshes
    it), its SQL tagged and recorded for the inspector."""
    compute = panel.compute

    def run() -> Any:
        if querylog.current_panel() is not None:
            return compute(params)  # in this request: its capture below records the SQL
        # A background refresh: its SQL carries the panel's name too (slow log,
        # pg_stat_activity); no request shows these queries in the inspector.
        with querylog.capture(panel.name):
            return compute(params)

    with querylog.capture(panel.name) as log:
        try:
            computed = caching.get_or_compute(
                panel.data_key(params),
                run,
                panel.ttl,
                panel.stale_ttl,
                namespaces=panel.depends(params),
                counter=f"{panel.name}:data",
            )
        except DatabaseError as exc:
            logger.exception("panel %s failed", panel.name)
            return PanelResult(error=f"The query failed: {exc}", queries=log)
    return PanelResult(computed=computed, queries=log)


@functools.lru_cache(maxsize=512)
def _parse(name: str, query: tuple[tuple[str, tuple[str, ...]], ...]) -> tuple[Params, list[str]]:
    """A panel's parameters from its query string; every poll sends the same few."""
    data = QueryDict(mutable=True)
    for key, values in query:
        data.setlist(key, list(values))
    return PANELS[name].form(data).params()


def start(
    panel: Panel,
    data: Any,
    user: AbstractBaseUser | AnonymousUser,
    *,
    shows: dict[str, bool] | None = None,
) -> PanelRun:
    """Parse the panel's parameters (defaults plus messages on bad input); ``shows``:
    the permission flags the rendering shows buttons by."""
    if isinstance(data, QueryDict):
        query = tuple(sorted((key, tuple(values)) for key, values in data.lists()))
        params, problems = _parse(panel.name, query)
        params, problems = dict(params), list(problems)  # the cached ones stay as they are
    else:
        params, problems = panel.form(data).params()
    run = PanelRun(panel=panel, params=params, problems=problems, user=user, shows=shows or {})
    # The fragment shows buttons by permission: it goes stale with "access" too, at
    # the version the request's own permission check read (when it read one).
    access = permissions_version(user)
    names = panel.depends(params) + (("access",) if access is None else ())
    versions, kept = caching.namespace_versions_and(names, run.fragment_key)
    run.versions = versions if access is None else versions | {"access": access}
    if isinstance(kept, tuple) and len(kept) == 3 and kept[0] == run.versions_key:
        run.fragment, run.section = kept[1], kept[2]
    return run


@dataclass(frozen=True)
class Frame:
    """A placeholder on the dashboard that loads its panel once the page is up."""

    panel: Panel
    url: str


def frames(query: QueryDict, page: Params) -> list[Frame]:
    """Every panel, pointed at with its own parameters from the dashboard URL and
    the page's controls (``page``: PageControlsForm.values()), which win: the
    refresh picker sets every panel's interval, the time range every time-based
    panel's range.

    A panel's own raw values pass through unparsed: the panel request validates
    them and shows a message if they are bad.
    """
    found = []
    seconds = forms.REFRESH_CHOICES.get(page.get("refresh") or "")
    for panel in PANELS.values():
        prefix = f"{panel.name}-"
        mine = dict((k, v) for k, v in query.items() if k.startswith(prefix))
        if seconds is not None:
            mine[f"{prefix}every"] = str(seconds)
        if panel.follows_range == "window":
            window = page["range"] if page["range"] in RANGE_NAMES else "30d"
            mine[f"{prefix}window"] = window
        elif panel.follows_range:
            mine[f"{prefix}range"] = page["range"]
            for bound in ("start", "end"):
                mine.pop(f"{prefix}{bound}", None)
                if page["range"] == "custom":
                    mine[f"{prefix}{bound}"] = page[bound].isoformat()
        url = panel_path(panel.name)
        found.append(Frame(panel=panel, url=f"{url}?{urlencode(mine)}" if mine else url))
    return found
