"""The store's domain models, one module per kind of row; import them from here.

- ``core``: catalog, orders, the stock ledger, idempotency keys, the outbox (primary);
- ``customers``: customer data on the shards, the bucket map and its moves;
- ``rollups``: the exact summaries the panels read.

Money is stored as integer minor units (cents) so no float ever reaches a column.
"""

from store.models.core import (
    LOW_STOCK_INDEX_MAX,
    Category,
    Console,
    IdempotencyKey,
    Order,
    OrderItem,
    OrderQuerySet,
    OutboxEvent,
    Product,
    ProductQuerySet,
    Shop,
    StockMovement,
)
from store.models.customers import (
    SHARDED_MODELS,
    CustomerEvent,
    CustomerProfile,
    ShardBucket,
    ShardedQuerySet,
    ShardMove,
)
from store.models.rollups import (
    ROLLUP_SLOTS,
    STORE_HOUR_COLUMNS,
    CategoryRollup,
    LedgerFold,
    ProductRevenue,
    ProductSales,
    ProductWindowSales,
    SalesWindow,
    ShopRollup,
    ShopSales,
    StoreHour,
)

__all__ = [
    "LOW_STOCK_INDEX_MAX",
    "ROLLUP_SLOTS",
    "SHARDED_MODELS",
    "STORE_HOUR_COLUMNS",
    "Category",
    "CategoryRollup",
    "Console",
    "CustomerEvent",
    "CustomerProfile",
    "IdempotencyKey",
    "LedgerFold",
    "Order",
    "OrderItem",
    "OrderQuerySet",
    "OutboxEvent",
    "Product",
    "ProductQuerySet",
    "ProductRevenue",
    "ProductSales",
    "ProductWindowSales",
    "SalesWindow",
    "ShardBucket",
    "ShardMove",
    "ShardedQuerySet",
    "Shop",
    "ShopRollup",
    "ShopSales",
    "StockMovement",
    "StoreHour",
]
