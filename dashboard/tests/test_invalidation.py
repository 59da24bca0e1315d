"""A write invalidates what it changed, not every panel of every user."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.http import QueryDict

from dashboard import panel_runs, panels
from store.caching import namespace_versions
from store.services.orders import order_mark_paid, order_place
from store.services.stock import stock_adjust
from store.tests import factories

pytestmark = pytest.mark.django_db


def _stamps(user: User) -> dict[str, str]:
    """Every panel's fragment stamp: the versions its rendering is kept under (default
    parameters, plus both rank orders)."""
    runs = {
        name: panel_runs.start(panel, QueryDict(), user) for name, panel in panels.PANELS.items()
    }
    revenue = QueryDict("rank-window-by=revenue")
    runs["rank-window:revenue"] = panel_runs.start(panels.PANELS["rank-window"], revenue, user)
    return {name: run.versions_key for name, run in runs.items()}


def _changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {name for name in before if before[name] != after[name]}


def test_an_adjustment_far_from_low_stock_leaves_the_low_stock_list_alone(
    operator: User, django_capture_on_commit_callbacks
) -> None:
    shop, category = factories.shop(), factories.category()
    plenty = factories.product(shop=shop, category=category, stock=500)
    scarce = factories.product(shop=shop, category=category, stock=3)
    before = _stamps(operator)
    with django_capture_on_commit_callbacks(execute=True):
        stock_adjust(product=plenty.pk, delta=-1, actor=operator)
    after = _stamps(operator)
    # The outbox panel counts the event the adjustment enqueued; the headline figures
    # (units in stock) and the stock movements chart show the move.
    assert _changed(before, after) == {
        "category-stats",
        "trending",
        "outbox",
        "headline",
        "stock-series",
    }
    with django_capture_on_commit_callbacks(execute=True):
        stock_adjust(product=scarce.pk, delta=-1, actor=operator)
    assert "low-stock" in _changed(after, _stamps(operator))


def test_a_payment_leaves_the_price_ranking_and_stock_panels_alone(
    operator: User, django_capture_on_commit_callbacks
) -> None:
    shop, category = factories.shop(), factories.category()
    product = factories.product(shop=shop, category=category, stock=50)
    with django_capture_on_commit_callbacks(execute=True):
        order = order_place(user=operator, shop=shop, lines=[(product.pk, 1)])
    before = _stamps(operator)
    versions = namespace_versions("stock", "lowstock", "catalog")
    with django_capture_on_commit_callbacks(execute=True):
        order_mark_paid(order=order.pk, actor=operator)
    changed = _changed(before, _stamps(operator))
    assert changed == {
        "category-stats",
        "trending",
        "rank-window:revenue",
        "shop-activity",
        "outbox",
        "headline",  # paid in 24 h, net revenue
        "sales-series",
    }
    assert namespace_versions("stock", "lowstock", "catalog") == versions
