"""The panel registry, and one panel's run for one request.

A panel is a name (the contract in DESIGN.md), a parameter form, a selector call,
the cache namespaces its data depends on and the HTMX events that make it refresh.
Every panel renders through the ``panel`` partial of ``templates/dashboard/index.html``:
a ``{% cache %}`` fragment keyed by panel name + user id + namespace versions +
params (``PanelRun.fragment_key`` builds the same key) around the panel's own
``<name>-body`` partial. The selector runs only when that fragment is missing
(``run.result`` is lazy).

Adding a panel: an entry below whose ``compute`` calls a selector with the cleaned
params, and a ``<name>-body`` partial in index.html. Without ``compute`` the panel
says "not available yet".
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.cache import cache
from django.core.cache.utils import make_template_fragment_key
from django.db import DatabaseError
from django.http import QueryDict
from django.urls import reverse

from dashboard import forms
from store import caching, querylog, routing
from store.samples import sample_record
from store.selectors.ops import ops_series
from store.selectors.outbox import OutboxStats, outbox_stats
from store.selectors.overview import headline_figures
from store.selectors.rankings import rank_window
from store.selectors.series import sales_series, stock_series, time_range
from store.selectors.shard_health import shard_health_overview
from store.selectors.shops import shop_activity
from store.selectors.stats import CATEGORY_STATS_COLUMNS, category_groups, category_stats
from store.selectors.stock import low_stock
from store.selectors.trending import Trending, trending, trending_stock
from store.services.rollups import sales_windows_advance

logger = logging.getLogger("dashboard.panels")

Params = dict[str, Any]
# Every panel renders through its "panel" partial (the cached frame), which includes
# the panel's "<name>-body" partial.
TEMPLATE = "dashboard/index.html"
PANEL_PARTIAL = f"{TEMPLATE}#panel"
# Part of every data key: raise it when a selector's result changes shape, so a
# deploy never unpickles (or serves stale) an entry written by the old code.
DATA_FORMAT = 3  # 2: trending products carry their stock; 3: rollups, net revenue
# Parameters that change how a panel is shown, not what it computes.
PRESENTATION_PARAMS = frozenset({"every"})


@dataclass(frozen=True)
class Panel:
    name: str
    title: str
    form_class: type[forms.PanelForm]
    # params -> selector result (picklable); None: the panel's issue has not landed.
    compute: Callable[[Params], Any] | None
    # The cache namespaces its data depends on; a callable when that depends on the
    # parameters (a price ranking does not change when an order is paid).
    namespaces: tuple[str, ...] | Callable[[Params], tuple[str, ...]] = ()
    events: tuple[str, ...] = ()
    ttl: int = 60  # seconds data and fragments stay fresh
    stale_ttl: int = 300  # seconds stale data may still be served during a recompute
    interval: int = 30  # default auto-refresh, seconds
    columns: tuple[tuple[str, str], ...] = ()  # sortable (column, header) pairs
    # The parameter that follows the page's time range ("" for none).
    follows_range: str = ""
    # "wide": two grid tracks; "full": the whole row (tables with many columns).
    width: str = ""

    def form(self, data: Any = None) -> forms.PanelForm:
        return self.form_class(data, prefix=self.name, interval=self.interval)

    def depends(self, params: Params) -> tuple[str, ...]:
        return self.namespaces(params) if callable(self.namespaces) else self.namespaces

    def data_key(self, params: Params) -> str:
        return f"panel:{DATA_FORMAT}:{self.name}:{_encode(params)}"


def _encode(params: Params) -> str:
    return urlencode(sorted((k, v) for k, v in params.items() if k not in PRESENTATION_PARAMS))


def _trending(window: str) -> Trending:
    """The window's top sellers, cached on sales alone, with their stock read now:
    a stock move costs one primary-key query, not the window's aggregate."""

    def compute() -> Trending:
        # Housekeeping write: once an hour the rolling windows drop the hour that
        # left them (one read when they are current), so the top sellers stay an
        # index read.
        sales_windows_advance()
        return trending(window=window)

    sales = caching.get_or_compute(
        f"panel:{DATA_FORMAT}:trending-sales:{window}",
        compute,
        ttl=60,
        stale_ttl=300,
        namespaces=("sales", "catalog"),
        counter="trending:sales",
    )
    return trending_stock(sales.value) if sales.hit else sales.value


def _outbox() -> OutboxStats:
    stats = outbox_stats()
    # The last-hour backlog chart (ops-series) samples what this panel just read.
    sample_record("outbox", {"backlog": stats.backlog})
    return stats


def _span(p: Params) -> Any:
    return time_range(name=p["range"], first=p["start"], last=p["end"])


CATEGORY_STATS_HEADERS = (
    "Category",
    "Products",
    "Avg price",
    "Min",
    "Max",
    "Stock",
    "Low",
    "Revenue",
)
ALL_EVENTS = ("stock-changed", "order-paid", "order-cancelled", "prices-changed")

PANELS: dict[str, Panel] = {
    panel.name: panel
    for panel in (
        Panel(
            name="headline",
            title="Headline figures",
            form_class=forms.NoParamsForm,
            compute=lambda p: headline_figures(
                low_stock_threshold=settings.STOREOPS_LOW_STOCK_THRESHOLD
            ),
            namespaces=("stock", "lowstock", "orders", "sales", "catalog"),
            events=("stock-changed", "order-paid", "order-cancelled"),
            ttl=30,
            width="full",
        ),
        Panel(
            name="category-stats",
            title="Category statistics",
            form_class=forms.CategoryStatsForm,
            compute=lambda p: category_stats(
                low_stock_threshold=settings.STOREOPS_LOW_STOCK_THRESHOLD, sort=p["sort"]
            ),
            namespaces=("catalog", "stock", "sales"),
            events=ALL_EVENTS,
            ttl=120,
            columns=tuple(zip(CATEGORY_STATS_COLUMNS, CATEGORY_STATS_HEADERS, strict=True)),
            width="wide",
        ),
        Panel(
            name="category-groups",
            title="Shop and category groups",
            form_class=forms.CategoryGroupsForm,
            compute=lambda p: category_groups(min_avg_price=p["min_avg_price"]),
            namespaces=("catalog",),
            events=("prices-changed",),
            ttl=120,
        ),
        Panel(
            name="rank-window",
            title="Top products per category",
            form_class=forms.RankWindowForm,
            compute=lambda p: rank_window(by=p["by"], function=p["function"], top=p["top"]),
            namespaces=lambda p: ("catalog",) if p["by"] == "price" else ("catalog", "sales"),
            events=("prices-changed", "order-paid", "order-cancelled"),
            ttl=120,
            width="wide",
        ),
        Panel(
            name="low-stock",
            title="Low stock",
            form_class=forms.LowStockForm,
            compute=lambda p: low_stock(threshold=p["threshold"]),
            namespaces=("lowstock",),
            events=("stock-changed", "order-paid", "order-cancelled"),
            ttl=60,
            interval=15,
            width="wide",
        ),
        Panel(
            name="trending",
            title="Trending products",
            form_class=forms.TrendingForm,
            compute=lambda p: _trending(p["window"]),
            # Stock is shown too: a manual adjustment refreshes it.
            namespaces=("sales", "catalog", "stock"),
            events=("order-paid", "order-cancelled", "prices-changed", "stock-changed"),
            ttl=60,
            follows_range="window",
            width="wide",
        ),
        Panel(
            name="sales-series",
            title="Orders and net revenue",
            form_class=forms.SalesSeriesForm,
            compute=lambda p: sales_series(span=_span(p), shop_id=p["shop"] or None),
            namespaces=("sales", "orders", "catalog"),
            events=("order-paid", "order-cancelled"),
            ttl=60,
            follows_range="range",
            width="wide",
        ),
        Panel(
            name="stock-series",
            title="Stock movements",
            form_class=forms.RangeForm,
            compute=lambda p: stock_series(span=_span(p)),
            namespaces=("stock",),
            events=("stock-changed", "order-paid", "order-cancelled"),
            ttl=60,
            follows_range="range",
        ),
        Panel(
            name="shop-activity",
            title="Shop activity",
            form_class=forms.NoParamsForm,
            compute=lambda p: shop_activity(),
            namespaces=("orders", "catalog"),
            events=("order-paid", "order-cancelled"),
            ttl=60,
        ),
        Panel(
            name="outbox",
            title="Outbox",
            form_class=forms.NoParamsForm,
            compute=lambda p: _outbox(),
            namespaces=("outbox",),
            events=ALL_EVENTS,
            ttl=10,
            interval=10,
        ),
        Panel(
            name="shard-health",
            title="Shard health",
            form_class=forms.NoParamsForm,
            # Probes are cached by store.health for STOREOPS_HEALTH_CACHE_SECONDS (1 s);
            # with this 1 s an outage shows on any render 2 s after it started. Stale
            # health is worse than none, so the panel keeps no stale copy.
            compute=lambda p: shard_health_overview(),
            namespaces=(),
            events=(),
            ttl=1,
            stale_ttl=1,
            interval=5,
            width="full",
        ),
        Panel(
            name="ops-series",
            title="Outbox backlog and databases, last hour",
            form_class=forms.NoParamsForm,
            # No query: the samples the outbox and shard-health panels record.
            compute=lambda p: ops_series(),
            namespaces=(),
            events=(),
            ttl=5,
            stale_ttl=5,
            interval=15,
            width="wide",
        ),
    )
}


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
    evaluated: bool = False

    @property
    def name(self) -> str:
        return self.panel.name

    @property
    def available(self) -> bool:
        return self.panel.compute is not None

    @property
    def every(self) -> int:
        return int(self.params["every"])

    @property
    def controls(self) -> forms.PanelForm:
        """The parameter form, unbound, showing the values in effect."""
        return self.panel.form_class(
            initial=self.params, prefix=self.name, interval=self.panel.interval
        )

    @property
    def query_items(self) -> list[tuple[str, Any]]:
        # An unset optional value (a time range's dates) stays out of the URL.
        return [(f"{self.name}-{k}", v) for k, v in self.params.items() if v is not None]

    @property
    def query_string(self) -> str:
        return urlencode(self.query_items)

    @property
    def url(self) -> str:
        return f"{reverse('dashboard-panel', args=[self.name])}?{self.query_string}"

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

    # The {% cache %} vary-on list: run.name, user.pk, these two, every (see fragment_key).
    @property
    def versions_key(self) -> str:
        key = ",".join(f"{ns}={v}" for ns, v in sorted(self.versions.items()))
        pinned_at = routing.pin_position.get()
        # A fragment rendered before the user's own write is never theirs: while pinned
        # their fragments are keyed on the pin too (store.caching checks the data).
        return f"{key},pin={pinned_at}" if pinned_at else key

    @property
    def params_key(self) -> str:
        return _encode(self.params)

    @property
    def fragment_key(self) -> str:
        user_id = getattr(self.user, "pk", None)
        vary_on = [self.name, user_id, self.versions_key, self.params_key, self.every]
        return make_template_fragment_key("panel", vary_on)

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
            return "stale data (refreshing)"
        return "fragment miss, data hit" if result.computed.hit else "miss"

    @property
    def refreshing(self) -> bool:
        """Stale data was served and a refresh runs: the page asks again in a second,
        so a write reaches every viewer within about two seconds, not a poll later."""
        return self.evaluated and self.result.computed is not None and self.result.computed.stale

    @property
    def counters(self) -> dict[str, int]:
        return caching.counters(self.name)

    def finish(self) -> None:
        """After rendering: count, keep the queries for the inspector, and drop a
        fragment that holds an error so the next request tries again."""
        if not self.available:
            return
        caching.count(self.name, "miss" if self.evaluated else "hit")
        if not self.evaluated:
            return
        result = self.result
        if result.queries is not None:
            querylog.save(result.queries)
        # An error or stale data must not stick for a whole TTL: drop that fragment.
        if result.error or (result.computed is not None and result.computed.stale):
            cache.delete(self.fragment_key)


def load(panel: Panel, params: Params) -> PanelResult:
    """A panel's data: shared by every user (it is user-independent), computed by
    one worker at a time (stale data is served while a background thread refreshes
    it), its SQL tagged and recorded for the inspector."""
    compute = panel.compute
    if compute is None:
        return PanelResult()

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


def get_panel(name: str) -> Panel | None:
    return PANELS.get(name)


@functools.lru_cache(maxsize=512)
def _parse(name: str, query: tuple[tuple[str, tuple[str, ...]], ...]) -> tuple[Params, list[str]]:
    """A panel's parameters from its query string; every poll sends the same few."""
    data = QueryDict(mutable=True)
    for key, values in query:
        data.setlist(key, list(values))
    return PANELS[name].form(data).params()


def start(panel: Panel, data: Any, user: AbstractBaseUser | AnonymousUser) -> PanelRun:
    """Parse the panel's parameters (defaults plus messages on bad input)."""
    if isinstance(data, QueryDict):
        query = tuple(sorted((key, tuple(values)) for key, values in data.lists()))
        params, problems = _parse(panel.name, query)
        params, problems = dict(params), list(problems)  # the cached ones stay as they are
    else:
        params, problems = panel.form(data).params()
    # The fragment shows buttons by permission: it goes stale with "access" too.
    versions = caching.namespace_versions(*panel.depends(params), "access")
    return PanelRun(panel=panel, params=params, problems=problems, user=user, versions=versions)


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
        url = reverse("dashboard-panel", args=[panel.name])
        found.append(Frame(panel=panel, url=f"{url}?{urlencode(mine)}" if mine else url))
    return found


RANGE_NAMES = frozenset(name for name, _ in forms.RANGE_CHOICES)
