"""Every model's admin pages render for a superuser, sharded ones shard by shard."""

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import reverse

from store.models import CustomerProfile
from store.sharding import bucket_for_user, shard_for_user
from store.tests import factories

pytestmark = pytest.mark.django_db(databases="__all__")


def _store_models() -> list[str]:
    return sorted(m._meta.model_name for m in admin.site._registry if m._meta.app_label == "store")


@pytest.mark.parametrize("model_name", _store_models())
def test_changelist_and_add_pages_render(superuser_client: Client, model_name: str) -> None:
    shop = factories.shop()
    factories.product(shop=shop, category=factories.category())
    for page in ("changelist", "add"):
        response = superuser_client.get(reverse(f"admin:store_{model_name}_{page}"))
        assert response.status_code == 200, (model_name, page)


def test_an_orders_stored_total_cannot_be_edited_in_the_admin(superuser_client: Client) -> None:
    shop = factories.shop()
    product = factories.product(shop=shop, category=factories.category(), price=250)
    order = factories.order(shop=shop, lines=[(product, 2)])
    url = reverse("admin:store_order_change", args=[order.pk])
    page = superuser_client.get(url).content.decode()
    assert 'name="total"' not in page
    assert 'name="item_count"' not in page
    assert "items-__prefix__" not in page  # no empty item form: items come from order_place
    response = superuser_client.post(
        url,
        {
            "customer_id": order.customer_id,
            "shop": shop.pk,
            "created_at_0": "2026-01-01",
            "created_at_1": "00:00:00",
            "total": "1",
            "item_count": "9",
            "items-TOTAL_FORMS": "1",
            "items-INITIAL_FORMS": "1",
            "items-0-id": order.items.get().pk,
            "items-0-order": order.pk,
        },
    )
    assert response.status_code == 302  # saved; the posted total was ignored
    order.refresh_from_db()
    assert (order.total, order.item_count) == (500, 1)


def test_sharded_rows_are_listed_per_shard(superuser_client: Client) -> None:
    alias = shard_for_user(99)
    CustomerProfile.objects.using(alias).create(
        user_id=99,
        bucket=bucket_for_user(99),
        name="Grace Hopper",
        email="g@example.com",
        created_at="2026-01-01T00:00:00Z",
    )
    url = reverse("admin:store_customerprofile_changelist")
    assert b"Grace Hopper" in superuser_client.get(url, {"shard": alias}).content
    other = "shard_1" if alias == "shard_0" else "shard_0"
    assert b"Grace Hopper" not in superuser_client.get(url, {"shard": other}).content
    # The same primary key exists on the other shard: the link's shard decides.
    CustomerProfile.objects.using(other).create(
        user_id=100,
        bucket=0,
        name="Alan Turing",
        email="a@example.com",
        created_at="2026-01-01T00:00:00Z",
    )
    pk = CustomerProfile.objects.using(alias).get(user_id=99).pk
    assert CustomerProfile.objects.using(other).filter(pk=pk).exists()
    change = reverse("admin:store_customerprofile_change", args=[pk])
    page = superuser_client.get(change, {"_changelist_filters": f"shard={alias}"})
    assert page.status_code == 200
    assert b"Grace Hopper" in page.content


def test_admin_money_is_in_currency_units(superuser_client: Client) -> None:
    """Lifetime value and an order line's unit price read like every other amount."""
    shop = factories.shop()
    product = factories.product(shop=shop, category=factories.category(), price=123456)
    order = factories.order(shop=shop, lines=[(product, 1)])
    page = superuser_client.get(reverse("admin:store_order_change", args=[order.pk]))
    assert "1,234.56" in page.content.decode()
    assert "123456" not in page.content.decode()
    alias = shard_for_user(7)
    profile = CustomerProfile.objects.using(alias).create(
        user_id=7,
        bucket=bucket_for_user(7),
        name="Ada",
        email="ada@example.com",
        created_at="2026-01-01T00:00:00Z",
        lifetime_value=61846,
    )
    listing = superuser_client.get(
        reverse("admin:store_customerprofile_changelist"), {"shard": alias}
    ).content.decode()
    assert "618.46" in listing
    change = superuser_client.get(
        reverse("admin:store_customerprofile_change", args=[profile.pk]),
        {"_changelist_filters": f"shard={alias}"},
    ).content.decode()
    assert "618.46" in change
    assert 'name="lifetime_value"' not in change  # kept by the orders, not typed in


def _product_form(product, **changes) -> dict:
    data = {
        "shop": product.shop_id,
        "category": product.category_id,
        "name": product.name,
        "sku": product.sku,
        "price": f"{product.price / 100:.2f}",  # the form takes currency units
        "rating": product.rating,
        "is_public": "on" if product.is_public else "",
        "seen_version": product.version,
    }
    return data | changes


def test_an_admin_price_edit_opened_before_another_write_is_refused(
    superuser_client: Client, superuser
) -> None:
    from store.models import OutboxEvent, Product
    from store.selectors.rollups import rollup_differences
    from store.services.stock import stock_set_optimistic

    product = factories.product(shop=factories.shop(), category=factories.category(), price=1000)
    url = reverse("admin:store_product_change", args=[product.pk])
    page = superuser_client.get(url)
    assert 'name="price" value="10.00"' in page.content.decode()  # units, not cents
    opened = _product_form(product, price="12.00")  # the admin's form, as rendered now
    # Meanwhile an operator changes the price through the console.
    stock_set_optimistic(
        product=product.pk,
        expected_version=product.version,
        new_stock=product.stock,
        new_price=1500,
        actor=superuser,
    )
    response = superuser_client.post(url, opened, follow=True)
    assert "Not saved. Changed by someone else" in response.content.decode()
    assert Product.objects.get(pk=product.pk).price == 1500  # not written back
    # A fresh form saves, through the service: an event, and the rollups follow.
    fresh = Product.objects.get(pk=product.pk)
    response = superuser_client.post(url, _product_form(fresh, price="18.00"))
    assert response.status_code == 302
    assert Product.objects.get(pk=product.pk).price == 1800  # cents
    assert OutboxEvent.objects.filter(
        topic="price.changed", payload__price_after=1800, payload__reason="admin"
    ).exists()
    assert rollup_differences() == []
    # An edit that leaves out the version it was made against is not saved.
    blind = _product_form(Product.objects.get(pk=product.pk), price="20.00")
    del blind["seen_version"]
    response = superuser_client.post(url, blind)
    assert response.status_code == 200  # the form again, with its error
    assert Product.objects.get(pk=product.pk).price == 1800
    # Stock is not the admin's to edit (adjustments own it, with the ledger).
    stock = Product.objects.get(pk=product.pk).stock
    tampered = _product_form(Product.objects.get(pk=product.pk), stock=str(stock + 500))
    assert superuser_client.post(url, tampered).status_code == 302
    assert Product.objects.get(pk=product.pk).stock == stock
