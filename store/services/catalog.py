"""Catalog writes outside the stock and price actions: creating, editing, moving and
deleting products (the admin's path), with their rollup contributions."""

from __future__ import annotations

from store.caching import bump
from store.models import Product
from store.services.retry import atomic_with_retry
from store.services.rollups import ProductState, RollupDeltas, product_revenue_move


def product_save(*, product: Product) -> Product:
    """Create or update ``product`` as given; a new shop or category takes its revenue along.

    Stock is never edited here (adjustments own it, with the ledger): an existing
    product keeps its stored stock whatever the instance says.
    """

    def apply() -> Product:
        rollup = RollupDeltas()
        if product.pk is not None:
            before = Product.objects.select_for_update().get(pk=product.pk)
            product.stock, product.initial_stock = before.stock, before.initial_stock
            rollup.product(ProductState.of(before), -1)
        product.save()
        rollup.product(ProductState.of(product), 1)
        moved = product_revenue_move(
            product_id=product.pk, shop_id=product.shop_id, category_id=product.category_id
        )
        for key, values in moved.categories.items():
            rollup.categories[key][5] += values[5]
        rollup.apply()
        bump("catalog", "stock", "lowstock")
        return product

    return atomic_with_retry(apply)


def product_delete(*, product: Product) -> None:
    """Delete a product that never sold or moved stock (the database refuses otherwise)."""

    def apply() -> None:
        locked = Product.objects.select_for_update().get(pk=product.pk)
        rollup = RollupDeltas()
        rollup.product(ProductState.of(locked), -1)
        locked.delete()
        rollup.apply()
        bump("catalog", "stock", "lowstock")

    atomic_with_retry(apply)
