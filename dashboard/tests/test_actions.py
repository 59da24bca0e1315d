"""The write actions over HTTP: PRG, HTMX fragments + triggers, statuses, idempotency."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Sum
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from dashboard.action_forms import KEY_MISSING
from dashboard.views.actions import ACTIONS, Action
from store.exceptions import IdempotencyMismatch
from store.models import OutboxEvent, Product, StockMovement
from store.services.orders import order_cancel, order_place
from store.services.outbox import PublishError, outbox_enqueue, outbox_relay_once
from store.services.stock import stock_adjust
from store.tests import factories

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def product() -> Product:
    return factories.product(shop=factories.shop(), category=factories.category(), stock=10)


def _adjust_url(product: Product) -> str:
    return reverse("store-product-adjust", args=[product.pk])


def _field(html: bytes, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html.decode())
    assert found, f"no {name} field in the form"
    return found.group(1)


def _key(client: Client, url: str) -> str:
    return _field(client.get(url, **HX).content, "idempotency_key")


def _stock(product: Product) -> int:
    product.refresh_from_db()
    return product.stock


# --- permissions and headers ------------------------------------------------


@pytest.mark.parametrize(
    "url_name",
    ["store-product-adjust", "store-product-edit", "store-order-pay", "store-order-cancel"],
)
def test_viewer_gets_403_on_every_action(viewer_client: Client, product, url_name) -> None:
    target = product.pk
    if url_name.startswith("store-order-"):
        target = factories.order(shop=product.shop, lines=[(product, 1)]).pk
    url = reverse(url_name, args=[target])
    assert viewer_client.get(url).status_code == 403
    assert (
        viewer_client.post(url, {"delta": "1", "idempotency_key": "abcdefgh1"}).status_code == 403
    )
    assert _stock(product) == 10


@pytest.mark.parametrize("action", ACTIONS, ids=lambda action: action.name)
def test_every_action_spec_checks_its_permission_and_answers_422_with_the_form(
    viewer: User, viewer_client: Client, superuser_client: Client, product, action: Action[Any]
) -> None:
    """What the spec guarantees, for every registered action (a new one included):
    its URL refuses a user without its permission on GET and POST, renders its form
    to one who has it, and answers invalid input with 422 and the form, never acting."""
    order = factories.order(shop=product.shop, lines=[(product, 1)])
    args = {"product": [product.pk], "order": [order.pk], "": []}[action.subject]
    url = reverse(action.url_name, args=args)
    assert not viewer.has_perm(action.permission)
    assert viewer_client.get(url).status_code == 403
    assert viewer_client.post(url, {"idempotency_key": "abcdefgh1"}).status_code == 403
    form = superuser_client.get(url, **HX)
    assert form.status_code == 200
    assert f'data-action="{action.name}"'.encode() in form.content
    for extra in (HX, {}):
        invalid = superuser_client.post(url, {}, **extra)
        assert invalid.status_code == 422
        assert f'data-action="{action.name}"'.encode() in invalid.content
        assert KEY_MISSING.encode() in invalid.content
    assert _stock(product) == 10
    assert not OutboxEvent.objects.exists()


def test_a_refusal_names_the_missing_permission(viewer_client: Client, product) -> None:
    url = _adjust_url(product)
    page = viewer_client.get(url)
    assert page.status_code == 403
    assert b"<html" in page.content  # inside the console's layout
    assert b"store.adjust_stock" in page.content
    # For htmx: a form-sized message, swapped where the request came from.
    fragment = viewer_client.post(url, {"delta": "1", "idempotency_key": "abcdefgh1"}, **HX)
    assert fragment.status_code == 403
    assert b"<html" not in fragment.content
    assert b'role="alert"' in fragment.content
    assert b"store.adjust_stock" in fragment.content
    assert "HX-Request" in fragment["Vary"]


def test_prices_and_requeue_need_more_than_operator(operator_client: Client) -> None:
    assert operator_client.get(reverse("store-price-change")).status_code == 403
    url = reverse("store-outbox-requeue", args=["00000000-0000-0000-0000-000000000001"])
    assert operator_client.post(url).status_code == 403


def test_form_gets_a_fresh_key_per_render_and_is_never_cached(
    operator_client: Client, product
) -> None:
    url = _adjust_url(product)
    first, second = operator_client.get(url, **HX), operator_client.get(url, **HX)
    assert _field(first.content, "idempotency_key") != _field(second.content, "idempotency_key")
    assert b"<html" not in first.content
    assert b'data-action="adjust"' in first.content
    assert "no-store" in second["Cache-Control"]
    assert "private" in second["Cache-Control"]
    assert "HX-Request" in second["Vary"]
    full = operator_client.get(url)
    assert b"<html" in full.content


def test_csrf_is_enforced(operator: User, product) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    response = client.post(_adjust_url(product), {"delta": "1", "idempotency_key": "abcdefgh1"})
    assert response.status_code == 403
    assert _stock(product) == 10


# --- adjust -------------------------------------------------------------------


def test_adjust_form_shows_stock_threshold_and_the_last_five_movements(
    operator_client: Client, operator: User, product, django_assert_max_num_queries
) -> None:
    url = _adjust_url(product)
    with django_assert_max_num_queries(8) as empty:
        html = operator_client.get(url, **HX).content.decode()
    assert "No movements yet" in html
    for n in range(7):
        stock_adjust(product=product.pk, delta=1, actor=operator, reason=f"count {n}")
    # The ledger lines cost one query however many there are.
    with django_assert_max_num_queries(len(empty)):
        html = operator_client.get(url, **HX).content.decode()
    assert 'data-testid="current-stock">17<' in html
    assert 'data-testid="low-stock-threshold">5<' in html
    assert [f"count {n}" in html for n in range(7)] == [False, False] + [True] * 5
    assert html.index("count 6") < html.index("count 2")  # newest first


def test_plain_post_redirects_303_and_a_reload_does_not_apply_again(
    operator_client: Client, product
) -> None:
    url = _adjust_url(product)
    data = {"delta": "-3", "reason": "damaged", "idempotency_key": _key(operator_client, url)}
    response = operator_client.post(url, data)
    assert response.status_code == 303
    assert response["Location"] == url
    page = operator_client.get(response["Location"])
    assert "stock 10 → 7 (-3)" in page.content.decode()
    # The browser reloads the GET page: nothing is resubmitted.
    operator_client.get(response["Location"])
    # A resubmission of the same form (back button + submit) replays.
    again = operator_client.post(url, data, follow=True)
    assert "Already applied" in again.content.decode()
    assert _stock(product) == 7
    movement = StockMovement.objects.get()
    assert (movement.actor.username, movement.reason) == ("operator", "damaged")


def test_htmx_post_answers_the_fragment_and_triggers_stock_changed(
    operator_client: Client, product
) -> None:
    url = _adjust_url(product)
    data = {"delta": "5", "idempotency_key": _key(operator_client, url)}
    response = operator_client.post(url, data, **HX)
    assert response.status_code == 200
    assert "stock-changed" in json.loads(response["HX-Trigger"])
    assert "stock 10 → 15 (+5)" in response.content.decode()
    replay = operator_client.post(url, data, **HX)
    assert replay.content == response.content
    assert _stock(product) == 15


def test_insufficient_stock_is_409_with_the_count(operator_client: Client, product) -> None:
    url = _adjust_url(product)
    data = {"delta": "-11", "idempotency_key": _key(operator_client, url)}
    response = operator_client.post(url, data, **HX)
    assert response.status_code == 409
    assert "Only 10 in stock" in response.content.decode()
    # The answer is the form again, with a fresh key, ready for a corrected try.
    assert _field(response.content, "idempotency_key") != data["idempotency_key"]
    assert _stock(product) == 10


@pytest.mark.parametrize(
    ("delta", "message"),
    [
        ("abc", "Enter a whole number."),
        ("0", "A change of zero does nothing"),
        ("99999999999", "less than or equal to 1000000"),
        ("", "This field is required."),
    ],
)
def test_invalid_delta_is_422_with_a_message(operator_client, product, delta, message) -> None:
    url = _adjust_url(product)
    data = {"delta": delta, "idempotency_key": _key(operator_client, url)}
    htmx = operator_client.post(url, data, **HX)
    assert htmx.status_code == 422
    assert message in htmx.content.decode()
    plain = operator_client.post(url, data)
    assert plain.status_code == 422
    assert b"<html" in plain.content
    assert _stock(product) == 10


def test_missing_key_is_422_with_a_message(operator_client: Client, product) -> None:
    response = operator_client.post(_adjust_url(product), {"delta": "1"}, **HX)
    assert response.status_code == 422
    assert KEY_MISSING in response.content.decode()
    assert _stock(product) == 10


def test_same_key_other_payload_is_422(operator_client: Client, product) -> None:
    url = _adjust_url(product)
    key = _key(operator_client, url)
    operator_client.post(url, {"delta": "1", "idempotency_key": key}, **HX)
    response = operator_client.post(url, {"delta": "2", "idempotency_key": key}, **HX)
    assert response.status_code == 422
    assert IdempotencyMismatch.MESSAGE in response.content.decode()
    assert _stock(product) == 11


def test_unknown_product_is_404(operator_client: Client) -> None:
    assert operator_client.get(reverse("store-product-adjust", args=[999_999])).status_code == 404


def test_adjust_post_runs_a_constant_number_of_queries(
    operator_client: Client, django_assert_max_num_queries
) -> None:
    shop, category = factories.shop(), factories.category()
    for stock in (10, 10_000):
        product = factories.product(shop=shop, category=category, stock=stock)
        url = _adjust_url(product)
        key = _key(operator_client, url)
        # 18 on SQLite, where the rollup upsert is a statement of its own.
        with django_assert_max_num_queries(18):
            operator_client.post(url, {"delta": "-1", "idempotency_key": key}, **HX)


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)  # the bump waits for a real commit
def test_no_adjust_response_leaves_before_redis_confirmed_its_bump(
    operator_client: Client, product
) -> None:
    from django.core.cache import caches

    from store.caching import namespace_versions

    url = _adjust_url(product)
    before = namespace_versions("stock")["stock"]
    response = operator_client.post(
        url, {"delta": "-1", "idempotency_key": _key(operator_client, url)}, **HX
    )
    assert response.status_code == 200
    assert caches["default"]._bump_replies_due == 0  # read by SettleBumpsMiddleware
    assert namespace_versions("stock")["stock"] == before + 1


# --- optimistic edit ------------------------------------------------------------


def test_edit_saves_at_the_version_it_was_opened_with(superuser_client, product) -> None:
    url = reverse("store-product-edit", args=[product.pk])
    form = superuser_client.get(url, **HX).content
    data = {
        "stock": "4",
        "price": "19.99",  # currency units; stored as cents
        "version": _field(form, "version"),
        "idempotency_key": _field(form, "idempotency_key"),
    }
    response = superuser_client.post(url, data, **HX)
    assert response.status_code == 200
    assert "stock-changed" in json.loads(response["HX-Trigger"])
    product.refresh_from_db()
    assert (product.stock, product.price, product.version) == (4, 1999, 2)
    total = StockMovement.objects.filter(product=product).aggregate(s=Sum("delta"))["s"]
    assert product.stock == product.initial_stock + total


def test_edit_form_shows_and_takes_the_price_in_currency_units(superuser_client, product) -> None:
    url = reverse("store-product-edit", args=[product.pk])
    form = superuser_client.get(url, **HX).content.decode()
    assert re.search(r'name="price" value="10.00"', form)
    assert "cents" not in form
    data = {
        "stock": "10",
        "price": "1234.5",
        "version": _field(form.encode(), "version"),
        "idempotency_key": _field(form.encode(), "idempotency_key"),
    }
    response = superuser_client.post(url, data, **HX)
    assert "price 1,234.50 saved" in response.content.decode()
    product.refresh_from_db()
    assert product.price == 123450


def test_operator_edits_stock_but_not_price(operator_client, product) -> None:
    url = reverse("store-product-edit", args=[product.pk])
    form = operator_client.get(url, **HX).content
    assert re.search(r'name="price"[^>]*readonly', form.decode())
    data = {
        "stock": "4",
        "price": "0.01",
        "version": _field(form, "version"),
        "idempotency_key": _field(form, "idempotency_key"),
    }
    refused = operator_client.post(url, data, **HX)
    assert refused.status_code == 403
    assert "needs the price permission" in refused.content.decode()
    product.refresh_from_db()
    assert (product.stock, product.price, product.version) == (10, 1000, 1)
    data |= {"price": "10.00", "idempotency_key": _field(refused.content, "idempotency_key")}
    assert operator_client.post(url, data, **HX).status_code == 200
    product.refresh_from_db()
    assert (product.stock, product.price) == (4, 1000)


def test_edit_on_a_stale_version_shows_the_new_numbers(operator_client, product) -> None:
    url = reverse("store-product-edit", args=[product.pk])
    form = operator_client.get(url, **HX).content
    adjust = _adjust_url(product)
    operator_client.post(adjust, {"delta": "7", "idempotency_key": _key(operator_client, adjust)})
    data = {
        "stock": "1",
        "price": "10.00",
        "version": _field(form, "version"),
        "idempotency_key": _field(form, "idempotency_key"),
    }
    response = operator_client.post(url, data, **HX)
    assert response.status_code == 409
    body = response.content.decode()
    assert "Changed by someone else since you opened it: now stock 17, price 10.00." in body
    assert _field(response.content, "version") == "2"
    assert _stock(product) == 17


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("stock", "-1", "greater than or equal to 0"),
        ("price", "abc", "Enter a number."),
        ("price", "12.345", "no more than 2 decimal places"),
        ("price", "-0.01", "greater than or equal to 0"),
        ("price", "21474836.48", "less than or equal to 21474836.47"),
        ("stock", "99999999999", "less than or equal to 2147483647"),
        ("version", "", "This field is required."),
    ],
)
def test_edit_rejects_bad_input_with_422(operator_client, product, field, value, message) -> None:
    url = reverse("store-product-edit", args=[product.pk])
    form = operator_client.get(url, **HX).content
    data = {
        "stock": "4",
        "price": "1.00",
        "version": _field(form, "version"),
        "idempotency_key": _field(form, "idempotency_key"),
        field: value,
    }
    response = operator_client.post(url, data, **HX)
    assert response.status_code == 422
    assert message in response.content.decode()
    product.refresh_from_db()
    assert (product.stock, product.version) == (10, 1)


# --- pay --------------------------------------------------------------------


def test_mark_paid_prg_and_htmx_trigger(operator_client: Client, product) -> None:
    order = factories.order(shop=product.shop, lines=[(product, 2)])
    url = reverse("store-order-pay", args=[order.pk])
    response = operator_client.post(url, {"idempotency_key": _key(operator_client, url)})
    assert response.status_code == 303
    order.refresh_from_db()
    assert order.paid
    other = factories.order(shop=product.shop, lines=[(product, 1)])
    url = reverse("store-order-pay", args=[other.pk])
    htmx = operator_client.post(url, {"idempotency_key": _key(operator_client, url)}, **HX)
    assert htmx.status_code == 200
    assert "order-paid" in json.loads(htmx["HX-Trigger"])
    assert OutboxEvent.objects.filter(topic="payment.captured").count() == 2


def test_unknown_order_is_404(operator_client: Client) -> None:
    url = reverse("store-order-pay", args=[999_999])
    assert operator_client.post(url, {"idempotency_key": "abcdefgh12"}).status_code == 404


@pytest.mark.parametrize("url_name", ["store-order-pay", "store-order-cancel"])
def test_order_forms_show_the_stored_total(operator_client: Client, product, url_name) -> None:
    order = factories.order(shop=product.shop, lines=[(product, 3)])  # 3 x 1,000 cents
    body = operator_client.get(reverse(url_name, args=[order.pk]), **HX).content.decode()
    assert "total 30.00" in body  # currency units, like every other money figure


def test_paying_a_cancelled_order_is_409(operator_client: Client, operator, product) -> None:
    order = factories.order(shop=product.shop, lines=[(product, 1)])
    order_cancel(order=order, actor=operator, reason="test")
    url = reverse("store-order-pay", args=[order.pk])
    response = operator_client.post(url, {"idempotency_key": _key(operator_client, url)}, **HX)
    assert response.status_code == 409
    assert "cancelled" in response.content.decode()


def _cancel(client: Client, order, **data: str):
    url = reverse("store-order-cancel", args=[order.pk])
    return client.post(url, {"idempotency_key": _key(client, url), **data}, **HX)


def test_cancel_restocks_every_line_once_and_refreshes_the_panels(
    operator_client: Client, operator, product
) -> None:
    order = order_place(user=operator, shop=product.shop, lines=[(product.pk, 3)])
    assert _stock(product) == 7
    url = reverse("store-order-cancel", args=[order.pk])
    key = _key(operator_client, url)
    response = operator_client.post(
        url, {"reason": "customer called", "idempotency_key": key}, **HX
    )
    assert response.status_code == 200
    assert f"Order #{order.pk} cancelled" in response.content.decode()
    assert "order-cancelled" in json.loads(response["HX-Trigger"])
    # A double click (same key) replays the answer; nothing is restocked twice.
    again = operator_client.post(url, {"reason": "customer called", "idempotency_key": key}, **HX)
    assert again.status_code == 200
    assert _stock(product) == 10
    order.refresh_from_db()
    assert order.cancelled_at is not None
    restock = StockMovement.objects.get(order=order, delta__gt=0)
    assert (restock.delta, restock.actor_id, restock.reason) == (3, operator.pk, "customer called")
    ledger = StockMovement.objects.filter(product=product).aggregate(total=Sum("delta"))["total"]
    assert product.initial_stock + ledger == _stock(product)


def test_cancelling_a_paid_order_needs_the_refund_box(
    operator_client: Client, operator, product
) -> None:
    order = order_place(user=operator, shop=product.shop, lines=[(product.pk, 2)])
    order.paid, order.paid_at = True, timezone.now()
    order.save(update_fields=["paid", "paid_at"])
    refused = _cancel(operator_client, order)
    assert refused.status_code == 409
    assert "refund" in refused.content.decode()
    assert _stock(product) == 8
    assert _cancel(operator_client, order, refunded="on").status_code == 200
    assert _stock(product) == 10


def test_plain_cancel_post_redirects_and_the_table_offers_cancel_to_operators_only(
    operator_client: Client, viewer_client: Client, operator, product
) -> None:
    order = order_place(user=operator, shop=product.shop, lines=[(product.pk, 1)])
    cancel_url = reverse("store-order-cancel", args=[order.pk])
    listing = reverse("store-order-list")
    assert f'href="{cancel_url}"' in operator_client.get(listing).content.decode()
    assert f'href="{cancel_url}"' not in viewer_client.get(listing).content.decode()
    key = _key(operator_client, cancel_url)
    response = operator_client.post(cancel_url, {"idempotency_key": key})
    assert response.status_code == 303
    page = operator_client.get(response["Location"]).content.decode()
    assert f"Order #{order.pk} cancelled" in page
    assert "Cancel order and restock" not in page  # a cancelled order offers no button
    # Cancelled orders offer no actions in the table.
    assert f'href="{cancel_url}"' not in operator_client.get(listing).content.decode()


# --- prices -------------------------------------------------------------------


def test_price_change_asks_for_confirmation_first(superuser_client: Client, product) -> None:
    url = reverse("store-price-change")
    key = _key(superuser_client, url)
    data = {"shop": product.shop_id, "percent": "10", "idempotency_key": key}
    preview = superuser_client.post(url, data, **HX)
    assert preview.status_code == 200
    assert "Change 1 price(s) by 10%" in preview.content.decode()
    product.refresh_from_db()
    assert product.price == 1000
    confirmed = superuser_client.post(url, {**data, "confirm": "on"}, **HX)
    assert confirmed.status_code == 200
    assert "prices-changed" in json.loads(confirmed["HX-Trigger"])
    product.refresh_from_db()
    assert product.price == 1100
    again = superuser_client.post(url, {**data, "confirm": "on"}, **HX)
    assert again.content == confirmed.content
    product.refresh_from_db()
    assert product.price == 1100


def test_price_change_rejects_bad_percent(superuser_client: Client) -> None:
    url = reverse("store-price-change")
    data = {"percent": "-95", "idempotency_key": _key(superuser_client, url)}
    response = superuser_client.post(url, data, **HX)
    assert response.status_code == 422
    assert "greater than or equal to -90" in response.content.decode()


# --- outbox requeue -------------------------------------------------------------


def test_superuser_requeues_a_dead_letter(superuser_client: Client) -> None:
    with transaction.atomic():
        event = outbox_enqueue(topic="t", key="k", payload={})
    OutboxEvent.objects.filter(pk=event.pk).update(dead_lettered_at=timezone.now(), attempts=5)
    url = reverse("store-outbox-requeue", args=[event.pk])
    response = superuser_client.post(url)
    assert response.status_code == 303
    event.refresh_from_db()
    assert (event.dead_lettered_at, event.attempts) == (None, 0)
    assert superuser_client.post(reverse("store-outbox-requeue", args=["nope"])).status_code == 404


# --- outbox panel -------------------------------------------------------------


class BrokerDown:
    def publish(self, event: OutboxEvent) -> None:
        raise PublishError("broker down")


def _dead_letters(n: int) -> None:
    with transaction.atomic():
        for i in range(n):
            outbox_enqueue(topic="stock.changed", key=f"product:{i}", payload={})
    outbox_relay_once(transport=BrokerDown())


def test_outbox_panel_shows_backlog_and_dead_letters(
    viewer_client: Client,
    superuser_client: Client,
    settings,
    django_assert_max_num_queries,
    django_capture_on_commit_callbacks,
) -> None:
    settings.STOREOPS_OUTBOX_MAX_ATTEMPTS = 1
    for dead in (2, 25):
        with django_capture_on_commit_callbacks(execute=True):  # the cache bumps
            _dead_letters(dead - OutboxEvent.objects.count())
        with django_assert_max_num_queries(12):
            body = superuser_client.get("/panels/outbox/", **HX).content.decode()
        assert re.search(r'data-testid="outbox-dead">\s*' + str(dead) + r"\s*<", body)
        assert "broker down" in body
        assert "Requeue" in body
    viewer_body = viewer_client.get("/panels/outbox/", **HX).content.decode()
    assert "broker down" in viewer_body
    assert "Requeue" not in viewer_body


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)  # the lock is a real one, seen from another connection
@pytest.mark.parametrize("htmx", [True, False])
def test_no_product_row_lock_is_held_while_a_template_renders(
    operator_client: Client, product: Product, monkeypatch: pytest.MonkeyPatch, htmx: bool
) -> None:
    import psycopg
    from django.db import connection
    from django.template.backends.django import Template

    url = _adjust_url(product)
    key = _key(operator_client, url)
    blocked: list[str] = []
    rendered: list[str] = []
    real_render = Template.render

    def render_while_another_connection_writes(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        # A slow template, from the row's point of view: another session updates the
        # product while this render runs, and must not wait for a lock.
        rendered.append(self.template.name or "a partial")
        with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other:
            other.execute("SET lock_timeout = '1s'")
            try:
                other.execute(
                    "UPDATE store_product SET rating = rating WHERE id = %s", [product.pk]
                )
            except psycopg.errors.LockNotAvailable:
                blocked.append(self.template.name or "a partial")
        return real_render(self, *args, **kwargs)

    monkeypatch.setattr(Template, "render", render_while_another_connection_writes)
    extra = HX if htmx else {}
    response = operator_client.post(url, {"delta": "-1", "idempotency_key": key}, **extra)
    assert response.status_code == (200 if htmx else 303)
    assert blocked == []
    # The HTMX answer is rendered (so the check above ran); a plain POST renders nothing.
    assert bool(rendered) == htmx
    assert _stock(product) == 9
