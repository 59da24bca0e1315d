"""Money as people read it: currency units with two decimals (stored as integer cents)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms


def format_money(cents: int) -> str:
    """Integer cents as currency units: 123456 -> "1,234.56" (no float arithmetic)."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}{whole:,}.{part:02d}"


class MoneyField(forms.DecimalField):
    """Currency units in the form ("12.34"), integer cents in ``cleaned_data`` (1234).

    At most two decimals (a third would be silently rounded away otherwise), not
    negative, and no more cents than the integer column holds.
    """

    def __init__(self, *, max_cents: int, **kw: Any) -> None:
        kw.setdefault("widget", forms.NumberInput(attrs={"class": "form-control form-control-sm"}))
        super().__init__(
            min_value=Decimal(0),
            max_value=Decimal(max_cents) / 100,
            max_digits=len(str(max_cents)) + 1,
            decimal_places=2,
            **kw,
        )
        self.widget.attrs.setdefault("step", "0.01")

    def prepare_value(self, value: Any) -> Any:
        # Initial values come from the model in cents; submitted ones are already units.
        if isinstance(value, int):
            return f"{Decimal(value) / 100:.2f}"
        return super().prepare_value(value)

    def clean(self, value: Any) -> int | None:
        units = super().clean(value)
        return None if units is None else int(units * 100)
