"""Low-stock flags for the dashboard: which products need restocking, how badly."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Case, CharField, Count, Q, Value, When

from store.models import Product, StockMovement

CRITICAL_STOCK = 2  # 1-2 units left is critical; 0 is out of stock
SEVERITY_CLASSES = {"out": "text-bg-danger", "critical": "text-bg-warning"}  # low: secondary


@dataclass(frozen=True)
class LowStockRow:
    product_id: int
    name: str
    sku: str
    stock: int
    severity: str  # "out", "critical" or "low"
    shop: str
    category: str

    @property
    def severity_class(self) -> str:
        """The badge the severity wears."""
        return SEVERITY_CLASSES.get(self.severity, "text-bg-secondary")

    @property
    def severity_label(self) -> str:
        return "out of stock" if self.severity == "out" else self.severity


@dataclass(frozen=True)
class LowStock:
    threshold: int
    total: int
    out: int
    critical: int
    low: int
    rows: list[LowStockRow]


def _severity() -> Case:
    return Case(
        When(stock=0, then=Value("out")),
        When(stock__lte=CRITICAL_STOCK, then=Value("critical")),
        default=Value("low"),
        output_field=CharField(),
    )


def low_stock(*, threshold: int, limit: int = 50) -> LowStock:
    """Products at or under ``threshold`` units, most urgent first (two queries).

    The severity is a Case/When annotation computed by the database; the counts
    cover every flagged product, the rows only the ``limit`` most urgent.
    """
    flagged = Product.objects.low_stock(threshold)
    # Counting stock, not id: the partial index (stock, id) answers without the table.
    counts = flagged.aggregate(
        total=Count("stock"),
        out=Count("stock", filter=Q(stock=0)),
        critical=Count("stock", filter=Q(stock__gt=0, stock__lte=CRITICAL_STOCK)),
    )
    rows = (
        flagged.annotate(severity=_severity())
        .select_related("shop", "category")
        .only("name", "sku", "stock", "shop__name", "category__name")
        # Out, then critical, then low is ascending stock: the partial index's order,
        # so the rows cost what they show, not what is flagged.
        .order_by("stock", "pk")[:limit]
    )
    return LowStock(
        threshold=threshold,
        total=counts["total"],
        out=counts["out"],
        critical=counts["critical"],
        low=counts["total"] - counts["out"] - counts["critical"],
        rows=[
            LowStockRow(
                product_id=p.pk,
                name=p.name,
                sku=p.sku,
                stock=p.stock,
                severity=p.severity,
                shop=p.shop.name,
                category=p.category.name,
            )
            for p in rows
        ],
    )


def recent_movements(*, product_id: int, limit: int = 5) -> list[StockMovement]:
    """The product's last ``limit`` ledger lines, newest first (one query).

    Served by the (product, created_at) index; the actor's name comes in the same query.
    """
    return list(
        StockMovement.objects.filter(product_id=product_id)
        .select_related("actor")
        .only(
            "created_at", "delta", "stock_after", "reason", "method", "order_id", "actor__username"
        )
        .order_by("-created_at", "-pk")[:limit]
    )
