"""Time series and headline trends: what they show, and that their cost is bounded."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone

from store import samples
from store.models import LedgerFold, StockMovement
from store.selectors.ops import ops_series
from store.selectors.overview import Figure, headline_figures
from store.selectors.series import sales_series, stock_series, time_range
from store.selectors.trending import window_start
from store.services.catalog import product_delete
from store.services.ledger_fold import stock_ledger_fold
from store.services.rollup_rebuild import rollups_rebuild
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
    # Both products were created this hour: a day earlier there were none, and no units.
    assert units.change == 96
    assert units.series[-1] == 96
    assert figures["products"].change == 2


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


# --- Every headline card's 24 h series, checked hour by hour against the rows ---


@pytest.fixture
def history(monkeypatch, settings) -> dict[str, object]:
    """A known history built through the services, each step at a chosen time: the
    clock is frozen for the step, and its ledger rows are stamped with it too (the
    PostgreSQL adjustment takes its time from the database's clock), before any fold
    reads them (the test folds when it chooses)."""
    settings.STOREOPS_LEDGER_FOLD_EVERY = 10**9
    from store.models import Product
    from store.services.catalog import product_save
    from store.services.orders import order_cancel, order_mark_paid, order_place
    from store.services.stock import stock_set_optimistic

    now = timezone.now()
    actor = User.objects.create_user("clerk")
    shop, tools = factories.shop("Main"), factories.category("Tools")

    def at(hours_ago: float, step, *args, **kwargs):
        when = now - timedelta(hours=hours_ago)
        mark = StockMovement.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        monkeypatch.setattr(timezone, "now", lambda: when)
        try:
            return step(*args, **kwargs)
        finally:
            monkeypatch.undo()
            StockMovement.objects.filter(pk__gt=mark).update(created_at=when)

    def new_product(name: str, stock: int) -> Product:
        return product_save(
            product=Product(
                shop=shop,
                category=tools,
                name=name,
                sku=name,
                price=100,
                stock=stock,
                initial_stock=stock,
            )
        )

    def place(product: Product, quantity: int):
        return order_place(user=actor, shop=shop, lines=[(product.pk, quantity)])

    a = at(60, new_product, "A", 50)
    b = at(60, new_product, "B", 8)
    c = at(59, new_product, "C", 3)  # low from the start
    stale = at(50, place, a, 1)  # open before the window, cancelled inside it
    refunded = at(45, place, a, 1)
    o1 = at(40, place, a, 2)
    at(35, order_mark_paid, order=refunded, actor=actor)
    at(30, order_mark_paid, order=o1, actor=actor)
    d = at(26, new_product, "D", 0)  # created out of stock, inside the window
    at(25, order_cancel, order=refunded, actor=actor, reason="refund", refunded=True)
    at(20, stock_adjust, product=b.pk, delta=-4, actor=actor)  # B goes low (4)
    o2 = at(18, place, b, 1)  # B 3
    at(12, order_cancel, order=o2, actor=actor, reason="changed mind")  # unpaid: B 4
    at(10, stock_adjust, product=b.pk, delta=10, actor=actor)  # B back from low (14)
    c.refresh_from_db()
    at(
        8, stock_set_optimistic, product=c.pk, expected_version=c.version, new_stock=0, actor=actor
    )  # C out of stock
    at(6.5, place, a, 1)  # still open
    at(5, order_cancel, order=stale, actor=actor, reason="expired")
    at(4, stock_adjust, product=d.pk, delta=7, actor=actor)  # D leaves out and low
    at(3, new_product, "E", 2)
    o4 = at(2, place, a, 3)
    at(1.5, order_mark_paid, order=o4, actor=actor)
    at(0.2, stock_adjust, product=a.pk, delta=-1, actor=actor)
    return {"now": now}


def _brute_force(end: datetime, threshold: int) -> dict[str, int]:
    """Each figure as it stood at ``end``, recomputed from every row."""
    from store.models import Order, Product

    stock = {p.pk: p.initial_stock for p in Product.objects.filter(created_at__lt=end)}
    for m in StockMovement.objects.filter(created_at__lt=end):
        stock[m.product_id] += m.delta
    open_orders = [
        o
        for o in Order.objects.filter(created_at__lt=end)
        if not (o.paid_at and o.paid_at < end) and not (o.cancelled_at and o.cancelled_at < end)
    ]
    return {
        "products": len(stock),
        "units": sum(stock.values()),
        "low-stock": sum(1 for s in stock.values() if s <= threshold),
        "out-of-stock": sum(1 for s in stock.values() if s == 0),
        "open-orders": len(open_orders),
    }


def _figures(now: datetime, threshold: int) -> dict[str, Figure]:
    return {f.key: f for f in headline_figures(low_stock_threshold=threshold, now=now).figures}


@pytest.mark.parametrize("folded", [False, True], ids=["ledger-tail", "ledger-folded"])
@pytest.mark.parametrize("threshold", [5, 3])
def test_every_headline_card_has_its_hourly_history(
    history, threshold, folded, django_assert_max_num_queries
) -> None:
    """Hour by hour, each card shows what a recount from every row gives, whether the
    ledger is still in the tail or folded into the rollup, and a rebuild from the
    base tables gives the same history the writes kept."""
    now = history["now"]
    if folded:
        stock_ledger_fold()
        stock_ledger_fold()  # PostgreSQL folds up to the previous fold's candidate
        assert LedgerFold.objects.get().folded_id == StockMovement.objects.latest("pk").pk
    # One more at a threshold other than the configured one (the overview counts it).
    configured = threshold == settings.STOREOPS_LOW_STOCK_THRESHOLD
    with django_assert_max_num_queries(5 if configured else 6):
        figures = _figures(now, threshold)
    ends = [window_start(now, timedelta(hours=48)) + timedelta(hours=i + 1) for i in range(48)]
    truth = [_brute_force(end, threshold) for end in ends]
    keys = ["products", "units", "out-of-stock", "open-orders"]
    if configured:
        keys.append("low-stock")
    else:  # the rollup keeps the configured threshold's history only
        assert (figures["low-stock"].series, figures["low-stock"].change) == ((), None)
    for key in keys:
        figure = figures[key]
        assert figure.series == tuple(t[key] for t in truth[24:]), key
        assert figure.series[-1] == figure.value, key
        assert figure.change == truth[-1][key] - truth[23][key], key
    # The history does move each of them, so the checks above are not vacuous.
    assert len({t["open-orders"] for t in truth}) > 2
    assert len({t["low-stock"] for t in truth[24:]}) > 1
    assert len({t["out-of-stock"] for t in truth[24:]}) > 1
    # More out of stock is bad news: a rise is coloured as a loss.
    assert figures["out-of-stock"].higher_is_worse

    rollups_rebuild(names=("store-hours",))
    assert _figures(now, threshold) == figures


def test_a_deleted_product_leaves_the_hours_after_its_deletion(monkeypatch) -> None:
    """The writes keep a deletion where it happened; a rebuild cannot see it (the row
    is gone) and leaves the product out of the whole history."""
    now = timezone.now()
    when = now - timedelta(hours=30)
    monkeypatch.setattr(timezone, "now", lambda: when)
    product = factories.product(shop=factories.shop(), category=factories.category(), stock=2)
    monkeypatch.undo()
    product_delete(product=product)
    products = _figures(now, 5)["products"]
    assert (products.value, products.series[0], products.change) == (0, 1, -1)
    rollups_rebuild(names=("store-hours",))
    products = _figures(now, 5)["products"]
    assert (products.value, products.series[0], products.change) == (0, 0, 0)
