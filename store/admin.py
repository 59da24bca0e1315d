"""Admin for every model: useful list displays and filters, sharded models per shard."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict

from store.exceptions import VersionConflict
from store.models import (
    Category,
    CustomerEvent,
    CustomerProfile,
    IdempotencyKey,
    Order,
    OrderItem,
    OutboxEvent,
    Product,
    Shop,
    StockMovement,
)
from store.money import MoneyField, format_money
from store.services.catalog import product_delete, product_save
from store.services.stock import MAX_UNITS
from store.sharding import shard_for_user


@admin.register(Shop)
class ShopAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ["name", "slug"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}


@admin.display(description="price", ordering="price")
def price_display(product: Product) -> str:
    return format_money(product.price)


@admin.display(description="total", ordering="total")
def total_display(order: Order) -> str:
    return format_money(order.total)


class ProductAdminForm(forms.ModelForm):
    # The version this form was rendered with; the service refuses a stale one.
    seen_version = forms.IntegerField(widget=forms.HiddenInput, required=False)
    # Currency units on screen, integer cents stored: as everywhere in the console.
    price = MoneyField(max_cents=MAX_UNITS, label="Price", widget=forms.NumberInput)

    class Meta:
        model = Product
        fields = "__all__"  # noqa: DJ007  (the admin's readonly_fields still apply)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.fields["seen_version"].initial = self.instance.version
            # An edit without the version it was made against would skip the check.
            self.fields["seen_version"].required = True


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "sku",
        "shop",
        "category",
        price_display,
        "stock",
        "rating",
        "is_public",
    ]
    list_filter = ["is_public", "shop", "category"]
    search_fields = ["name", "sku"]
    list_select_related = ["shop", "category"]
    autocomplete_fields = ["shop", "category"]
    # Stock changes go through the locked, ledgered service, never a raw admin edit.
    readonly_fields = ["initial_stock", "stock", "version", "created_at", "updated_at"]
    show_full_result_count = False

    form = ProductAdminForm

    # Through the catalog service, so the rollups the panels read follow every edit,
    # a price change leaves its event, and an edit opened before someone else's
    # write is refused instead of writing the old values back.
    def save_model(self, request: HttpRequest, obj: Product, form: Any, change: bool) -> None:
        expected = form.cleaned_data.get("seen_version") if change else None
        product_save(product=obj, actor=request.user, expected_version=expected)

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except VersionConflict as exc:
            self.message_user(
                request, f"Not saved. {exc} Review it and save again.", messages.ERROR
            )
            return HttpResponseRedirect(request.path)

    def delete_model(self, request: HttpRequest, obj: Product) -> None:
        product_delete(product=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Product]) -> None:
        for product in queryset:
            product_delete(product=product)


class OrderItemInline(admin.TabularInline):
    model = OrderItem
    extra = 0
    raw_id_fields = ["product"]
    fields = ["product", "quantity", "unit_price_display"]
    readonly_fields = ["product", "quantity", "unit_price_display"]
    can_delete = False

    @admin.display(description="unit price")
    def unit_price_display(self, item: OrderItem) -> str:
        return format_money(item.unit_price)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # items come from order_place, which also moves stock and the total


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "customer_id",
        "shop",
        total_display,
        "item_count",
        "paid",
        "paid_at",
        "cancelled_at",
        "created_at",
    ]
    list_filter = ["paid", "shop", "created_at"]
    search_fields = ["=id", "=customer_id"]
    list_select_related = ["shop"]
    date_hierarchy = "created_at"
    inlines = [OrderItemInline]
    # total and item_count are written with the items; editing them would break
    # "total == sum of the items".
    readonly_fields = [
        "paid",
        "paid_at",
        "cancelled_at",
        "version",
        total_display,  # type: ignore[list-item]  # the admin accepts callables here
        "item_count",
    ]
    exclude = ["total"]
    show_full_result_count = False


@admin.register(StockMovement)
class StockMovementAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "product",
        "delta",
        "stock_before",
        "stock_after",
        "method",
        "actor",
        "reason",
    ]
    list_filter = ["method", "created_at"]
    search_fields = ["product__name", "reason", "idempotency_key"]
    list_select_related = ["product", "actor"]
    raw_id_fields = ["product", "order", "actor"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the ledger is append-only


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(admin.ModelAdmin):
    list_display = ["key", "user", "response_status", "created_at", "completed_at", "expires_at"]
    list_filter = ["response_status"]
    search_fields = ["key"]
    list_select_related = ["user"]


@admin.register(OutboxEvent)
class OutboxEventAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "topic",
        "key",
        "created_at",
        "attempts",
        "published_at",
        "dead_lettered_at",
    ]
    list_filter = ["topic", "published_at", "dead_lettered_at"]
    search_fields = ["=id", "key"]


class ShardFilter(admin.SimpleListFilter):
    """Sharded rows are listed one shard at a time: there is no single table to list."""

    title = "shard"
    parameter_name = "shard"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(alias, alias) for alias in settings.SHARD_ALIASES]

    def value(self) -> str:
        value = super().value()
        return value if value in settings.SHARD_ALIASES else settings.SHARD_ALIASES[0]

    def choices(self, changelist: Any) -> Any:
        for lookup, title in self.lookup_choices:
            yield {
                "selected": self.value() == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.using(self.value())


def _shard_of(request: HttpRequest) -> str:
    """The shard a page is about: ``?shard=``, or the changelist filter a link carried."""
    alias = request.GET.get("shard") or QueryDict(request.GET.get("_changelist_filters", "")).get(
        "shard"
    )
    return alias if alias in settings.SHARD_ALIASES else settings.SHARD_ALIASES[0]


class ShardedAdmin(admin.ModelAdmin):
    # Primary keys repeat across shards, so every page names its shard explicitly.
    list_filter = [ShardFilter]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).using(_shard_of(request))

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        obj.save(using=obj._state.db if change else shard_for_user(obj.user_id))


@admin.register(CustomerProfile)
class CustomerProfileAdmin(ShardedAdmin):
    list_display = ["user_id", "name", "email", "bucket", "lifetime_value_display", "created_at"]
    search_fields = ["=user_id", "email"]
    # Kept by the orders (not typed in), and shown in currency units like all money.
    exclude = ["lifetime_value"]
    readonly_fields = ["lifetime_value_display"]

    @admin.display(description="lifetime value", ordering="lifetime_value")
    def lifetime_value_display(self, profile: CustomerProfile) -> str:
        return format_money(profile.lifetime_value)


@admin.register(CustomerEvent)
class CustomerEventAdmin(ShardedAdmin):
    list_display = ["user_id", "kind", "product_id", "bucket", "created_at"]
    search_fields = ["=user_id"]
