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
