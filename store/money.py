"""Money as people read it: currency units with two decimals (stored as integer cents)."""

from __future__ import annotations


def format_money(cents: int) -> str:
    """Integer cents as currency units: 123456 -> "1,234.56" (no float arithmetic)."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}{whole:,}.{part:02d}"
