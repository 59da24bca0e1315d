"""The products, orders and stock-ledger tables (django-tables2).

Every data column's accessor is an ORM path (``shop__name``), so the streaming
export (dashboard/exports.py) reads the very same columns with ``values_list``, and
each column says what kind of value it holds so exports write numbers and ISO
dates rather than display strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import Any

import django_tables2 as tables
from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape, format_html, format_html_join
from django.utils.safestring import SafeString

from store.models import Order, Product, StockMovement
from store.money import format_money

TABLE_TEMPLATE = "django_tables2/htmx.html"
TABLE_ATTRS = {"class": "table table-sm table-hover align-middle bg-white mb-2"}


class Kind:
    """What an exported cell holds (see dashboard/exports.py)."""

    TEXT = "text"
    INT = "int"
    MONEY = "money"  # integer cents, exported as currency units
    DECIMAL = "decimal"
    BOOL = "bool"
    DATETIME = "datetime"


class Column(tables.Column):
    """A column that can also render a cell directly (see ``_Base.html_rows``).

    django-tables2 renders each cell through signature inspection and template
    lookups (about 3 ms a row); the page builds its rows from ``cell_html`` instead,
    while sorting, headers, paging and exports still come from the table.
    """

    td_class = ""
    export_kind = Kind.TEXT

    def __init__(self, kind: str = Kind.TEXT, **kw: Any) -> None:
        # A stable tie-breaker on pk keeps OFFSET paging deterministic on equal values.
        if kw.get("orderable", True) and "order_by" not in kw and kw.get("accessor"):
            kw["order_by"] = (kw["accessor"], "pk")
        if self.td_class:
            kw.setdefault("attrs", {"td": {"class": self.td_class}, "th": {"class": self.td_class}})
        super().__init__(**kw)
        self.export_kind = kind
        path = str(kw.get("accessor") or "")
        self._get = attrgetter(path.replace("__", ".")) if path else None

    def value_of(self, record: Any) -> Any:
        try:
            return self._get(record) if self._get else None
        except AttributeError:  # a null relation on the way (an actor-less movement)
            return None

    def cell_html(self, value: Any, record: Any, table: Any) -> str:
        return "—" if value is None or value == "" else escape(value)


class NumberColumn(Column):
    td_class = "text-end"

    def cell_html(self, value: Any, record: Any, table: Any) -> str:
        return "—" if value is None else str(value)


class MoneyColumn(NumberColumn):
    def render(self, value: int) -> str:
        return format_money(value)

    def cell_html(self, value: Any, record: Any, table: Any) -> str:
        return format_money(value)


class StockColumn(NumberColumn):
    def render(self, value: int) -> SafeString:
        return SafeString(self.cell_html(value, None, None))

    def cell_html(self, value: Any, record: Any, table: Any) -> str:
        if value <= settings.STOREOPS_LOW_STOCK_THRESHOLD:
            return f'{value} <span class="badge text-bg-warning" title="low stock">low</span>'
        return str(value)


class LedgerStockColumn(StockColumn):
    """Stock on hand, linked to the product's movements in the stock ledger."""

    def cell_html(self, value: Any, record: Any, table: Any) -> str:
        return format_html(
            '<a href="{}?product={}">{}<span class="visually-hidden"> units: movements of {}'
            "</span></a>",
            reverse("store-ledger-list"),
            record.pk,
            SafeString(super().cell_html(value, record, table)),
            record.name,
        )


STATUS_BADGES = {
    "open": "text-bg-primary",
    "paid": "text-bg-success",
    "cancelled": "text-bg-secondary",
    "refunded": "text-bg-warning",
}


class StatusColumn(Column):
    """An order's state (order_table_rows annotates it) as a badge."""

    def cell_html(self, value: Any, record: Any, table: Any) -> str:
        return format_html(
            '<span class="badge {}" data-status="{}">{}</span>',
            STATUS_BADGES.get(value, "text-bg-light"),
            value,
            value,
        )


class LinkedIdColumn(NumberColumn):
    """An id linked to its page: ``url_name`` takes the id as its one argument."""

    def __init__(self, kind: str = Kind.INT, *, url_name: str, **kw: Any) -> None:
        super().__init__(kind, **kw)
        self.url_name = url_name

    def cell_html(self, value: Any, record: Any, table: Any) -> str:
        if value is None:
            return "—"
        return format_html('<a href="{}">{}</a>', reverse(self.url_name, args=[value]), value)


class OrderLinkColumn(NumberColumn):
    """A ledger line's order, linked to that order's row in the orders table."""

    def cell_html(self, value: Any, record: Any, table: Any) -> str:
        if value is None:
            return "—"
        return format_html('<a href="{}?id={}">#{}</a>', reverse("store-order-list"), value, value)


class DeltaColumn(NumberColumn):
    def render(self, value: int) -> str:
        return f"{value:+d}"

    def cell_html(self, value: Any, record: Any, table: Any) -> str:
        return f"{value:+d}"


class BooleanColumn(Column):
    def render(self, value: bool) -> SafeString:
        return SafeString(self.cell_html(value, None, None))

    def cell_html(self, value: Any, record: Any, table: Any) -> str:
        if value:
            return '<span class="text-success" title="yes">&#10004;</span>'
        return '<span class="text-secondary" title="no">&#10008;</span>'


class DateTimeColumn(Column):
    def render(self, value: datetime) -> str:
        return self.cell_html(value, None, None)

    def cell_html(self, value: Any, record: Any, table: Any) -> str:
        return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S")


class ChoiceColumn(Column):
    def __init__(self, kind: str = Kind.TEXT, *, choices: Any, **kw: Any) -> None:
        super().__init__(kind, **kw)
        self.labels = dict(choices)

    def render(self, value: str) -> str:
        return self.labels.get(value, value)

    def cell_html(self, value: Any, record: Any, table: Any) -> str:
        return escape(self.labels.get(value, value))


@dataclass(frozen=True)
class RowActions:
    """The per-row actions the current user may use (decided in the view)."""

    can_adjust: bool = False
    can_edit: bool = False
    can_pay: bool = False
    can_cancel: bool = False


def _td(css_class: str) -> str:
    return f'<td class="{css_class}">' if css_class else "<td>"


def _action_link(url: str, label: str, subject: str) -> SafeString:
    # The form comes uncached from the action's own view, into the action dialog
    # that opens over the row; the accessible name says which row ("Adjust Lamp 7").
    return format_html(
        '<a class="btn btn-outline-primary btn-sm" href="{0}" hx-get="{0}" '
        'hx-target="#action-dialog-body" hx-swap="innerHTML" hx-push-url="false" '
        'data-opens-action>{1}<span class="visually-hidden"> {2}</span></a>',
        url,
        label,
        subject,
    )


class ActionsColumn(Column):
    def __init__(self, **kw: Any) -> None:
        super().__init__(
            empty_values=(), orderable=False, exclude_from_export=True, verbose_name="", **kw
        )

    def cell_html(self, value: Any, record: Any, table: Any) -> str:
        return table.render_actions(record)


class _Base(tables.Table):
    def __init__(self, *args: Any, actions: RowActions | None = None, **kw: Any) -> None:
        self.actions = actions or RowActions()
        super().__init__(*args, **kw)
        if "actions" in self.base_columns and not self.has_actions():
            self.columns.hide("actions")

    def has_actions(self) -> bool:
        return False

    def html_rows(self) -> list[SafeString]:
        """The current page's rows as HTML, one ``<tr>`` each (values escaped)."""
        columns = [(bound.column, _td(bound.column.td_class)) for bound in self.columns]
        rows = []
        for record in self.page.object_list:  # records: see EstimatingPaginator.page
            cells = "".join(
                f"{td}{column.cell_html(column.value_of(record), record, self)}</td>"
                for column, td in columns
            )
            rows.append(SafeString(f'<tr data-row-id="{record.pk}">{cells}</tr>'))
        return rows

    @classmethod
    def sortable(cls) -> list[str]:
        return [name for name, col in cls.base_columns.items() if col.orderable is not False]


class ProductTable(_Base):
    id = NumberColumn(Kind.INT, accessor="pk", verbose_name="#", order_by=("pk",))
    name = Column(accessor="name", verbose_name="Name")
    sku = Column(accessor="sku", verbose_name="SKU")
    shop = Column(accessor="shop__name", verbose_name="Shop")
    category = Column(accessor="category__name", verbose_name="Category")
    price = MoneyColumn(Kind.MONEY, accessor="price", verbose_name="Price")
    stock = LedgerStockColumn(Kind.INT, accessor="stock", verbose_name="Stock")
    rating = NumberColumn(Kind.DECIMAL, accessor="rating", verbose_name="Rating")
    public = BooleanColumn(Kind.BOOL, accessor="is_public", verbose_name="Public")
    created = DateTimeColumn(Kind.DATETIME, accessor="created_at", verbose_name="Created")
    actions = ActionsColumn()

    class Meta:
        model = Product
        fields = ()
        attrs = TABLE_ATTRS | {"data-table": "products"}
        empty_text = "No products match these filters."

    def has_actions(self) -> bool:
        return self.actions.can_adjust or self.actions.can_edit

    def render_actions(self, record: Product) -> SafeString:
        links = []
        if self.actions.can_adjust:
            url = reverse("store-product-adjust", args=[record.pk])
            links.append(_action_link(url, "Adjust", record.name))
        if self.actions.can_edit:
            url = reverse("store-product-edit", args=[record.pk])
            links.append(_action_link(url, "Edit", record.name))
        return format_html_join(" ", "{}", ((link,) for link in links))


class OrderTable(_Base):
    id = NumberColumn(Kind.INT, accessor="pk", verbose_name="Order", order_by=("pk",))
    # Not sortable: ordering by a computed state would read every order.
    status = StatusColumn(accessor="status", verbose_name="Status", orderable=False)
    user = LinkedIdColumn(
        accessor="customer_id", verbose_name="Customer", url_name="store-customer-detail"
    )
    shop = Column(accessor="shop__name", verbose_name="Shop")
    created = DateTimeColumn(Kind.DATETIME, accessor="created_at", verbose_name="Created")
    paid = BooleanColumn(Kind.BOOL, accessor="paid", verbose_name="Paid")
    item_count = NumberColumn(Kind.INT, accessor="item_count", verbose_name="Items")
    total = MoneyColumn(Kind.MONEY, accessor="total", verbose_name="Total")
    actions = ActionsColumn()

    class Meta:
        model = Order
        fields = ()
        attrs = TABLE_ATTRS | {"data-table": "orders"}
        empty_text = "No orders match these filters."

    def has_actions(self) -> bool:
        return self.actions.can_pay or self.actions.can_cancel

    def render_actions(self, record: Order) -> SafeString:
        if record.cancelled_at is not None:
            return SafeString("")
        links = []
        if self.actions.can_pay and not record.paid:
            url = reverse("store-order-pay", args=[record.pk])
            links.append(_action_link(url, "Mark paid", f"order #{record.pk}"))
        if self.actions.can_cancel:
            url = reverse("store-order-cancel", args=[record.pk])
            links.append(_action_link(url, "Cancel", f"order #{record.pk}"))
        return format_html_join(" ", "{}", ((link,) for link in links))


class LedgerTable(_Base):
    created = DateTimeColumn(Kind.DATETIME, accessor="created_at", verbose_name="When")
    product_id = NumberColumn(Kind.INT, accessor="product_id", verbose_name="Product #")
    product = Column(accessor="product__name", verbose_name="Product")
    delta = DeltaColumn(Kind.INT, accessor="delta", verbose_name="Delta")
    before = NumberColumn(Kind.INT, accessor="stock_before", verbose_name="Before")
    after = NumberColumn(Kind.INT, accessor="stock_after", verbose_name="After")
    reason = Column(accessor="reason", verbose_name="Reason")
    order = OrderLinkColumn(Kind.INT, accessor="order_id", verbose_name="Order")
    method = ChoiceColumn(
        accessor="method", verbose_name="Method", choices=StockMovement.Method.choices
    )
    actor = Column(accessor="actor__username", verbose_name="Actor")

    class Meta:
        model = StockMovement
        fields = ()
        attrs = TABLE_ATTRS | {"data-table": "ledger"}
        empty_text = (
            "No stock movements match these filters. Movements come from stock adjustments, "
            "edits, orders placed and orders cancelled; the seeded stock is the starting "
            "point, so a fresh demo has none until someone acts."
        )
