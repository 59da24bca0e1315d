"""Exports carry exactly the filtered, sorted rows, typed: round-trip CSV, JSON and XLSX."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.test import Client
from openpyxl import load_workbook

from dashboard import exports
from store.models import Product, StockMovement
from store.selectors.catalog import order_table_rows
from store.services.stock import stock_adjust
from store.tests import factories as f

pytestmark = pytest.mark.django_db

FILENAME = re.compile(
    r'attachment; filename="(products|orders|ledger)-\d{8}T\d{6}Z\.(csv|json|xlsx)"'
)


@pytest.fixture
def products() -> list[Product]:
    north, south = f.shop("North, Inc."), f.shop("South")
    tools = f.category("Tools")
    return [
        f.product(shop=north, category=tools, name='Hammer "XL", steel', price=1999, stock=3),
        f.product(shop=south, category=tools, name="Saw\nwith newline", price=5, stock=0),
        f.product(shop=north, category=tools, name="Drill é", price=890000, is_public=False),
        f.product(shop=south, category=tools, name="Level", price=1200, rating="3.25"),
    ]


def download(client: Client, url: str) -> tuple[bytes, str]:
    response = client.get(url)
    assert response.status_code == 200, response.content[:500]
    assert FILENAME.fullmatch(response["Content-Disposition"])
    if response.streaming:
        return b"".join(response.streaming_content), response["Content-Type"]
    return b"".join(response), response["Content-Type"]


def expected_products(queryset) -> list[dict[str, object]]:
    return [
        {
            "id": p.pk,
            "name": p.name,
            "sku": p.sku,
            "shop": p.shop.name,
            "category": p.category.name,
            "price": Decimal(p.price) / 100,
            "stock": p.stock,
            "rating": p.rating,
            "public": p.is_public,
            "created": p.created_at,
        }
        for p in queryset.select_related("shop", "category")
    ]


def test_csv_round_trips_the_filtered_sorted_rows(viewer_client: Client, products) -> None:
    body, content_type = download(viewer_client, "/products/?sort=-price&stock_max=5&_export=csv")
    assert content_type == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")))
    want = expected_products(Product.objects.filter(stock__lte=5).order_by("-price"))
    got = [
        {
            "id": int(r["id"]),
            "name": r["name"],
            "sku": r["sku"],
            "shop": r["shop"],
            "category": r["category"],
            "price": Decimal(r["price"]),
            "stock": int(r["stock"]),
            "rating": Decimal(r["rating"]),
            "public": {"true": True, "false": False}[r["public"]],
            "created": datetime.fromisoformat(r["created"]),
        }
        for r in rows
    ]
    assert got == want
    assert [r["name"] for r in got] == ['Hammer "XL", steel', "Saw\nwith newline"]
    assert rows[0]["price"] == "19.99"  # a number, not "19.99 €" or "1999"


def test_json_round_trips_typed_values(viewer_client: Client, products) -> None:
    body, content_type = download(viewer_client, "/products/?sort=price&_export=json")
    assert content_type == "application/json"
    rows = json.loads(body)
    want = expected_products(Product.objects.order_by("price"))
    assert [r["id"] for r in rows] == [w["id"] for w in want]
    first = rows[0]
    assert first["price"] == 0.05
    assert isinstance(first["stock"], int)
    assert rows[-1]["public"] is False
    assert rows[-1]["price"] == 8900.0
    assert datetime.fromisoformat(first["created"]) == want[0]["created"]
    assert {r["rating"] for r in rows} == {4.0, 3.25}


def test_xlsx_round_trips_the_rows(viewer_client: Client, products) -> None:
    body, content_type = download(viewer_client, "/products/?sort=name&_export=xlsx")
    assert content_type == exports.CONTENT_TYPES["xlsx"]
    sheet = load_workbook(io.BytesIO(body), read_only=True).active
    labels, *rows = list(sheet.iter_rows(values_only=True))
    # People read XLSX: the on-screen headers (CSV and JSON keep the machine names).
    assert list(labels) == [
        *("#", "Name", "SKU", "Shop", "Category"),
        *("Price", "Stock", "Rating", "Public", "Created"),
    ]
    header = ("id", "name", "sku", "shop", "category", "price", "stock", "rating", "public")
    header += ("created",)
    want = expected_products(Product.objects.order_by("name", "pk"))
    got = [dict(zip(header, row, strict=True)) for row in rows]
    assert [g["id"] for g in got] == [w["id"] for w in want]
    for g, w in zip(got, want, strict=True):
        assert Decimal(str(g["price"])) == w["price"]
        assert g["public"] is w["public"]
        assert g["stock"] == w["stock"]
        # Spreadsheets have no zones: UTC wall-clock time (Excel keeps milliseconds).
        assert abs(g["created"].replace(tzinfo=UTC) - w["created"]) < timedelta(milliseconds=1)


def test_orders_export_carries_annotated_totals(viewer_client: Client, products) -> None:
    shop = products[0].shop
    f.order(shop=shop, lines=[(products[0], 2), (products[3], 1)], paid=True)
    f.order(shop=shop, lines=[(products[1], 7)])
    body, _ = download(viewer_client, "/orders/?sort=id&_export=csv")
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    want = list(order_table_rows().order_by("pk"))
    assert [(int(r["id"]), int(r["item_count"]), Decimal(r["total"])) for r in rows] == [
        (o.pk, o.item_count, Decimal(o.total) / 100) for o in want
    ]
    assert rows[0]["total"] == "51.98"
    assert rows[0]["paid"] == "true"


def test_ledger_export_has_iso_times_and_empty_actor(viewer_client: Client, products, operator):
    StockMovement.objects.create(
        product=products[0], delta=-2, stock_before=5, stock_after=3, method="adjust", actor=None
    )
    StockMovement.objects.create(
        product=products[0], delta=4, stock_before=3, stock_after=7, method="adjust", actor=operator
    )
    body, _ = download(viewer_client, "/stock/ledger/?sort=delta&_export=csv")
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert [(r["delta"], r["actor"]) for r in rows] == [("-2", ""), ("4", "operator")]
    assert datetime.fromisoformat(rows[0]["created"]).tzinfo is not None


def test_export_ignores_paging_and_exports_every_row(viewer_client: Client) -> None:
    shop, category = f.shop(), f.category()
    for n in range(60):
        f.product(shop=shop, category=category, price=n)
    body, _ = download(viewer_client, "/products/?page=2&per_page=25&_export=csv")
    assert len(body.decode().splitlines()) == 61


def test_export_with_invalid_filters_is_refused(viewer_client: Client, products) -> None:
    response = viewer_client.get("/products/?price_min=abc&_export=csv")
    assert response.status_code == 400
    assert "Fix the filters before exporting" in response.content.decode()


def test_xlsx_beyond_one_sheet_is_refused_with_a_message(
    viewer_client: Client, products, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real limit is 1,048,575 rows; a smaller one exercises the same check.
    monkeypatch.setattr(exports, "XLSX_MAX_ROWS", 3)
    response = viewer_client.get("/products/?_export=xlsx")
    assert response.status_code == 400
    assert "at most 1,048,575 rows" in response.content.decode()
    monkeypatch.setattr(exports, "XLSX_MAX_ROWS", 4)
    assert viewer_client.get("/products/?_export=xlsx").status_code == 200


def test_exports_are_logged_with_user_and_query(
    viewer_client: Client, products, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="dashboard.exports"):
        download(viewer_client, "/products/?q=saw&_export=csv")
    started = [r.getMessage() for r in caplog.records if "export started" in r.getMessage()]
    assert started == [
        "export started table=products format=csv user=viewer query='q=saw&_export=csv'"
    ]
    assert any("export finished" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_streaming_exports_use_a_constant_number_of_queries(
    viewer_client: Client, products, django_assert_max_num_queries, fmt: str
) -> None:
    with django_assert_max_num_queries(8):
        body, _ = download(viewer_client, f"/products/?_export={fmt}")
    assert body


@pytest.mark.postgres
def test_copy_and_cursor_paths_write_the_same_csv(products) -> None:
    """On PostgreSQL CSV comes from COPY; it must match the cursor path value for value."""
    from dashboard.filters import ProductFilter
    from dashboard.tables import ProductTable
    from store.selectors.catalog import product_table_rows

    filtered = ProductFilter({"q": "saw"}, queryset=product_table_rows()).qs
    for queryset in (product_table_rows(), filtered):
        table = ProductTable(queryset, order_by="-price")
        columns = exports.export_columns(table)
        rows, done = exports.export_rows(exports.export_queryset(table), columns, "csv")
        by_cursor = "".join(exports._csv_chunks(rows, columns, done))
        by_copy = b"".join(exports._copy_csv_chunks(exports.export_queryset(table), columns))
        assert list(csv.reader(io.StringIO(by_copy.decode()))) == list(
            csv.reader(io.StringIO(by_cursor))
        )


def many_products(n: int) -> list[Product]:
    """Enough rows for several 64 KiB blocks, with quotes, newlines and accents."""
    shop, category = f.shop("Shop, é"), f.category()
    Product.objects.bulk_create(
        Product(
            shop=shop,
            category=category,
            name=f'Product {i} "big", é\nline' if i % 7 == 0 else f"Product {i}",
            sku=f"B-{i:08d}",
            price=i * 37,
            stock=i % 50,
            initial_stock=i % 50,
            is_public=i % 3 > 0,
            rating=Decimal("3.50"),
        )
        for i in range(n)
    )
    # Microseconds everywhere, so Python's isoformat and PostgreSQL's to_char agree.
    Product.objects.update(created_at=datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC))
    return list(Product.objects.order_by("pk"))


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_streaming_exports_send_blocks_of_at_least_64_kib(viewer_client: Client, fmt: str) -> None:
    """One chunk per row meant one send() per row; blocks keep the worker at the database's
    pace. Every block but the last holds at least 64 KiB, and none grows past two (memory
    stays bounded by the block size, not by the export)."""
    want = expected_products(Product.objects.filter(pk__in=[p.pk for p in many_products(4000)]))
    response = viewer_client.get(f"/products/?sort=id&_export={fmt}")
    assert response.status_code == 200
    chunks = list(response.streaming_content)
    sizes = [len(chunk) for chunk in chunks]
    assert len(chunks) >= 4, sizes
    assert all(size >= exports.BLOCK_BYTES for size in sizes[:-1]), sizes
    assert sizes[-1] > 0
    assert max(sizes) < 2 * exports.BLOCK_BYTES, sizes
    body = b"".join(chunks).decode()
    if fmt == "json":
        rows = json.loads(body)
        assert [(r["id"], r["name"], r["price"]) for r in rows] == [
            (w["id"], w["name"], float(w["price"])) for w in want
        ]
        return
    header, *rows = list(csv.reader(io.StringIO(body, newline="")))
    assert header[:2] == ["id", "name"]
    assert rows == [
        [
            *(str(w["id"]), w["name"], w["sku"], w["shop"], w["category"]),
            *(f"{w['price']:.2f}", str(w["stock"]), str(w["rating"])),
            *("true" if w["public"] else "false", w["created"].isoformat()),
        ]
        for w in want
    ]


FORMULA = '=HYPERLINK("http://x","y")'
# OWASP's CSV-injection triggers: each must reach a spreadsheet as text, not a formula.
TRIGGERS = ["=1+2", "+1", "-1", "@SUM(A1)", "\tx", "\rx"]


@pytest.fixture
def hostile_ledger(products: list[Product], operator) -> list[str]:
    """Adjustments whose reasons a spreadsheet would run, and a product named like one."""
    reasons = [FORMULA, *TRIGGERS, "plain", "a=b"]
    for reason in reasons:
        stock_adjust(product=products[0], delta=-1, actor=operator, reason=reason)
        stock_adjust(product=products[0], delta=1, actor=operator, reason=reason)
    Product.objects.filter(pk=products[0].pk).update(name="-minus name")
    return reasons


def neutralised(text: str) -> str:
    return "'" + text if text[:1] in {"=", "+", "-", "@", "\t", "\r"} else text


def test_csv_neutralises_formula_text_but_keeps_numbers(
    viewer_client: Client, hostile_ledger: list[str]
) -> None:
    body, _ = download(viewer_client, "/stock/ledger/?sort=created&_export=csv")
    rows = list(csv.DictReader(io.StringIO(body.decode(), newline="")))
    assert [r["reason"] for r in rows] == [neutralised(r) for r in hostile_ledger for _ in (1, 2)]
    assert rows[0]["reason"] == "'" + FORMULA
    assert {r["product"] for r in rows} == {"'-minus name"}
    # Numbers stay numbers: a negative delta is not text.
    assert [r["delta"] for r in rows[:2]] == ["-1", "1"]
    assert body.count(b"\n=") == body.count(b",=") == body.count(b',"=') == 0


def test_xlsx_writes_formula_text_as_a_string_cell(
    viewer_client: Client, hostile_ledger: list[str]
) -> None:
    body, _ = download(viewer_client, "/stock/ledger/?sort=created&_export=xlsx")
    sheet = load_workbook(io.BytesIO(body)).active
    header = [cell.value for cell in sheet[1]]
    reason, delta, product = (header.index(n) + 1 for n in ("Reason", "Delta", "Product"))
    first = sheet.cell(row=2, column=reason)
    assert first.data_type == "s"  # a string cell, not "f" (formula)
    assert first.value == "'" + FORMULA
    cells = [sheet.cell(row=n, column=reason) for n in range(2, sheet.max_row + 1)]
    # XML reads a raw carriage return back as a newline; the leading "'" is what matters.
    want = [neutralised(r).replace("\r", "\n") for r in hostile_ledger for _ in (1, 2)]
    assert [c.value for c in cells] == want
    assert {c.data_type for c in cells} == {"s"}
    assert sheet.cell(row=2, column=product).value == "'-minus name"
    assert sheet.cell(row=2, column=delta).value == -1  # still a number
    assert sheet.cell(row=2, column=delta).data_type == "n"


def test_json_keeps_text_as_it_is(viewer_client: Client, hostile_ledger: list[str]) -> None:
    body, _ = download(viewer_client, "/stock/ledger/?sort=created&_export=json")
    rows = json.loads(body)
    assert [r["reason"] for r in rows] == [r for r in hostile_ledger for _ in (1, 2)]
    assert rows[0]["delta"] == -1


def test_xlsx_is_ready_to_read_labels_bold_frozen_filtered_and_formatted(
    viewer_client: Client, products
) -> None:
    from openpyxl import load_workbook

    body, _ = download(viewer_client, "/products/?sort=name&_export=xlsx")
    sheet = load_workbook(io.BytesIO(body)).active
    header = [cell for cell in next(sheet.iter_rows(max_row=1))]
    assert [c.value for c in header][:3] == ["#", "Name", "SKU"]  # the on-screen labels
    assert all(c.font.bold for c in header)
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref == f"A1:{header[-1].column_letter}{sheet.max_row}"
    price = [c.value for c in header].index("Price")
    first = next(sheet.iter_rows(min_row=2, max_row=2))
    assert first[price].number_format == "#,##0.00"
    assert sheet.column_dimensions["B"].width >= 20


@pytest.mark.postgres
def test_a_csv_export_outlasting_the_request_deadline_is_not_cut_short(
    viewer_client: Client, products, monkeypatch
) -> None:
    """COPY streams for as long as the client reads, as one statement: the alias's
    per-request statement_timeout (2-30 s) would cancel it mid-file, after the 200 and
    the first rows had gone out. An export has its own deadline
    (``STOREOPS_EXPORT_TIMEOUT``), server side and in the watchdog."""
    from django.db import connection
    from django.db.models.expressions import RawSQL

    export_values = exports.export_values

    def slow_values(queryset, columns, fmt):  # 0.2 s of server time per row
        values, done = export_values(queryset, columns, fmt)
        # Correlated with the row, so it runs for each row (not once, as an InitPlan).
        sleep = RawSQL('(SELECT 1 FROM pg_sleep(0.2 + 0 * "store_product"."id"))', ())
        return values.annotate(slept=sleep), done

    monkeypatch.setattr(exports, "export_values", slow_values)
    with connection.cursor() as cursor:  # a request deadline shorter than the export
        cursor.execute("SET statement_timeout = '300ms'")
    body, _ = download(viewer_client, "/products/?_export=csv")
    rows = list(csv.reader(io.StringIO(body.decode())))
    assert len(rows) == 1 + len(products)
    with connection.cursor() as cursor:  # the connection keeps its own deadline
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "300ms"
