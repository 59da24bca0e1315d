"""The products, orders and ledger tables: filters, sorting, paging, bad input, queries."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard.paginators import ResultCount, planner_estimate
from store.models import Order, OrderItem, Product, StockMovement
from store.services.rollup_rebuild import rollups_rebuild
from store.tests import factories as f

pytestmark = pytest.mark.django_db

ROW_ID = re.compile(r'data-row-id="(\d+)"')


def row_ids(response) -> list[int]:
    return [int(pk) for pk in ROW_ID.findall(response.content.decode())]


@pytest.fixture
def catalog() -> dict[str, object]:
    """Two shops, two categories, five products with distinct prices and stock."""
    north, south = f.shop("North"), f.shop("South")
    tools, toys = f.category("Tools"), f.category("Toys")
    made = {
        "hammer": f.product(shop=north, category=tools, name="Steel hammer", price=1999, stock=3),
        "saw": f.product(shop=north, category=tools, name="Hand saw", price=2500, stock=40),
        "kite": f.product(shop=south, category=toys, name="Red kite", price=999, stock=0),
        "ball": f.product(
            shop=south, category=toys, name="Beach ball", price=450, stock=12, is_public=False
        ),
        "drill": f.product(shop=north, category=tools, name="Cordless drill", price=8900, stock=5),
    }
    return {"north": north, "south": south, "tools": tools, "toys": toys, **made}


def pks(*products: Product) -> list[int]:
    return [p.pk for p in products]


# --- access ------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/products/", "/orders/", "/stock/ledger/"])
def test_tables_need_the_view_permission(outsider_client: Client, url: str) -> None:
    assert outsider_client.get(url).status_code == 403
    assert outsider_client.get(url + "?_export=csv").status_code == 403


@pytest.mark.parametrize("url", ["/products/", "/orders/", "/stock/ledger/"])
def test_navigation_links_reach_every_table(viewer_client: Client, url: str) -> None:
    response = viewer_client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    for href in ('href="/products/"', 'href="/orders/"', 'href="/stock/ledger/"'):
        assert href in html
    assert response["Cache-Control"] == "private"
    assert "HX-Request" in response["Vary"]


# --- products ------------------------------------------------------------------


def test_products_show_money_and_the_low_stock_flag(viewer_client: Client, catalog) -> None:
    html = viewer_client.get("/products/").content.decode()
    assert "19.99" in html
    assert "89.00" in html
    assert "1999" not in html.replace("T-", "")  # cents never leak into the page
    hammer_row = html.split(f'data-row-id="{catalog["hammer"].pk}"')[1].split("</tr>")[0]
    saw_row = html.split(f'data-row-id="{catalog["saw"].pk}"')[1].split("</tr>")[0]
    assert "low stock" in hammer_row
    assert "low stock" not in saw_row


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("q=hammer", ["hammer"]),
        ("q=HAND", ["saw"]),
        ("shop={north}", ["hammer", "saw", "drill"]),
        ("category={toys}", ["kite", "ball"]),
        ("price_min=10&price_max=25", ["hammer", "saw"]),
        ("price_max=9.99", ["kite", "ball"]),
        ("stock_max=5", ["hammer", "kite", "drill"]),
        ("public=false", ["ball"]),
        ("shop={north}&stock_max=4", ["hammer"]),
    ],
)
def test_product_filters(viewer_client: Client, catalog, query: str, expected: list[str]) -> None:
    query = query.format(**{k: getattr(v, "pk", v) for k, v in catalog.items()})
    response = viewer_client.get(f"/products/?{query}")
    assert response.status_code == 200
    assert row_ids(response) == sorted(catalog[name].pk for name in expected)


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("price", ["ball", "kite", "hammer", "saw", "drill"]),
        ("-price", ["drill", "saw", "hammer", "kite", "ball"]),
        ("name", ["ball", "drill", "saw", "kite", "hammer"]),
        ("-stock", ["saw", "ball", "drill", "hammer", "kite"]),
    ],
)
def test_product_sorting(viewer_client: Client, catalog, sort: str, expected: list[str]) -> None:
    response = viewer_client.get(f"/products/?sort={sort}")
    assert row_ids(response) == [catalog[name].pk for name in expected]


def test_paging_walks_the_rows_in_order(viewer_client: Client, catalog) -> None:
    seen = []
    for page in (1, 2, 3):
        response = viewer_client.get(f"/products/?sort=price&per_page=25&page={page}")
        seen.append(row_ids(response))
    assert seen[0] == [catalog[n].pk for n in ("ball", "kite", "hammer", "saw", "drill")]
    # Pages past the end show the last page with a notice instead of an error.
    assert seen[1] == seen[0]
    assert "past the end" in response.content.decode()


def test_pages_split_rows_and_link_onwards(viewer_client: Client) -> None:
    shop, category = f.shop(), f.category()
    made = [f.product(shop=shop, category=category) for _ in range(60)]
    first = viewer_client.get("/products/?per_page=25")
    third = viewer_client.get("/products/?per_page=25&page=3")
    assert row_ids(first) == [p.pk for p in made[:25]]
    assert row_ids(third) == [p.pk for p in made[50:]]
    html = first.content.decode()
    assert 'rel="next"' in html
    assert 'hx-get="?per_page=25&amp;page=2"' in html
    assert "60 results" in html
    assert 'rel="next"' not in third.content.decode()


def test_htmx_request_gets_only_the_table(viewer_client: Client, catalog) -> None:
    response = viewer_client.get("/products/?sort=-price", HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="table"')
    assert "<html" not in html
    assert 'id="filter-form"' not in html
    assert row_ids(response)[0] == catalog["drill"].pk


def test_page_works_without_javascript(viewer_client: Client, catalog) -> None:
    """Every control is a real link or a GET form with an action."""
    html = viewer_client.get("/products/").content.decode()
    assert '<form id="filter-form" method="get" action="/products/"' in html
    assert 'href="?sort=price"' in html
    # ...and carries the htmx wiring for the swap, the URL push and stale-request cancelling.
    assert 'hx-target="#table"' in html
    assert 'hx-push-url="true"' in html
    assert 'hx-sync="#table-region:replace"' in html


# --- row actions ------------------------------------------------------------------


def test_row_actions_follow_permissions(
    viewer_client: Client, operator_client: Client, catalog
) -> None:
    html = viewer_client.get("/products/").content.decode()
    assert ">Adjust<" not in html
    assert ">Edit<" not in html
    html = operator_client.get("/products/").content.decode()
    assert html.count(">Adjust<") == 5
    assert html.count(">Edit<") == 5
    hammer = catalog["hammer"]
    # The action's own view serves its form (fresh idempotency key) into the dialog.
    assert f'hx-get="/products/{hammer.pk}/adjust/"' in html
    assert 'hx-target="#action-dialog-body"' in html
    # Each button names its row for a screen reader: "Adjust Hammer".
    assert f'Adjust<span class="visually-hidden"> {hammer.name}</span>' in html


def test_price_changes_are_offered_only_with_their_permission(
    operator_client: Client, superuser_client: Client, catalog
) -> None:
    assert "Raise or lower prices" not in operator_client.get("/products/").content.decode()
    html = superuser_client.get("/products/").content.decode()
    assert 'href="/products/prices/"' in html


def test_mark_paid_only_for_unpaid_orders_and_permitted_users(
    viewer_client: Client, operator_client: Client, catalog
) -> None:
    f.order(shop=catalog["north"], lines=[(catalog["saw"], 1)], paid=True)
    f.order(shop=catalog["north"], lines=[(catalog["saw"], 1)], paid=False)
    assert "Mark paid" not in viewer_client.get("/orders/").content.decode()
    assert operator_client.get("/orders/").content.decode().count("Mark paid") == 1


# --- orders ------------------------------------------------------------------------


@pytest.fixture
def orders(catalog) -> dict[str, Order]:
    north, south = catalog["north"], catalog["south"]
    return {
        "small": f.order(
            shop=north,
            lines=[(catalog["kite"], 1)],
            created_at=datetime(2026, 1, 10, 9, tzinfo=UTC),
        ),
        "big": f.order(
            shop=north,
            lines=[(catalog["drill"], 2), (catalog["saw"], 1)],
            paid=True,
            created_at=datetime(2026, 2, 1, 23, 59, tzinfo=UTC),
        ),
        "mid": f.order(
            shop=south,
            lines=[(catalog["hammer"], 1), (catalog["ball"], 3)],
            created_at=datetime(2026, 2, 2, 0, 0, tzinfo=UTC),
        ),
    }


def test_orders_show_annotated_item_count_and_total(viewer_client: Client, orders) -> None:
    html = viewer_client.get("/orders/").content.decode()
    big_row = html.split(f'data-row-id="{orders["big"].pk}"')[1].split("</tr>")[0]
    # 2 x 89.00 + 1 x 25.00 = 203.00 over 2 lines
    assert "203.00" in big_row
    assert re.search(r">\s*2\s*<", big_row)


@pytest.fixture
def order_states(catalog) -> dict[str, Order]:
    """One order in each state: open, paid, cancelled, refunded (paid, then cancelled)."""
    shop, kite = catalog["north"], catalog["kite"]
    made = {
        "open": f.order(shop=shop, lines=[(kite, 1)], customer_id=41),
        "paid": f.order(shop=shop, lines=[(kite, 1)], paid=True),
        "cancelled": f.order(shop=shop, lines=[(kite, 1)]),
        "refunded": f.order(shop=shop, lines=[(kite, 1)], paid=True),
    }
    Order.objects.filter(pk__in=[made["cancelled"].pk, made["refunded"].pk]).update(
        cancelled_at=timezone.now()
    )
    rollups_rebuild()  # changed behind the services' back: the headline reads rollups
    return made


def _row(html: str, pk: int) -> str:
    return html.split(f'data-row-id="{pk}"')[1].split("</tr>")[0]


def test_orders_tell_their_state_with_a_badge(viewer_client: Client, order_states) -> None:
    html = viewer_client.get("/orders/").content.decode()
    for state, order in order_states.items():
        assert re.search(rf'class="badge [^"]*"[^>]*>{state}</span>', _row(html, order.pk))
    # The customer is a link to the customer's page, not a bare id.
    assert 'href="/customers/41/"' in _row(html, order_states["open"].pk)


@pytest.mark.parametrize("state", ["open", "paid", "cancelled", "refunded"])
def test_the_status_filter_agrees_with_the_headline_figures(
    viewer_client: Client, order_states, state: str
) -> None:
    response = viewer_client.get(f"/orders/?status={state}")
    assert row_ids(response) == [order_states[state].pk]
    if state == "open":
        # The dashboard's "Open orders" (the headline figures panel) counts the same orders.
        index = viewer_client.get("/panels/headline/", HTTP_HX_REQUEST="true").content.decode()
        figure = re.search(r'data-testid="figure-open-orders">(\d+)<', index)
        assert figure
        assert int(figure.group(1)) == len(row_ids(response))


def test_a_bad_status_is_a_notice_not_an_error(viewer_client: Client, order_states) -> None:
    response = viewer_client.get("/orders/?status=lost")
    assert response.status_code == 200
    assert "Ignored invalid filters: Status." in response.content.decode()
    assert len(row_ids(response)) == 4


def test_product_rows_link_to_their_ledger_and_ledger_lines_to_their_order(
    viewer_client: Client, catalog, operator: User
) -> None:
    from store.services.orders import order_place

    hammer = catalog["hammer"]
    html = viewer_client.get("/products/").content.decode()
    assert f'href="/stock/ledger/?product={hammer.pk}"' in _row(html, hammer.pk)
    order = order_place(user=operator, shop=hammer.shop, lines=[(hammer.pk, 1)])
    ledger = viewer_client.get(f"/stock/ledger/?product={hammer.pk}").content.decode()
    assert f'href="/orders/?id={order.pk}"' in ledger
    assert row_ids(viewer_client.get(f"/orders/?id={order.pk}")) == [order.pk]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["mid", "big", "small"]),
        ("paid=true", ["big"]),
        ("paid=false", ["mid", "small"]),
        ("shop={south}", ["mid"]),
        ("created_from=2026-02-01", ["mid", "big"]),
        ("created_to=2026-02-01", ["big", "small"]),
        ("created_from=2026-02-01&created_to=2026-02-01", ["big"]),
        ("total_min=20&total_max=40", ["mid"]),
        ("total_min=203", ["big"]),
        ("sort=total", ["small", "mid", "big"]),
        ("sort=-item_count", ["mid", "big", "small"]),
    ],
)
def test_order_filters_and_sorting(
    viewer_client: Client, catalog, orders, query: str, expected: list[str]
) -> None:
    query = query.format(**{k: getattr(v, "pk", v) for k, v in catalog.items()})
    response = viewer_client.get(f"/orders/?{query}")
    assert response.status_code == 200
    assert row_ids(response) == [orders[name].pk for name in expected]


# --- ledger ------------------------------------------------------------------------


def movement(product: Product, delta: int, *, actor: User | None, method: str, when: datetime):
    made = StockMovement.objects.create(
        product=product,
        delta=delta,
        stock_before=100,
        stock_after=100 + delta,
        reason=f"test {delta:+d}",
        method=method,
        actor=actor,
    )
    # created_at is auto_now_add: set the time the test needs afterwards.
    StockMovement.objects.filter(pk=made.pk).update(created_at=when)
    return made


@pytest.fixture
def ledger(catalog, operator: User, viewer: User) -> dict[str, StockMovement]:
    return {
        "a": movement(
            catalog["saw"],
            -2,
            actor=operator,
            method="adjust",
            when=datetime(2026, 3, 1, tzinfo=UTC),
        ),
        "b": movement(
            catalog["saw"],
            5,
            actor=viewer,
            method="optimistic",
            when=datetime(2026, 3, 2, tzinfo=UTC),
        ),
        "c": movement(
            catalog["kite"], -1, actor=None, method="order", when=datetime(2026, 3, 3, tzinfo=UTC)
        ),
    }


def ledger_ids(response) -> list[int]:
    """Ledger rows are identified by their reason text ("test -2"), in page order."""
    return re.findall(r"test ([+-]\d+)", response.content.decode())


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["-1", "+5", "-2"]),
        ("product={saw}", ["+5", "-2"]),
        ("product=T-does-not-exist", []),
        ("actor={operator}", ["-2"]),
        ("method=order", ["-1"]),
        ("created_from=2026-03-02", ["-1", "+5"]),
        ("created_to=2026-03-01", ["-2"]),
        ("sort=delta", ["-2", "-1", "+5"]),
    ],
)
def test_ledger_filters_and_sorting(
    viewer_client: Client, catalog, ledger, operator: User, query: str, expected: list[str]
) -> None:
    values = {k: getattr(v, "pk", v) for k, v in catalog.items()} | {"operator": operator.pk}
    response = viewer_client.get(f"/stock/ledger/?{query.format(**values)}")
    assert response.status_code == 200
    assert ledger_ids(response) == expected


def test_ledger_finds_a_product_by_sku(viewer_client: Client, catalog, ledger) -> None:
    response = viewer_client.get(f"/stock/ledger/?product={catalog['kite'].sku}")
    assert ledger_ids(response) == ["-1"]


# --- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "notice"),
    [
        ("sort=password", "invalid sort column"),
        ("page=0", "invalid page"),
        ("page=abc", "invalid page"),
        ("per_page=1000000", "invalid page size"),
        ("price_min=1e999", "Ignored invalid filters: Price from"),
        ("price_min=abc&stock_max=-1", "Ignored invalid filters: Price from, Stock at or under"),
        ("shop=99999999999999999999999", "Ignored invalid filters: Shop"),
    ],
)
def test_bad_query_strings_give_a_notice_and_defaults(
    viewer_client: Client, catalog, query: str, notice: str
) -> None:
    response = viewer_client.get(f"/products/?{query}")
    assert response.status_code == 200
    assert notice in response.content.decode()
    assert len(row_ids(response)) == 5


def test_bad_dates_are_reported_not_raised(viewer_client: Client, orders) -> None:
    response = viewer_client.get("/orders/?created_from=2026-13-45&created_to=yesterday")
    assert response.status_code == 200
    assert "Ignored invalid filters: Created from, Created to" in response.content.decode()
    assert len(row_ids(response)) == 3


@pytest.mark.parametrize("fmt", ["pdf", "", "CSV"])
def test_unknown_export_format_is_a_400_with_a_message(
    viewer_client: Client, catalog, fmt: str
) -> None:
    response = viewer_client.get(f"/products/?_export={fmt}")
    assert response.status_code == 400
    assert f"Unknown export format &#x27;{fmt}&#x27;" in response.content.decode()


_params = st.sampled_from(
    [
        "page",
        "per_page",
        "sort",
        "_export",
        "q",
        "shop",
        "category",
        "price_min",
        "price_max",
        "stock_max",
        "public",
        "paid",
        "created_from",
        "created_to",
        "total_min",
        "total_max",
        "product",
        "actor",
        "method",
    ]
)
_values = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(["-price", "total", "NaN", "Infinity", "1e999", "9999-12-31", "0001-01-01"]),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
)


@pytest.mark.parametrize("url", ["/products/", "/orders/", "/stock/ledger/"])
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(query=st.lists(st.tuples(_params, _values), max_size=5))
def test_no_query_string_breaks_a_table(
    viewer_client: Client, url: str, query: list[tuple[str, str]]
) -> None:
    data = [(k, v) for k, v in query if k != "_export" or v in {"csv", "json", ""}]
    if any(k == "_export" for k, _ in query) and not any(k == "_export" for k, _ in data):
        data.append(("_export", "pdf"))  # unknown formats still exercise the error path
    response = viewer_client.get(url, data=dict(data))
    assert response.status_code in (200, 400)
    if response.streaming:
        b"".join(response.streaming_content)


# --- query counts --------------------------------------------------------------------


def _fill(rows: int) -> None:
    """``rows`` products, orders (two lines each) and ledger rows."""
    shop, category = f.shop(), f.category()
    products = Product.objects.bulk_create(
        Product(
            shop=shop,
            category=category,
            name=f"Bulk {n}",
            sku=f"B-{n:08d}",
            price=n,
            stock=n % 50,
            initial_stock=n % 50,
        )
        for n in range(rows)
    )
    now = timezone.now()
    made = Order.objects.bulk_create(
        Order(shop=shop, customer_id=n, created_at=now) for n in range(rows)
    )
    OrderItem.objects.bulk_create(
        OrderItem(order=o, product=products[i], quantity=1 + i, unit_price=100)
        for o in made
        for i in range(2)
    )
    StockMovement.objects.bulk_create(
        StockMovement(
            product=products[n % 3], delta=1, stock_before=n, stock_after=n + 1, method="adjust"
        )
        for n in range(rows)
    )


@pytest.mark.parametrize("url", ["/products/", "/orders/", "/stock/ledger/"])
@pytest.mark.parametrize("rows", [10, 1000])
def test_query_count_does_not_grow_with_rows(
    operator_client: Client, django_assert_max_num_queries, url: str, rows: int
) -> None:
    _fill(rows)
    # session, user, permissions (2), page rows, result count (+ planner estimate on
    # PostgreSQL), filter choices (shops/categories or users): whatever the data size.
    with django_assert_max_num_queries(10):
        response = operator_client.get(url + "?per_page=100")
    assert response.status_code == 200
    assert len(row_ids(response)) == min(rows, 100)


# --- paging without COUNT(*) -----------------------------------------------------------


def test_result_count_wording() -> None:
    assert str(ResultCount(1234, exact=True)) == "1,234"
    assert str(ResultCount(1_003_456, exact=False)) == "about 1,000,000"
    assert str(ResultCount(123_456, exact=False)) == "about 120,000"
    assert str(ResultCount(10_000, exact=False, at_least=True)) == "more than 10,000"


def test_no_page_counts_the_whole_table(viewer_client: Client) -> None:
    _fill(30)
    with CaptureQueriesContext(connection) as queries:
        response = viewer_client.get("/products/?per_page=25&page=1")
    assert "30 results" in response.content.decode()
    counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts
    assert all("LIMIT" in sql.upper() for sql in counts)  # bounded, never the whole table


def test_a_last_page_knows_its_exact_count_without_counting(viewer_client: Client) -> None:
    _fill(30)
    with CaptureQueriesContext(connection) as queries:
        response = viewer_client.get("/products/?per_page=25&page=2")
    assert "30 results" in response.content.decode()
    assert not [q for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]


@pytest.mark.postgres
def test_planner_estimate_reads_no_rows() -> None:
    _fill(50)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE store_product")
    estimate = planner_estimate(Product.objects.all())
    assert estimate is not None
    assert 25 <= estimate <= 100


def test_planner_estimate_is_postgresql_only() -> None:
    estimate = planner_estimate(Product.objects.all())
    assert (estimate is None) == (connection.vendor != "postgresql")


def test_an_empty_result_says_so(viewer_client: Client) -> None:
    html = viewer_client.get("/stock/ledger/").content.decode()
    assert "No stock movements match these filters." in html
    assert re.search(r'data-testid="result-count"[^>]*>0 results<', html)


def test_tables_refresh_themselves_after_actions_elsewhere(viewer_client: Client, orders) -> None:
    """The table re-reads its own URL (never an export) when an action's event fires."""
    html = viewer_client.get("/orders/?paid=false&sort=total", HTTP_HX_REQUEST="true").content
    html = html.decode()
    assert 'hx-get="/orders/?paid=false&amp;sort=total"' in html
    assert "order-paid from:body" in html
    assert "stock-changed from:body" in html
    bad = viewer_client.get("/orders/?paid=false&_export=pdf").content.decode()
    assert 'hx-get="/orders/?paid=false"' in bad


def test_ledger_shows_method_labels_and_a_dash_for_no_actor(viewer_client: Client, ledger) -> None:
    html = viewer_client.get("/stock/ledger/?method=order").content.decode()
    row = html.split(f'data-row-id="{ledger["c"].pk}"')[1].split("</tr>")[0]
    assert "Order placed" in row
    assert "<td>—</td>" in row
