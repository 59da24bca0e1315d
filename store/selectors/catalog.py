"""Querysets behind the products, orders and stock-ledger tables.

Each builder returns a lazy QuerySet with its joins and annotations in place, so a
page of any size costs a fixed number of queries and the exports stream the same
rows the table shows. Filtering and sorting are layered on top by the web layer.
"""

from __future__ import annotations

from typing import Any

from django.db import connections
from django.db.models import Case, CharField, F, Lookup, Q, QuerySet, Value, When

from store.models import Order, Product, StockMovement


def product_table_rows() -> QuerySet[Product]:
    return Product.objects.select_related("shop", "category").only(
        "name",
        "sku",
        "price",
        "stock",
        "rating",
        "is_public",
        "created_at",
        "version",
        "shop__name",
        "category__name",
    )


def product_search(*, queryset: QuerySet[Product], text: str) -> QuerySet[Product]:
    """Products whose name matches ``text``.

    On PostgreSQL a name matches when it contains the text or is trigram-similar to
    it word-wise (``%>``), both served by the GIN index ``product_name_trgm``;
    elsewhere a case-insensitive substring match.
    """
    text = text.strip()
    if not text:
        return queryset
    if connections[queryset.db].vendor != "postgresql":
        return queryset.filter(name__icontains=text)
    from django.contrib.postgres.lookups import TrigramWordSimilar

    # Lookup expressions work in filter() without django.contrib.postgres installed.
    # ILIKE on the bare column (Django's icontains is UPPER(name) LIKE ...) and the
    # word-similarity operator can both use the trigram index.
    return queryset.filter(
        Q(_ILike(F("name"), f"%{_escape_like(text)}%")) | Q(TrigramWordSimilar(F("name"), text))
    )


class _ILike(Lookup):
    lookup_name = "ilike"

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, tuple[Any, ...]]:
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        return f"{lhs} ILIKE {rhs}", (*lhs_params, *rhs_params)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


ORDER_STATES = ("open", "paid", "cancelled", "refunded")


def order_state_filter(state: str) -> Q:
    """The orders in ``state``. Open is "not paid and not cancelled", as the headline
    figure counts it; refunded is paid and then cancelled (a paid order is cancelled
    only after its refund)."""
    cancelled = Q(cancelled_at__isnull=False)
    return {
        "open": Q(paid=False, cancelled_at__isnull=True),
        "paid": Q(paid=True, cancelled_at__isnull=True),
        "cancelled": Q(paid=False) & cancelled,
        "refunded": Q(paid=True) & cancelled,
    }[state]


def order_table_rows() -> QuerySet[Order]:
    """Orders with their shop and state; total (cents) and item count are stored on the order.

    The state is computed in SQL so exports (``values_list``) carry it like any column.
    """
    state = Case(
        *(When(order_state_filter(name), then=Value(name)) for name in ORDER_STATES),
        output_field=CharField(),
    )
    return (
        Order.objects.annotate(status=state)
        .select_related("shop")
        .only(
            "customer_id",
            "paid",
            "paid_at",
            "cancelled_at",
            "created_at",
            "version",
            "total",
            "item_count",
            "shop__name",
        )
    )


def stock_ledger_rows() -> QuerySet[StockMovement]:
    return StockMovement.objects.select_related("product", "actor").only(
        "delta",
        "stock_before",
        "stock_after",
        "reason",
        "method",
        "created_at",
        "order",
        "product__name",
        "product__sku",
        "actor__username",
    )
