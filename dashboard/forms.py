"""Forms for GET parameters: every input, filters included, goes through one.

Panel forms carry a prefix (the panel name) so several panels' parameters can
share the dashboard's query string: ``/?low-stock-threshold=3&trending-window=24h``.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings

from store.models import LOW_STOCK_INDEX_MAX
from store.selectors.rankings import RANK_MAX
from store.selectors.stats import CATEGORY_STATS_COLUMNS
from store.selectors.trending import TRENDING_WINDOWS

REFRESH_FLOOR = 5  # seconds: auto-refresh never polls faster than this
REFRESH_CEILING = 3600


class PanelForm(forms.Form):
    """Base of every panel's parameters: each field's ``initial`` is its default."""

    every = forms.IntegerField(
        label="Refresh every (s)",
        min_value=REFRESH_FLOOR,
        max_value=REFRESH_CEILING,
        required=False,
    )

    def __init__(self, *args: Any, interval: int = 30, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["every"].initial = max(REFRESH_FLOOR, interval)
        for field in self.fields.values():
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
                    f"Showing the default ({field.initial})."
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
    min_avg_price = forms.IntegerField(
        label="Average price at least (cents)",
        min_value=0,
        max_value=10**9,
        initial=20_000,
        required=False,
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
    window = forms.ChoiceField(
        label="Window",
        choices=[(key, key) for key in TRENDING_WINDOWS],
        initial="7d",
        required=False,
    )


class NoParamsForm(PanelForm):
    """Panels whose only parameter is the refresh interval."""
