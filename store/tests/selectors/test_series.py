"""Time series and headline trends: what they show, and that their cost is bounded."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from store import samples
from store.models import StockMovement
from store.selectors.ops import ops_series
from store.selectors.overview import headline_figures
from store.selectors.series import sales_series, stock_series, time_range
from store.services.stock import stock_adjust
from store.tests import factories

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 30, 12, 30, tzinfo=UTC)


def test_ranges_are_whole_hours_and_days_past_three_days() -> None:
    day = time_range(name="24h", now=NOW)
    assert (day.start, day.end, day.bucket) == (
        datetime(2026, 11, 29, 13, tzinfo=UTC),
        datetime(2026, 11, 30, 13, tzinfo=UTC),
        "hour",
    )
    assert len(day.buckets()) == 24
    week = time_range(name="7d", now=NOW)
    assert week.bucket == "day"
    assert len(week.buckets()) == 8
    custom = time_range(name="custom", first=date(2026, 11, 1), last=date(2026, 11, 2), now=NOW)
    assert (custom.start, custom.end, custom.bucket) == (
        datetime(2026, 11, 1, tzinfo=UTC),
        datetime(2026, 11, 3, tzinfo=UTC),
        "hour",
    )
    # A custom range never reaches past the current hour.
    today = time_range(name="custom", first=date(2026, 11, 30), last=date(2026, 12, 5), now=NOW)
    assert today.end == datetime(2026, 11, 30, 13, tzinfo=UTC)


@pytest.fixture
def two_shops() -> dict[str, object]:
    main, other = factories.shop("Main"), factories.shop("Other")
    tools = factories.category("Tools")
    hammer = factories.product(shop=main, category=tools, price=1000, stock=50)
    saw = factories.product(shop=other, category=tools, price=2500, stock=50)
    now = timezone.now()
    factories.order(shop=main, lines=[(hammer, 2)], paid=True, created_at=now)
    factories.order(shop=main, lines=[(hammer, 1)], paid=True, created_at=now - timedelta(hours=2))
    factories.order(shop=other, lines=[(saw, 1)], paid=True, created_at=now - timedelta(hours=2))
    # A day and a half ago: outside 24 h, inside 7 d.
    factories.order(shop=main, lines=[(hammer, 5)], paid=True, created_at=now - timedelta(hours=36))
    factories.order(shop=main, lines=[(hammer, 1)], created_at=now)  # open: not counted
    return {"main": main, "other": other, "hammer": hammer, "now": now}


def test_sales_per_hour_for_all_shops_or_one(two_shops, django_assert_max_num_queries) -> None:
    now = two_shops["now"]
    with django_assert_max_num_queries(1):
        every = sales_series(span=time_range(name="24h", now=now))
    assert (every.orders, every.revenue) == (3, 2000 + 1000 + 2500)
    assert len(every.points) == 24
    assert every.range.bucket == "hour"
    assert every.points[-1].orders == 1
    assert every.points[-3].orders == 2
    with django_assert_max_num_queries(2):  # + the shop's name
        main = sales_series(span=time_range(name="24h", now=now), shop_id=two_shops["main"].pk)
    assert (main.orders, main.revenue, main.shop_name) == (2, 3000, "Main")


def test_sales_over_seven_days_are_per_day(two_shops) -> None:
    week = sales_series(span=time_range(name="7d", now=two_shops["now"]))
    assert week.range.bucket == "day"
    assert week.orders == 4
    assert week.revenue == 10500
    assert sum(p.orders for p in week.points[-3:]) == 4


def test_stock_moves_per_hour_in_and_out(two_shops, django_assert_max_num_queries) -> None:
    actor = User.objects.create_user("mover")
    stock_adjust(product=two_shops["hammer"].pk, delta=7, actor=actor)
    stock_adjust(product=two_shops["hammer"].pk, delta=-3, actor=actor)
    old = stock_adjust(product=two_shops["hammer"].pk, delta=-1, actor=actor)
    # Moved to three days ago: outside the 24 h range.
    StockMovement.objects.filter(pk=old.movement.pk).update(
        created_at=timezone.now() - timedelta(days=3)
    )
    with django_assert_max_num_queries(1):
        s = stock_series(span=time_range(name="24h"))
    assert (s.units_in, s.units_out) == (7, 3)
    assert s.points[-1].moves == 2
    assert stock_series(span=time_range(name="7d")).units_out == 4


def test_headline_figures_trend_against_a_day_earlier(
    two_shops, django_assert_max_num_queries
) -> None:
    actor = User.objects.create_user("mover")
    stock_adjust(product=two_shops["hammer"].pk, delta=-4, actor=actor)
    with django_assert_max_num_queries(5):
        figures = {f.key: f for f in headline_figures(low_stock_threshold=5).figures}
    paid = figures["paid-24h"]
    assert (paid.value, paid.change, len(paid.series)) == (3, 3 - 1, 24)
    revenue = figures["revenue-24h"]
    assert (revenue.value, revenue.change) == (5500, 5500 - 5000)
    units = figures["units"]
    assert units.value == 96
    assert units.change == -4
    assert units.series[-1] == 96
    assert figures["products"].change is None


def test_samples_stay_bounded_and_are_per_minute() -> None:
    start = 1_800_000_000.0
    for i in range(samples.MAX_SAMPLES + 200):
        samples.sample_record("databases", {"latency:default": float(i)}, at=start + i * 5)
    end = start + (samples.MAX_SAMPLES + 199) * 5
    kept = samples.samples_recent("databases", now=end)
    assert len(kept) <= samples.MAX_SAMPLES
    # Closer together than the minimum gap: not kept.
    samples.sample_record("databases", {"latency:default": 1.0}, at=end + 1)
    assert len(samples.samples_recent("databases", now=end + 1)) == len(kept)
    samples.sample_record("outbox", {"backlog": 12}, at=end)
    ops = ops_series(now=end)
    assert len(ops.minutes) == 60
    assert len(ops.latency["default"]) == 60
    assert ops.latency["default"][-1] == samples.MAX_SAMPLES + 199  # the minute's highest
    assert ops.backlog[-1] == 12
