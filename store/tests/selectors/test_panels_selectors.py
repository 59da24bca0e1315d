"""Each dashboard selector against figures worked out by hand on a tiny store."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from store.models import Product
from store.selectors.rankings import rank_window
from store.selectors.shops import shop_activity
from store.selectors.stats import category_groups, category_stats
from store.selectors.stock import low_stock
from store.selectors.trending import trending
from store.tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def store():
    """Two shops, two categories, five products, three orders (two paid)."""
    north, south = factories.shop("North"), factories.shop("South")
    books, tools = factories.category("Books"), factories.category("Tools")
    p = {
        "atlas": factories.product(shop=north, category=books, price=3000, stock=0, name="Atlas"),
        "bible": factories.product(shop=north, category=books, price=1000, stock=2, name="Bible"),
        "comic": factories.product(shop=south, category=books, price=1000, stock=40, name="Comic"),
        "drill": factories.product(shop=south, category=tools, price=9000, stock=5, name="Drill"),
        "file": factories.product(
            shop=south, category=tools, price=500, stock=7, name="File", is_public=False
        ),
    }
    now = timezone.now()
    factories.order(
        shop=north,
        lines=[(p["atlas"], 2), (p["bible"], 1)],
        paid=True,
        created_at=now - timedelta(hours=2),
    )  # 7,000
    factories.order(
        shop=south,
        lines=[(p["drill"], 1), (p["comic"], 3)],
        paid=True,
        created_at=now - timedelta(days=3),
    )  # 12,000
    factories.order(shop=south, lines=[(p["file"], 10)], paid=False)  # open, no revenue
    return {"shops": (north, south), "now": now, **p}


def test_category_stats(store) -> None:
    stats = {s.name: s for s in category_stats(low_stock_threshold=5, sort="name")}
    books, tools = stats["Books"], stats["Tools"]
    assert (books.products, books.min_price, books.max_price) == (3, 1000, 3000)
    assert books.avg_price == pytest.approx(5000 / 3)
    assert (books.stock, books.low_stock, books.revenue) == (42, 2, 2 * 3000 + 1000 + 3 * 1000)
    assert (tools.products, tools.stock, tools.low_stock, tools.revenue) == (2, 12, 1, 9000)


def test_category_stats_sorts_by_any_column(store) -> None:
    by = lambda sort: [s.name for s in category_stats(low_stock_threshold=5, sort=sort)]  # noqa: E731
    assert by("-revenue") == ["Books", "Tools"]
    assert by("revenue") == ["Tools", "Books"]
    assert by("-max_price") == ["Tools", "Books"]
    assert by("stock") == ["Tools", "Books"]
    with pytest.raises(ValueError, match="unknown sort"):
        category_stats(low_stock_threshold=5, sort="password")


def test_category_without_products_sorts_last(store) -> None:
    factories.category("Empty")
    assert [s.name for s in category_stats(low_stock_threshold=5, sort="-avg_price")][-1] == "Empty"
    assert [s.name for s in category_stats(low_stock_threshold=5, sort="avg_price")][-1] == "Empty"


def test_category_groups_having_threshold(store) -> None:
    groups = category_groups(min_avg_price=1500)
    # North/Books avg 2000, South/Tools avg 4750, South/Books avg 1000 (filtered out)
    assert [(g.shop, g.category, g.products, g.avg_price) for g in groups] == [
        ("South", "Tools", 2, 4750.0),
        ("North", "Books", 2, 2000.0),
    ]
    assert len(category_groups(min_avg_price=0)) == 3


@pytest.mark.parametrize(
    ("function", "expected_books"),
    [
        # Books prices: Atlas 3000, Bible 1000, Comic 1000 (a tie)
        ("rank", [(1, "Atlas"), (2, "Bible"), (2, "Comic")]),
        ("dense_rank", [(1, "Atlas"), (2, "Bible"), (2, "Comic")]),
        ("row_number", [(1, "Atlas"), (2, "Bible")]),
    ],
)
def test_rank_window_by_price(store, function, expected_books) -> None:
    rows = rank_window(by="price", function=function, top=2)
    assert [(r.position, r.name) for r in rows if r.category == "Books"] == expected_books
    assert [(r.position, r.name) for r in rows if r.category == "Tools"] == [
        (1, "Drill"),
        (2, "File"),
    ]


def test_rank_and_dense_rank_differ_after_a_tie(store) -> None:
    factories.product(
        shop=store["shops"][0], category=store["atlas"].category, price=500, name="Zine"
    )
    ranks = {r.name: r.position for r in rank_window(by="price", function="rank", top=5)}
    dense = {r.name: r.position for r in rank_window(by="price", function="dense_rank", top=5)}
    assert (ranks["Zine"], dense["Zine"]) == (4, 3)


def test_rank_window_by_revenue(store) -> None:
    rows = rank_window(by="revenue", function="row_number", top=1)
    # Books revenue: Atlas 6000, Comic 3000, Bible 1000; Tools: Drill 9000, File unpaid
    assert [(r.category, r.name, r.value) for r in rows] == [
        ("Books", "Atlas", 6000),
        ("Tools", "Drill", 9000),
    ]
    with pytest.raises(ValueError, match="top must be"):
        rank_window(by="price", function="rank", top=21)


def test_low_stock_severity(store) -> None:
    result = low_stock(threshold=5)
    assert (result.total, result.out, result.critical, result.low) == (3, 1, 1, 1)
    assert [(r.name, r.severity) for r in result.rows] == [
        ("Atlas", "out"),
        ("Bible", "critical"),
        ("Drill", "low"),
    ]
    assert result.rows[0].shop == "North"
    assert result.rows[0].category == "Books"
    assert low_stock(threshold=1).total == 1
    assert len(low_stock(threshold=5, limit=2).rows) == 2


def test_trending_windows(store) -> None:
    day = trending(window="24h", now=store["now"])
    stock = dict(Product.objects.values_list("name", "stock"))
    assert [p.stock for p in day.products] == [stock["Atlas"], stock["Bible"]]
    assert [(p.name, p.revenue, p.units) for p in day.products] == [
        ("Atlas", 6000, 2),
        ("Bible", 1000, 1),
    ]
    assert len(day.buckets) in (24, 25)
    assert sum(day.products[0].series) == 6000
    week = trending(window="7d", now=store["now"])
    assert [(p.name, p.revenue) for p in week.products] == [
        ("Drill", 9000),
        ("Atlas", 6000),
        ("Comic", 3000),
        ("Bible", 1000),
    ]
    drill = week.products[0]
    assert sum(drill.series) == 9000
    assert drill.series.count(0) == len(drill.series) - 1
    assert trending(window="30d", now=store["now"]).products[0].name == "Drill"
    with pytest.raises(ValueError, match="unknown trending window"):
        trending(window="1y")


def test_trending_limit(store) -> None:
    assert [p.name for p in trending(window="7d", now=store["now"], limit=1).products] == ["Drill"]


def test_shop_activity(store) -> None:
    _north, _south = store["shops"]
    quiet = factories.shop("Quiet")
    rows = shop_activity()
    assert [r.name for r in rows] == ["North", "South", "Quiet"]
    by_name = {r.name: r for r in rows}
    assert by_name["North"].last_paid_at == store["now"] - timedelta(hours=2)
    assert (by_name["South"].open_orders, by_name["North"].open_orders) == (1, 0)
    assert by_name["South"].has_public_products
    assert not by_name["Quiet"].has_public_products
    assert by_name["Quiet"].last_paid_at is None
    assert quiet.pk == by_name["Quiet"].shop_id
