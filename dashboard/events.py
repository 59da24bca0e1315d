"""The HTMX events a write sends (``HX-Trigger``) and panels and tables listen for
(``hx-trigger="<event> from:body"``): each name is spelled here once.

Templates that listen get the names from their view's context, never as literals.
"""

from __future__ import annotations

STOCK_CHANGED = "stock-changed"
PRICES_CHANGED = "prices-changed"
ORDER_PAID = "order-paid"
ORDER_CANCELLED = "order-cancelled"
OUTBOX_CHANGED = "outbox-changed"

# What changes the figures of every catalog-wide view (the tables, most panels).
DATA_CHANGED = (STOCK_CHANGED, PRICES_CHANGED, ORDER_PAID, ORDER_CANCELLED)


def listen(events: tuple[str, ...]) -> str:
    """An ``hx-trigger`` value that fires on any of ``events`` sent to the page."""
    return ", ".join(f"{event} from:body" for event in events)
