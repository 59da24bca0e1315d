"""Bulk price changes: whole units, half up, versions bumped, only the filtered rows."""

from __future__ import annotations

import pytest

from store.exceptions import NothingToChange, StockLimitExceeded
from store.models import OutboxEvent, Product
from store.services.prices import PriceFilter, price_change
from store.tests import factories

pytestmark = pytest.mark.django_db


def test_prices_round_half_up_to_whole_cents_and_bump_versions(superuser) -> None:
    shop, other_shop, category = factories.shop(), factories.shop(), factories.category()
    p1 = factories.product(shop=shop, category=category, price=999)
    p2 = factories.product(shop=shop, category=category, price=10)
    untouched = factories.product(shop=other_shop, category=category, price=999)
    changed = price_change(filters=PriceFilter(shop_id=shop.pk), percent=15, actor=superuser)
    assert changed == 2
    rows = dict(Product.objects.values_list("pk", "price"))
    # 999 * 1.15 = 1148.85 -> 1149; 10 * 1.15 = 11.5 -> 12
    assert (rows[p1.pk], rows[p2.pk], rows[untouched.pk]) == (1149, 12, 999)
    assert all(isinstance(v, int) for v in rows.values())
    assert Product.objects.get(pk=p1.pk).version == 2
    assert Product.objects.get(pk=untouched.pk).version == 1
    event = OutboxEvent.objects.get(topic="price.changed", key="")
    assert event.payload["actor_id"] == superuser.pk
    assert event.payload["percent"] == 15


def test_lowering_prices_never_goes_negative(superuser) -> None:
    category = factories.category()
    p = factories.product(shop=factories.shop(), category=category, price=1)
    price_change(filters=PriceFilter(category_id=category.pk), percent=-90, actor=superuser)
    p.refresh_from_db()
    assert p.price == 0


def test_no_match_and_overflow_are_refused(superuser) -> None:
    category = factories.category()
    with pytest.raises(NothingToChange):
        price_change(filters=PriceFilter(category_id=category.pk), percent=5, actor=superuser)
    factories.product(shop=factories.shop(), category=category, price=2_000_000_000)
    with pytest.raises(StockLimitExceeded):
        price_change(filters=PriceFilter(category_id=category.pk), percent=100, actor=superuser)
    with pytest.raises(ValueError, match="percent"):
        price_change(filters=PriceFilter(), percent=0, actor=superuser)
