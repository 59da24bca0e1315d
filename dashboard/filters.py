"""GET input of the three tables: one FilterSet per table, one form for sort/page/export.

Every value in a query string goes through a form field, so malformed numbers and
dates become field errors (shown to the user), never exceptions further down.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, cast

import django_filters
from django import forms
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.utils import timezone

from store.models import Category, Order, Product, Shop, StockMovement
from store.selectors.catalog import ORDER_STATES, order_state_filter, product_search

EXPORT_FORMATS = ("csv", "json", "xlsx")
PER_PAGE_CHOICES = (25, 50, 100)
# Prices up to ten million in currency units: far above any real price, far below
# what an integer column could overflow on.
MAX_MONEY = Decimal("10000000")
MAX_COUNT = 2_000_000_000


def _money_filter(label: str) -> django_filters.NumberFilter:
    return django_filters.NumberFilter(
        label=label,
        method="filter_money",
        min_value=Decimal(0),
        max_value=MAX_MONEY,
        decimal_places=2,
        max_digits=12,
        widget=forms.NumberInput(attrs={"step": "0.01", "min": "0", "class": "form-control"}),
    )


def _date_filter(label: str) -> django_filters.DateFilter:
    return django_filters.DateFilter(
        label=label,
        method="filter_day",
        widget=forms.DateInput(attrs={"type": "date", "class": "form-control"}),
    )


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


class _TableFilterSet(django_filters.FilterSet):
    """Shared behaviour: money in currency units -> cents, whole-day date bounds."""

    # filter name -> (model field, lookup) for method-based filters
    money_fields: dict[str, tuple[str, str]] = {}
    day_field = "created_at"

    def filter_money(self, queryset: QuerySet[Any], name: str, value: Decimal) -> QuerySet[Any]:
        field, lookup = self.money_fields[name]
        return queryset.filter(**{f"{field}__{lookup}": int(value * 100)})

    def filter_day(self, queryset: QuerySet[Any], name: str, value: date) -> QuerySet[Any]:
        # Bounds on the raw timestamp (not created_at::date) so the index still serves it.
        if name.endswith("_from"):
            return queryset.filter(**{f"{self.day_field}__gte": _day_start(value)})
        if value == date.max:
            return queryset
        return queryset.filter(**{f"{self.day_field}__lt": _day_start(value + timedelta(days=1))})

    def invalid_summary(self) -> str:
        """One line naming the ignored filters, for the notice above the table."""
        names = [str(self.form.fields[name].label or name) for name in self.form.errors]
        return ", ".join(names)


def _select(queryset: QuerySet[Any], label: str) -> django_filters.ModelChoiceFilter:
    return django_filters.ModelChoiceFilter(
        queryset=queryset,
        label=label,
        empty_label="any",
        widget=forms.Select(attrs={"class": "form-select"}),
    )


def _yes_no(field_name: str, label: str) -> django_filters.BooleanFilter:
    return django_filters.BooleanFilter(
        field_name=field_name,
        label=label,
        widget=forms.Select(
            choices=[("", "any"), ("true", "yes"), ("false", "no")],
            attrs={"class": "form-select"},
        ),
    )


class ProductFilter(_TableFilterSet):
    q = django_filters.CharFilter(
        label="Search",
        method="filter_search",
        max_length=100,
        widget=forms.TextInput(
            attrs={"type": "search", "placeholder": "name", "class": "form-control"}
        ),
    )
    shop = _select(Shop.objects.only("name"), "Shop")
    category = _select(Category.objects.only("name"), "Category")
    price_min = _money_filter("Price from")
    price_max = _money_filter("Price to")
    stock_max = django_filters.NumberFilter(
        field_name="stock",
        lookup_expr="lte",
        label="Stock at or under",
        min_value=0,
        max_value=MAX_COUNT,
        decimal_places=0,
        widget=forms.NumberInput(attrs={"min": "0", "class": "form-control"}),
    )
    public = _yes_no("is_public", "Public")

    money_fields = {"price_min": ("price", "gte"), "price_max": ("price", "lte")}

    class Meta:
        model = Product
        fields: list[str] = []

    def filter_search(self, queryset: QuerySet[Any], name: str, value: str) -> QuerySet[Any]:
        return product_search(queryset=queryset, text=value)


class OrderFilter(_TableFilterSet):
    id = django_filters.NumberFilter(
        field_name="pk",
        label="Order #",
        min_value=1,
        max_value=2**63 - 1,
        decimal_places=0,
        widget=forms.NumberInput(attrs={"min": "1", "class": "form-control"}),
    )
    status = django_filters.ChoiceFilter(
        choices=[(state, state) for state in ORDER_STATES],
        label="Status",
        empty_label="any",
        method="filter_status",
        widget=forms.Select(attrs={"class": "form-select"}),
    )
    paid = _yes_no("paid", "Paid")
    shop = _select(Shop.objects.only("name"), "Shop")
    created_from = _date_filter("Created from")
    created_to = _date_filter("Created to")
    total_min = _money_filter("Total from")
    total_max = _money_filter("Total to")

    money_fields = {"total_min": ("total", "gte"), "total_max": ("total", "lte")}

    class Meta:
        model = Order
        fields: list[str] = []

    def filter_status(self, queryset: QuerySet[Any], name: str, value: str) -> QuerySet[Any]:
        # On the stored columns, not the status annotation, so the indexes serve it.
        return queryset.filter(order_state_filter(value))


class LedgerFilter(_TableFilterSet):
    product = django_filters.CharFilter(
        label="Product (id or SKU)",
        method="filter_product",
        max_length=32,
        widget=forms.TextInput(attrs={"class": "form-control"}),
    )
    actor = _select(get_user_model().objects.only("username").order_by("username"), "Actor")
    method = django_filters.ChoiceFilter(
        choices=StockMovement.Method.choices,
        label="Method",
        empty_label="any",
        widget=forms.Select(attrs={"class": "form-select"}),
    )
    created_from = _date_filter("From")
    created_to = _date_filter("To")

    class Meta:
        model = StockMovement
        fields: list[str] = []

    def filter_product(self, queryset: QuerySet[Any], name: str, value: str) -> QuerySet[Any]:
        value = value.strip()
        if value.isdecimal() and int(value) <= 2**63 - 1:
            return queryset.filter(product_id=int(value))
        return queryset.filter(product__sku=value)


class TableQueryForm(forms.Form):
    """Sort column, page, page size and export format of a table request."""

    sort = forms.ChoiceField(required=False)
    page = forms.IntegerField(required=False, min_value=1)
    per_page = forms.TypedChoiceField(
        required=False,
        coerce=int,
        choices=[(n, str(n)) for n in PER_PAGE_CHOICES],
        empty_value=PER_PAGE_CHOICES[0],  # type: ignore[arg-type]  # any value works; stubs say str
    )
    _export = forms.ChoiceField(required=False, choices=[(f, f) for f in EXPORT_FORMATS])

    def __init__(self, data: Any, *, sortable: list[str]) -> None:
        super().__init__(data)
        cast(forms.ChoiceField, self.fields["sort"]).choices = [("", "")] + [
            (key, key) for name in sortable for key in (name, f"-{name}")
        ]
