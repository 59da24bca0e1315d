"""Catalog writes outside the stock and price actions: creating, editing, moving and
deleting products (the admin's path), with their rollup contributions."""

from __future__ import annotations

from store.caching import bump
from store.exceptions import VersionConflict
from store.models import Product
from store.services.actors import Actor, actor_ref
from store.services.outbox import TOPIC_PRICE_CHANGED, outbox_enqueue
from store.services.retry import atomic_with_retry
from store.services.rollups import ProductState, RollupDeltas, product_revenue_move


def product_save(
    *, product: Product, actor: Actor = None, expected_version: int | None = None
) -> Product:
    """Create or update ``product`` as given; a new shop or category takes its revenue along.

    An update checks ``expected_version`` (the version the editor's form showed)
    under the row lock, so an edit opened before someone else's write is refused
    (``VersionConflict``) instead of writing the old values back. Stock is never
    edited here (adjustments own it, with the ledger): an existing product keeps its
    stored stock whatever the instance says. A price change leaves a
    ``price.changed`` event, as the console's edit does.
    """

    def apply() -> Product:
        rollup = RollupDeltas()
        before = None
        if product.pk is not None:
            before = Product.objects.select_for_update().get(pk=product.pk)
            if expected_version is not None and before.version != expected_version:
                raise VersionConflict(
                    current={
                        "stock": before.stock,
                        "price": before.price,
                        "version": before.version,
                    }
                )
            product.stock, product.initial_stock = before.stock, before.initial_stock
            product.version = before.version + 1
            rollup.product(ProductState.of(before), -1)
        product.save()
        if before is not None and before.price != product.price:
            outbox_enqueue(
                topic=TOPIC_PRICE_CHANGED,
                key=f"product:{product.pk}",
                payload={
                    "product_ids": [product.pk],
                    "price_before": before.price,
                    "price_after": product.price,
                    "actor_id": actor_ref(actor),
                    "reason": "admin",
                },
            )
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
