"""Forms for GET parameters: every input, filters included, goes through one.

Panel forms carry a prefix (the panel name) so several panels' parameters can
share the dashboard's query string: ``/?low-stock-threshold=3&trending-window=24h``.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings

from store.models import LOW_STOCK_INDEX_MAX, Shop
from store.money import MoneyField
from store.selectors.rankings import RANK_MAX
from store.selectors.series import CUSTOM_MAX_DAYS
from store.selectors.stats import CATEGORY_STATS_COLUMNS
from store.selectors.trending import TRENDING_WINDOWS

REFRESH_FLOOR = 5  # seconds: auto-refresh never polls faster than this (0: off)
REFRESH_CEILING = 3600
# The page's refresh picker (Grafana's): URL value -> seconds; "" keeps each panel's own.
REFRESH_CHOICES: dict[str, int | None] = {
    "": None,
    "off": 0,
    "5s": 5,
    "15s": 15,
    "30s": 30,
    "1m": 60,
    "5m": 300,
}
RANGE_CHOICES = [("24h", "Last 24 hours"), ("7d", "Last 7 days"), ("30d", "Last 30 days")]
RANGE_CHOICES_CUSTOM = [*RANGE_CHOICES, ("custom", "Custom range")]


def _refresh_allowed(value: int | None) -> None:
    if value is not None and 0 < value < REFRESH_FLOOR:
        raise forms.ValidationError(
            f"Ensure this value is greater than or equal to {REFRESH_FLOOR} (0 turns it off)."
        )


class PanelForm(forms.Form):
    """Base of every panel's parameters: each field's ``initial`` is its default."""

    # Set by the page's refresh picker; kept in each panel's URL (a hidden field).
    every = forms.IntegerField(
        label="Refresh every (s)",
        min_value=0,
        max_value=REFRESH_CEILING,
        validators=[_refresh_allowed],
        required=False,
        widget=forms.HiddenInput,
    )

    def __init__(self, *args: Any, interval: int = 30, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["every"].initial = max(REFRESH_FLOOR, interval)
        for field in self.fields.values():
            if isinstance(field.widget, forms.HiddenInput):
                continue
            select = isinstance(field.widget, forms.Select)
            field.widget.attrs["class"] = (
                "form-select form-select-sm" if select else "form-control form-control-sm"
            )

    def params(self) -> tuple[dict[str, Any], list[str]]:
        """Cleaned values, with the default for each missing or invalid one, and
        a message per invalid field. Never raises on bad input."""
        if not self.is_bound:
            return {name: field.initial for name, field in self.fields.items()}, []
        valid = self.is_valid()
        values: dict[str, Any] = {}
        problems: list[str] = []
        for name, field in self.fields.items():
            value = self.cleaned_data.get(name) if valid or name not in self.errors else None
            if name in self.errors:
                problems.append(
                    f"{field.label}: {' '.join(map(str, self.errors[name]))} "
                    f"Showing the default ({field.prepare_value(field.initial)})."
                )
            values[name] = field.initial if value in (None, "") else value
        return values, problems


class CategoryStatsForm(PanelForm):
    sort = forms.ChoiceField(
        label="Sort by",
        choices=[
            (f"{direction}{column}", f"{column.replace('_', ' ')} {label}")
            for column in CATEGORY_STATS_COLUMNS
            for direction, label in (("-", "(high first)"), ("", "(low first)"))
        ],
        initial="-revenue",
        required=False,
    )


class CategoryGroupsForm(PanelForm):
    # Currency units on screen and in the URL ("200.00"), cents to the selector.
    min_avg_price = MoneyField(
        max_cents=10**9, label="Average price at least", initial=20_000, required=False
    )


class RankWindowForm(PanelForm):
    by = forms.ChoiceField(
        label="Rank by",
        choices=[("price", "price"), ("revenue", "revenue")],
        initial="price",
        required=False,
    )
    function = forms.ChoiceField(
        label="Function",
        choices=[("rank", "Rank"), ("dense_rank", "DenseRank"), ("row_number", "RowNumber")],
        initial="rank",
        required=False,
    )
    top = forms.IntegerField(
        label="Top N", min_value=1, max_value=RANK_MAX, initial=3, required=False
    )


class LowStockForm(PanelForm):
    threshold = forms.IntegerField(
        label="Threshold (units)",
        min_value=0,
        max_value=LOW_STOCK_INDEX_MAX,
        required=False,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["threshold"].initial = settings.STOREOPS_LOW_STOCK_THRESHOLD


class TrendingForm(PanelForm):
    # Follows the page's time range (a custom range shows the 30 d window).
    window = forms.ChoiceField(
        label="Window",
        choices=[(key, key) for key in TRENDING_WINDOWS],
        initial="7d",
        required=False,
        widget=forms.HiddenInput,
    )


class RangeForm(PanelForm):
    """A time-series panel: the page's time range, carried in hidden fields."""

    range = forms.ChoiceField(
        label="Time range",
        choices=RANGE_CHOICES_CUSTOM,
        initial="24h",
        required=False,
        widget=forms.HiddenInput,
    )
    start = forms.DateField(label="From", required=False, widget=forms.HiddenInput)
    end = forms.DateField(label="To", required=False, widget=forms.HiddenInput)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("range") == "custom":
            problem = custom_range_problem(data.get("start"), data.get("end"))
            if problem:
                self.add_error("range", problem)
        return data


def custom_range_problem(start: Any, end: Any) -> str:
    if start is None or end is None:
        return "A custom range needs both dates."
    if end < start:
        return "The range ends before it starts."
    if (end - start).days + 1 > CUSTOM_MAX_DAYS:
        return f"A custom range covers at most {CUSTOM_MAX_DAYS} days."
    return ""


class SalesSeriesForm(RangeForm):
    shop = forms.IntegerField(label="Shop", min_value=0, initial=0, required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            # Shown as a list of shops; parsed as a number (a shop created later is
            # valid at once, whatever a parse cache remembers).
            shops = [(0, "All shops"), *Shop.objects.order_by("name").values_list("pk", "name")]
            self.fields["shop"].widget = forms.Select(
                choices=shops, attrs={"class": "form-select form-select-sm"}
            )


class PageControlsForm(forms.Form):
    """The dashboard's own controls: one time range and one refresh picker (in the URL)."""

    range = forms.ChoiceField(
        label="Time range", choices=RANGE_CHOICES_CUSTOM, initial="24h", required=False
    )
    start = forms.DateField(
        label="From", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    end = forms.DateField(
        label="To", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    refresh = forms.ChoiceField(
        label="Refresh",
        choices=[(k, k or "auto") for k in REFRESH_CHOICES],
        initial="",
        required=False,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, field in self.fields.items():
            select = isinstance(field.widget, forms.Select)
            field.widget.attrs["class"] = (
                "form-select form-select-sm" if select else "form-control form-control-sm"
            )
            field.widget.attrs["id"] = f"page-{name}"

    def values(self) -> tuple[dict[str, Any], list[str]]:
        """Cleaned values (defaults for bad ones) and a message per problem."""
        valid = self.is_valid()
        problems = [
            f"{self.fields[k].label}: {' '.join(str(e) for e in v)}" for k, v in self.errors.items()
        ]
        data = {
            k: (self.cleaned_data.get(k) if valid or k not in self.errors else None)
            for k in self.fields
        }
        data["range"] = data["range"] or "24h"
        if data["range"] == "custom":
            problem = custom_range_problem(data["start"], data["end"])
            if problem:
                problems.append(f"Time range: {problem} Showing the last 24 hours.")
                data["range"] = "24h"
        data["refresh"] = data["refresh"] or ""
        return data, problems


class NoParamsForm(PanelForm):
    """Panels whose only parameter is the refresh interval."""
