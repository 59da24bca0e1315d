"""What plan the database picks for a queryset: index tests assert on it, not on the
index merely existing (a query the planner cannot serve from it would still pass)."""

from __future__ import annotations

from typing import Any

from django.db import connections, transaction


def query_plan(queryset: Any, *, where_only: bool = False) -> str:
    """EXPLAIN on PostgreSQL, EXPLAIN QUERY PLAN on SQLite (``QuerySet.explain``).

    Test tables hold a handful of rows, where a sequential scan is cheapest, so on
    PostgreSQL sequential scans are priced out for this one statement: the question
    is whether the index *can* serve the query, which is what a big table needs.
    ``where_only``: plain index scans too, so the primary key cannot serve the ORDER
    BY while a filter reads every row; what is left is an index serving the WHERE.
    """
    alias = queryset.db
    with transaction.atomic(using=alias):
        if connections[alias].vendor == "postgresql":
            with connections[alias].cursor() as cursor:
                cursor.execute("SET LOCAL enable_seqscan = off")
                if where_only:
                    cursor.execute("SET LOCAL enable_indexscan = off")
        return str(queryset.explain())
