"""The panel registry: what each panel is.

A panel is a name (the contract in DESIGN.md), a parameter form, a selector call,
the cache namespaces its data depends on and the HTMX events that make it refresh.
How one request runs a panel (parameters, cache keys, lazy data) is in
``dashboard.panel_runs``.

Adding a panel: an entry below whose ``compute`` calls a selector with the cleaned
params, and a ``<name>-body`` partial in ``templates/dashboard/index.html``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.conf import settings

from dashboard import forms
from dashboard.events import ORDER_CANCELLED, ORDER_PAID, PRICES_CHANGED, STOCK_CHANGED
from store import caching
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
from store.services.sales_windows import sales_windows_advance

Params = dict[str, Any]
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
    compute: Callable[[Params], Any]  # params -> selector result (picklable)
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
    # The template flags its rendering shows buttons by (keys of BUTTON_PERMISSIONS):
    # the only user-dependent input of its rendering besides can_inspect.
    buttons: tuple[str, ...] = ()

    def form(self, data: Any = None) -> forms.PanelForm:
        return self.form_class(data, prefix=self.name, interval=self.interval)

    def depends(self, params: Params) -> tuple[str, ...]:
        return self.namespaces(params) if callable(self.namespaces) else self.namespaces

    def data_key(self, params: Params) -> str:
        return f"panel:{DATA_FORMAT}:{self.name}:{encode_params(params)}"


# Template flag -> the permission that shows its buttons.
BUTTON_PERMISSIONS = {
    "can_adjust": "store.adjust_stock",
    "can_requeue": "store.change_outboxevent",
}


def encode_params(params: Params) -> str:
    """The parameters that decide what a panel computes, in one stable string."""
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
# What each panel listens for; the order is the one its hx-trigger spells.
ALL_EVENTS = (STOCK_CHANGED, ORDER_PAID, ORDER_CANCELLED, PRICES_CHANGED)
ORDER_EVENTS = (ORDER_PAID, ORDER_CANCELLED)
STOCK_EVENTS = (STOCK_CHANGED, *ORDER_EVENTS)

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
            events=STOCK_EVENTS,
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
            events=(PRICES_CHANGED,),
            ttl=120,
        ),
        Panel(
            name="rank-window",
            title="Top products per category",
            form_class=forms.RankWindowForm,
            compute=lambda p: rank_window(by=p["by"], function=p["function"], top=p["top"]),
            namespaces=lambda p: ("catalog",) if p["by"] == "price" else ("catalog", "sales"),
            events=(PRICES_CHANGED, *ORDER_EVENTS),
            ttl=120,
            width="wide",
        ),
        Panel(
            name="low-stock",
            title="Low stock",
            form_class=forms.LowStockForm,
            compute=lambda p: low_stock(threshold=p["threshold"]),
            namespaces=("lowstock",),
            events=STOCK_EVENTS,
            ttl=60,
            interval=15,
            width="wide",
            buttons=("can_adjust",),
        ),
        Panel(
            name="trending",
            title="Trending products",
            form_class=forms.TrendingForm,
            compute=lambda p: _trending(p["window"]),
            # Stock is shown too: a manual adjustment refreshes it.
            namespaces=("sales", "catalog", "stock"),
            events=(*ORDER_EVENTS, PRICES_CHANGED, STOCK_CHANGED),
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
            events=ORDER_EVENTS,
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
            events=STOCK_EVENTS,
            ttl=60,
            follows_range="range",
            width="wide",  # a chart squeezed into one track has 6 px labels
        ),
        Panel(
            name="shop-activity",
            title="Shop activity",
            form_class=forms.NoParamsForm,
            compute=lambda p: shop_activity(),
            namespaces=("orders", "catalog"),
            events=ORDER_EVENTS,
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
            buttons=("can_requeue",),
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
            # A read of Redis (under a millisecond): kept 2 s, so what it shows is at most
            # a few seconds old (5 s kept it up to 10 s old under polling).
            ttl=2,
            stale_ttl=5,
            interval=15,
            width="wide",
        ),
    )
}


def get_panel(name: str) -> Panel | None:
    return PANELS.get(name)


RANGE_NAMES = frozenset(name for name, _ in forms.RANGE_CHOICES)
