"""Every rollup-backed panel shows what the full scan it replaced shows, net of refunds."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from store.models import Order, Product
from store.selectors.overview import store_overview
from store.selectors.rankings import rank_window
from store.selectors.rollups import rollup_differences
from store.selectors.shops import shop_activity
from store.selectors.stats import category_groups, category_stats
from store.selectors.trending import trending
from store.services.orders import order_cancel
from store.services.seeding import SeedPlan, seed_demo
from store.services.stock import stock_adjust
from store.tests.selectors import full_scan

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)


@pytest.fixture
def seeded() -> None:
    """A seeded store with writes on top: refunds of paid orders, stock moved to 0."""
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    seed_demo(plan=SeedPlan(shops=4, categories=5, products=400, orders=900, customers=50, now=now))
    actor = User.objects.create_user("writer")
    recent = Order.objects.filter(paid=True, cancelled_at__isnull=True).order_by("-paid_at")
    for order in list(recent[:15]) + list(recent.order_by("paid_at")[:5]):
        order_cancel(order=order.pk, actor=actor, reason="refund", refunded=True)
    for product in Product.objects.filter(stock__gt=0).order_by("pk")[:10]:
        stock_adjust(product=product.pk, delta=-product.stock, actor=actor)
    assert rollup_differences() == []


def test_category_stats_match_the_full_scan(seeded: None) -> None:
    shown = {
        s.name: (
            s.products,
            round(s.avg_price, 6) if s.avg_price is not None else None,
            s.min_price,
            s.max_price,
            s.stock,
            s.low_stock,
            s.revenue,
        )
        for s in category_stats(low_stock_threshold=5, sort="name")
    }
    assert shown == full_scan.category_stats(5)
    other = {s.name: s.low_stock for s in category_stats(low_stock_threshold=12, sort="name")}
    assert other == {name: row[5] for name, row in full_scan.category_stats(12).items()}


# One seeded store per test (seeding is the slow part), every parameter set inside.


def test_category_groups_match_the_full_scan(seeded: None) -> None:
    for threshold in (0, 20_000, 60_000):
        shown = [
            (g.shop, g.category, g.products, round(g.avg_price, 6))
            for g in category_groups(min_avg_price=threshold)
        ]
        assert shown == full_scan.category_groups(threshold), threshold


def test_rank_windows_match_the_full_scan(seeded: None) -> None:
    for by in ("price", "revenue"):
        for function in ("rank", "dense_rank", "row_number"):
            for top in (1, 3, 7):
                shown = [
                    (r.category, r.position, r.product_id, r.value)
                    for r in rank_window(by=by, function=function, top=top)  # type: ignore[arg-type]
                ]
                assert shown == full_scan.rank_window(by, function, top), (by, function, top)


def test_trending_matches_the_full_scan(seeded: None) -> None:
    now = timezone.now()
    for window in ("24h", "7d", "30d"):
        shown = [
            (p.product_id, p.revenue, p.units) for p in trending(window=window, now=now).products
        ]
        assert shown == full_scan.trending(window, now), window
        assert shown, window  # the seeded window has sales


def test_shop_activity_matches_the_full_scan(seeded: None) -> None:
    shown = [
        (s.name, s.last_paid_at, s.has_public_products, s.open_orders) for s in shop_activity()
    ]
    assert shown == full_scan.shop_activity()


def test_headline_figures_match_the_full_scan(seeded: None) -> None:
    now = timezone.now()
    for low in (5, 9):
        o = store_overview(low_stock_threshold=low, now=now)
        shown = (
            o.products,
            o.low_stock,
            o.out_of_stock,
            o.units_in_stock,
            o.open_orders,
            o.paid_orders_24h,
        )
        assert shown == full_scan.overview(low, now)
