"""Paging without ``COUNT(*)`` over the whole result on every page turn.

``EstimatingPaginator`` pages like django-tables2's ``LazyPaginator`` (it fetches one
row more than a page to know whether a next page exists), loads a page with a deferred
join, and gives a cheap result count for the "N results" line: exact up to
``EXACT_LIMIT`` rows (a bounded count), beyond that the PostgreSQL planner's estimate,
shown as "about N". Other backends say "more than N".
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from django.core.paginator import EmptyPage, Page
from django.db import connections
from django.db.models import QuerySet
from django_tables2.paginators import LazyPaginator

EXACT_LIMIT = 10_000


@dataclass(frozen=True)
class ResultCount:
    value: int
    exact: bool
    # True when the count stopped at EXACT_LIMIT and no estimate was available.
    at_least: bool = False

    def __str__(self) -> str:
        if self.exact:
            return f"{self.value:,}"
        if self.at_least:
            return f"more than {self.value:,}"
        return f"about {_round_2_significant(self.value):,}"

    @property
    def pages_hint(self) -> int | None:
        return None if self.at_least else self.value


def _round_2_significant(n: int) -> int:
    if n < 100:
        return n
    magnitude = 10 ** (int(math.log10(n)) - 1)
    return round(n / magnitude) * magnitude


def planner_estimate(queryset: QuerySet[Any]) -> int | None:
    """Rows the PostgreSQL planner expects ``queryset`` to return (no rows are read)."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    sql, params = queryset.order_by().query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


def result_count(queryset: QuerySet[Any]) -> ResultCount:
    """At most two cheap queries, whatever the size of the table."""
    estimate = planner_estimate(queryset)
    if estimate is not None and estimate > EXACT_LIMIT * 10:
        # Far beyond the exact range: the estimate alone (planning only, no rows read).
        return ResultCount(estimate, exact=False)
    bounded = queryset.order_by()[: EXACT_LIMIT + 1].count()
    if bounded <= EXACT_LIMIT:
        return ResultCount(bounded, exact=True)
    if estimate is not None:
        return ResultCount(max(estimate, bounded), exact=False)
    return ResultCount(EXACT_LIMIT, exact=False, at_least=True)


class EstimatingPaginator(LazyPaginator):
    def __init__(self, object_list: Any, per_page: int, *, source: QuerySet[Any], **kw: Any):
        self.source = source
        super().__init__(object_list, per_page, **kw)

    _last_page_rows: int | None = None

    def page(self, number: Any) -> Page:
        """The page's records (model instances), in order.

        A deferred join: the page's keys come from a narrow query first (for the
        default order an index-only scan, cheap even at OFFSET 500,000), then only
        those rows are loaded with their joins and annotations.
        """
        number = self.validate_number(number or 1)
        bottom = (number - 1) * self.per_page
        keys = list(self.source.values_list("pk", flat=True)[bottom : bottom + self.per_page + 1])
        has_next = len(keys) > self.per_page
        keys = keys[: self.per_page]
        if not keys and number != 1:
            raise EmptyPage("That page contains no results")
        found = {row.pk: row for row in self.source.filter(pk__in=keys).order_by()} if keys else {}
        records = [found[key] for key in keys if key in found]
        self._num_pages = number + 1 if has_next else number
        if not has_next:
            self._final_num_pages = number
            self._last_page_rows = len(records)
        return Page(records, number, self)

    @cached_property
    def result_count(self) -> ResultCount:
        if self._final_num_pages is not None and self._last_page_rows is not None:
            # The page shown is the last one: the exact count is known for free.
            rows = (self._final_num_pages - 1) * self.per_page + self._last_page_rows
            return ResultCount(rows, exact=True)
        return result_count(self.source)

    @property
    def last_page_number(self) -> int | None:
        """The last page, when the count is exact (else unknown without a full count)."""
        found = self.result_count
        if not found.exact:
            return None
        return max(1, math.ceil(found.value / self.per_page))
