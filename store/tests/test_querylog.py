"""The query inspector: panel tags, similar/duplicate flags, EXPLAIN safety."""

from __future__ import annotations

import pytest
from django.db import connection

from store import querylog
from store.models import Product
from store.tests import factories

pytestmark = pytest.mark.django_db


def test_capture_tags_and_flags_repeated_queries() -> None:
    shop, category = factories.shop(), factories.category()
    first = factories.product(shop=shop, category=category)
    second = factories.product(shop=shop, category=category)
    with querylog.capture("demo") as log:
        assert querylog.current_panel() == "demo"
        Product.objects.get(pk=first.pk)
        Product.objects.get(pk=second.pk)  # same SQL, other params: similar (N+1 signal)
        Product.objects.get(pk=second.pk)  # same SQL and params: duplicate
        Product.objects.count()
    assert querylog.current_panel() is None
    assert len(log.queries) == 4
    assert all(q.sql.startswith("/* panel:demo */ SELECT") for q in log.queries)
    assert [(similar, duplicate) for _, similar, duplicate in log.flags()] == [
        (True, False),
        (True, True),
        (True, True),
        (False, False),
    ]
    assert (log.similar, log.duplicates) == (3, 2)
    assert log.total_ms > 0


def test_outside_a_capture_nothing_is_tagged() -> None:
    with querylog.instrumented():
        assert querylog.current_panel() is None
        with querylog.capture("inner") as log:
            Product.objects.exists()
    assert len(log.queries) == 1
    assert _wrapper_count() == 0  # removed again on exit


def _wrapper_count() -> int:
    return connection.execute_wrappers.count(querylog._wrapper)


def test_panel_names_cannot_break_out_of_the_comment() -> None:
    with querylog.capture("x */ DROP TABLE y; /*") as log:
        Product.objects.exists()
    assert log.queries[0].sql.startswith("/* panel:xy */ SELECT")


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("/* panel:a */ SELECT 1", True),
        ("WITH t AS (SELECT 1) SELECT * FROM t", True),
        ("/* panel:a */ UPDATE store_product SET stock = 0", False),
        ("SELECT 1; DELETE FROM store_product", False),
        ("/* SELECT */ DELETE FROM store_product", False),
    ],
)
def test_only_single_selects_may_be_analyzed(sql: str, expected: bool) -> None:
    assert querylog.is_select(sql) is expected


def test_explain_refuses_to_analyze_a_write() -> None:
    record = querylog.QueryRecord(
        "UPDATE store_product SET stock = 0 WHERE id = %s", [1], "default", 0.0
    )
    with pytest.raises(ValueError, match="ANALYZE"):
        querylog.explain(record, analyze=True)


@pytest.mark.postgres
def test_explain_analyze_runs_the_select_and_rolls_it_back() -> None:
    # A SELECT with a transactional side effect: the setting must not survive.
    record = querylog.QueryRecord(
        "SELECT set_config('storeops.probe', %s, false)", ["changed"], "default", 0.0
    )
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        timeout_before = cursor.fetchone()[0]  # the alias's own (STOREOPS_STATEMENT_TIMEOUT)
    plan = querylog.explain(record, analyze=True)
    assert any("actual time" in line for line in plan)
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('storeops.probe', true)")
        assert cursor.fetchone()[0] in (None, "")
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == timeout_before  # the timeout was local to the EXPLAIN
