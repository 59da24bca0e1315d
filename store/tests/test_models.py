"""Database constraints hold on every backend: bad rows never get in."""

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import F

from store.models import OrderItem, Product, StockMovement
from store.tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def item_product() -> Product:
    return factories.product(shop=factories.shop(), category=factories.category(), stock=3)


def _violates(fn) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        fn()


def test_stock_cannot_go_negative(item_product: Product) -> None:
    _violates(lambda: Product.objects.filter(pk=item_product.pk).update(stock=F("stock") - 4))
    item_product.refresh_from_db()
    assert item_product.stock == 3


def test_rating_must_be_between_0_and_5(item_product: Product) -> None:
    _violates(lambda: Product.objects.filter(pk=item_product.pk).update(rating=6))
    _violates(lambda: Product.objects.filter(pk=item_product.pk).update(rating=-1))


def test_order_item_quantity_must_be_positive(item_product: Product) -> None:
    order = factories.order(shop=item_product.shop, lines=[(item_product, 1)])
    _violates(
        lambda: OrderItem.objects.create(
            order=order, product=item_product, quantity=0, unit_price=100
        )
    )


def test_ledger_row_must_add_up(item_product: Product) -> None:
    _violates(
        lambda: StockMovement.objects.create(
            product=item_product, delta=-1, stock_before=3, stock_after=3, method="adjust"
        )
    )
    StockMovement.objects.create(
        product=item_product, delta=-1, stock_before=3, stock_after=2, method="adjust"
    )
    assert StockMovement.objects.count() == 1


def test_low_stock_queryset(item_product: Product) -> None:
    factories.product(shop=item_product.shop, category=item_product.category, stock=50)
    assert list(Product.objects.low_stock(5)) == [item_product]


def test_the_low_stock_list_reads_its_partial_index(item_product: Product) -> None:
    """The low-stock panel's rows come from ``product_low_stock`` (stock, id WHERE
    stock <= 20) in its order, on PostgreSQL and SQLite alike."""
    from store.tests.plans import query_plan

    rows = Product.objects.low_stock(5).order_by("stock", "pk")[:50]
    assert "product_low_stock" in query_plan(rows)
    if connection.vendor == "postgresql":  # SQLite's planner scans a tiny table to count
        assert "product_low_stock" in query_plan(Product.objects.low_stock(5).values("stock"))
