"""The products, orders and stock-ledger tables: filter, sort, page, export.

Each view parses its query string with forms (bad values become a notice and a
default, never an error page), builds the table over a selector's queryset and
renders either the whole page or, for HTMX, only the ``table`` partial.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import django_tables2 as tables
from django.core.paginator import EmptyPage
from django.db.models import QuerySet
from django.http import HttpResponseBase
from django.views.decorators.http import require_GET
from django_filters import FilterSet

from dashboard import events
from dashboard.access import permission_required
from dashboard.exports import ExportTooLarge, export_response
from dashboard.filters import (
    EXPORT_FORMATS,
    PER_PAGE_CHOICES,
    LedgerFilter,
    OrderFilter,
    ProductFilter,
    TableQueryForm,
)
from dashboard.http import HtmxHttpRequest, private_htmx, render_partial_or_page
from dashboard.paginators import EstimatingPaginator
from dashboard.tables import TABLE_TEMPLATE, LedgerTable, OrderTable, ProductTable, RowActions
from store.selectors.catalog import order_table_rows, product_table_rows, stock_ledger_rows

# Far past any real page; beyond it an OFFSET is pointless (and may overflow).
MAX_PAGE = 10_000_000


@dataclass(frozen=True)
class TablePage:
    name: str
    title: str
    table_class: type[tables.Table]
    filterset_class: type[FilterSet]
    rows: Callable[[], QuerySet[Any]]
    default_sort: tuple[str, ...]


PAGE_TEMPLATE = "dashboard/table_page.html"
PRODUCTS = TablePage(
    "products",
    "Products",
    ProductTable,
    ProductFilter,
    product_table_rows,
    ("id",),
)
ORDERS = TablePage(
    "orders",
    "Orders",
    OrderTable,
    OrderFilter,
    order_table_rows,
    ("-created", "-id"),
)
LEDGER = TablePage(
    "ledger",
    "Stock ledger",
    LedgerTable,
    LedgerFilter,
    stock_ledger_rows,
    ("-created",),
)


def _paginate(table: tables.Table, *, page: int, per_page: int, notices: list[str]) -> None:
    """Page ``page`` of the table, or the last page when that is past the end."""
    source = table.data.data
    try:
        table.paginate(EstimatingPaginator, per_page=per_page, page=page, source=source)
    except EmptyPage:
        # Only on a bad page number: a full count is fine on this rare path.
        last = max(1, math.ceil(source.count() / per_page))
        notices.append(f"Page {page} is past the end; showing the last page ({last}).")
        table.paginate(EstimatingPaginator, per_page=per_page, page=last, source=source)


def _without_export(request: HtmxHttpRequest) -> str:
    query = request.GET.copy()
    query.pop("_export", None)
    return f"{request.path}?{query.urlencode()}" if query else request.path


def _table_response(
    request: HtmxHttpRequest,
    spec: TablePage,
    *,
    actions: RowActions | None = None,
    can_change_prices: bool = False,
) -> HttpResponseBase:
    notices: list[str] = []
    params = TableQueryForm(request.GET, sortable=spec.table_class.sortable())
    params.is_valid()  # keeps the valid fields in cleaned_data
    for field in params.errors:
        if field == "_export":
            continue
        label = {"sort": "sort column", "page": "page", "per_page": "page size"}[field]
        notices.append(f"Ignored an invalid {label} ({request.GET.get(field, '')[:40]!r}).")
    sort = params.cleaned_data.get("sort") or ",".join(spec.default_sort)
    page = min(params.cleaned_data.get("page") or 1, MAX_PAGE)
    per_page = params.cleaned_data.get("per_page") or 25

    filterset = spec.filterset_class(request.GET or None, queryset=spec.rows())
    queryset = filterset.qs
    if filterset.is_bound and filterset.errors:
        notices.append(f"Ignored invalid filters: {filterset.invalid_summary()}.")

    table = spec.table_class(queryset, order_by=sort, actions=actions)
    table.template_name = TABLE_TEMPLATE

    status = 200
    if "_export" in request.GET:
        fmt = params.cleaned_data.get("_export")
        if not fmt:
            asked = request.GET["_export"][:20]
            notices.append(f"Unknown export format {asked!r}: choose csv, json or xlsx.")
            status = 400
        elif filterset.errors:
            notices.append("Fix the filters before exporting.")
            status = 400
        else:
            try:
                return export_response(
                    table=table,
                    table_name=spec.name,
                    fmt=fmt,
                    username=request.user.get_username(),
                    query=request.GET.urlencode(),
                )
            except ExportTooLarge as exc:
                notices.append(str(exc))
                status = 400

    _paginate(table, page=page, per_page=per_page, notices=notices)
    context = {
        "spec": spec,
        "table": table,
        "filter": filterset,
        "notices": notices,
        "sort": params.cleaned_data.get("sort") or "",
        "per_page": per_page,
        "per_page_choices": PER_PAGE_CHOICES,
        "export_formats": EXPORT_FORMATS,
        "refresh_url": _without_export(request),
        # The table re-reads itself when an action elsewhere changed the data.
        "refresh_trigger": events.listen(events.DATA_CHANGED),
        "can_change_prices": can_change_prices,
    }
    return render_partial_or_page(request, f"{PAGE_TEMPLATE}#table", context, status=status)


@require_GET
@permission_required("store.view_dashboard")
@private_htmx
def product_list(request: HtmxHttpRequest) -> HttpResponseBase:
    user = request.user
    actions = RowActions(
        can_adjust=user.has_perm("store.adjust_stock"),
        # The edit form (stock and price, optimistic) is guarded by adjust_stock.
        can_edit=user.has_perm("store.adjust_stock"),
    )
    can_change_prices = user.has_perm("store.change_price")
    return _table_response(request, PRODUCTS, actions=actions, can_change_prices=can_change_prices)


@require_GET
@permission_required("store.view_dashboard")
@private_htmx
def order_list(request: HtmxHttpRequest) -> HttpResponseBase:
    actions = RowActions(
        can_pay=request.user.has_perm("store.mark_order_paid"),
        can_cancel=request.user.has_perm("store.cancel_order"),
    )
    return _table_response(request, ORDERS, actions=actions)


@require_GET
@permission_required("store.view_dashboard")
@private_htmx
def ledger_list(request: HtmxHttpRequest) -> HttpResponseBase:
    return _table_response(request, LEDGER)
