"""The rolling windows (trending's 24 h, 7 d and 30 d), moved on as hours pass.

Payments add to every window that holds their hour at once (``RollupDeltas``);
``sales_windows_advance`` takes out the hours that left a window.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import connections, transaction
from django.utils import timezone

from store.models import ProductSales, ProductWindowSales, SalesWindow
from store.selectors.trending import TRENDING_WINDOWS, window_start
from store.services.rollups import hold_writers, window_starts

WINDOW_HOURS = tuple(length // timedelta(hours=1) for length, _ in TRENDING_WINDOWS.values())


def sales_windows_advance(*, now: datetime | None = None) -> None:
    """Move each rolling window to the current hour: take out the hours that left it.

    The cost is the sales of the hours that left (one hour's worth when called
    every hour), never the window's. A window that has no start yet is built from
    the hourly sales, with their writers held off for that one statement.
    """
    now = now or timezone.now()
    table = ProductWindowSales._meta.db_table
    sales = ProductSales._meta.db_table
    with connections["default"].cursor() as cursor:
        held = window_starts(cursor)
    for hours in WINDOW_HOURS:
        start = window_start(now, timedelta(hours=hours))
        if held.get(hours) == start:
            continue  # current: the common case costs the one read above
        with transaction.atomic(), connections["default"].cursor() as cursor:
            db_start = cursor.db.ops.adapt_datetimefield_value(start)
            cursor.execute(
                f"INSERT INTO {SalesWindow._meta.db_table} (window_hours, start) "  # noqa: S608
                "VALUES (%s, %s) ON CONFLICT (window_hours) DO NOTHING RETURNING window_hours",
                [hours, db_start],
            )
            if cursor.fetchone() is not None:  # new: build it
                hold_writers(cursor, ProductSales)
                cursor.execute(f"DELETE FROM {table} WHERE window_hours = %s", [hours])  # noqa: S608
                cursor.execute(
                    f"INSERT INTO {table} (window_hours, product_id, units, revenue) "  # noqa: S608
                    f"SELECT %s, product_id, SUM(units), SUM(revenue) FROM {sales} "
                    "WHERE hour >= %s GROUP BY product_id",
                    [hours, db_start],
                )
                continue
            if cursor.db.features.has_select_for_update:
                cursor.execute(
                    f"SELECT 1 FROM {SalesWindow._meta.db_table} "  # noqa: S608
                    "WHERE window_hours = %s FOR UPDATE",
                    [hours],
                )
            held_start = window_starts(cursor)[hours]
            if held_start >= start:
                continue
            db_held = cursor.db.ops.adapt_datetimefield_value(held_start)
            cursor.execute(
                f"INSERT INTO {table} AS w (window_hours, product_id, units, revenue) "  # noqa: S608
                f"SELECT %s, product_id, -SUM(units), -SUM(revenue) FROM {sales} "
                "WHERE hour >= %s AND hour < %s GROUP BY product_id "
                "ON CONFLICT (window_hours, product_id) DO UPDATE "
                "SET units = w.units + excluded.units, revenue = w.revenue + excluded.revenue",
                [hours, db_held, db_start],
            )
            cursor.execute(
                f"DELETE FROM {table} WHERE window_hours = %s AND units = 0 AND revenue = 0",  # noqa: S608
                [hours],
            )
            cursor.execute(
                f"UPDATE {SalesWindow._meta.db_table} SET start = %s WHERE window_hours = %s",  # noqa: S608
                [db_start, hours],
            )
