"""Write actions: stock adjustments, optimistic edits, payments, price changes, requeue.

Views parse with a form, call one service through an idempotency key and answer:
a plain POST redirects (303, PRG) to a GET page with a flash message; an HTMX POST
answers 200 with the updated fragment and an ``HX-Trigger`` event, since htmx
ignores response headers on redirects. Domain errors re-render the form with the
message: 409 for conflicts, 422 for invalid requests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.functional import SimpleLazyObject
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import trigger_client_event

from dashboard.access import permission_required
from dashboard.action_forms import (
    AdjustForm,
    CancelForm,
    EditForm,
    IdempotentForm,
    PayForm,
    PriceChangeForm,
    RequeueForm,
)
from dashboard.http import HtmxHttpRequest
from store.exceptions import (
    ConcurrencyFailure,
    IdempotencyInProgress,
    InsufficientStock,
    OrderCancelled,
    OrderNeedsRefund,
    StoreError,
    VersionConflict,
)
from store.models import Order, OutboxEvent, Product
from store.money import format_money
from store.selectors.prices import price_change_preview
from store.selectors.stock import recent_movements
from store.services import orders as order_services
from store.services.idempotency import StoredResponse, idempotency_run, request_fingerprint
from store.services.outbox import outbox_requeue
from store.services.payments import payment_process
from store.services.prices import PriceFilter, price_change
from store.services.stock import stock_adjust, stock_set_optimistic

TEMPLATE = "dashboard/actions.html"
CONFLICTS = (
    InsufficientStock,
    VersionConflict,
    IdempotencyInProgress,
    ConcurrencyFailure,
    OrderCancelled,
    OrderNeedsRefund,
)
REPLAYED = "Already applied (this form was submitted before): "


def _page(
    request: HtmxHttpRequest, partial: str, context: dict[str, Any], status: int = 200
) -> HttpResponse:
    """The partial alone for HTMX, else the whole page around it."""
    template = f"{TEMPLATE}#{partial}" if request.htmx else TEMPLATE
    return render(request, template, {**context, "partial": partial}, status=status)


def _see_other(location: str) -> HttpResponse:
    response = HttpResponseRedirect(location)
    response.status_code = 303
    return response


def _done(
    request: HtmxHttpRequest,
    *,
    partial: str,
    context: dict[str, Any],
    message: str,
    location: str,
) -> StoredResponse:
    """The answer stored with the key: a fragment for HTMX, else a redirect + flash text."""
    if request.htmx:
        body = render_to_string(
            f"{TEMPLATE}#{partial}", {**context, "message": message}, request=request
        )
        return StoredResponse(status=200, body=body)
    return StoredResponse(status=303, body=message, location=location)


def _run(
    request: HtmxHttpRequest,
    *,
    form: IdempotentForm,
    action: str,
    payload: dict[str, Any],
    perform: Callable[[], StoredResponse],
    event: str,
    on_error: Callable[[str, int], HttpResponse],
) -> HttpResponse:
    key = form.cleaned_data["idempotency_key"]
    fingerprint = request_fingerprint(action, payload)
    try:
        outcome = idempotency_run(
            user=request.user,  # type: ignore[arg-type]
            key=key,
            fingerprint=fingerprint,
            perform=perform,
        )
    except CONFLICTS as exc:
        return on_error(str(exc), 409)
    except StoreError as exc:
        return on_error(str(exc), 422)
    stored = outcome.response
    if stored.status == 303:
        if outcome.replayed:
            messages.info(request, REPLAYED + stored.body)
        else:
            messages.success(request, stored.body)
        return _see_other(stored.location)
    response = HttpResponse(stored.body, status=stored.status)
    return trigger_client_event(response, event)


def _form_error(
    request: HtmxHttpRequest, partial: str, form: IdempotentForm, context: dict[str, Any]
) -> Callable[[str, int], HttpResponse]:
    def respond(message: str, status: int) -> HttpResponse:
        fresh = form.rekeyed()
        fresh.is_valid()
        fresh.add_error(None, message)
        return _page(request, partial, {**context, "form": fresh}, status=status)

    return respond


# --- stock -------------------------------------------------------------------


# Each render carries a fresh key: never cached; HTMX and full answers differ.
@require_http_methods(["GET", "POST"])
@permission_required("store.adjust_stock")
@never_cache
@vary_on_headers("HX-Request")
def product_adjust(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    product = get_object_or_404(Product, pk=pk)
    # What the operator decides on: stock, the threshold and the last movements.
    context: dict[str, Any] = {
        "product": product,
        "title": f"Adjust stock: {product.name}",
        "low_stock_threshold": settings.STOREOPS_LOW_STOCK_THRESHOLD,
        # Read only when a form renders (not on the success path, before the write).
        "movements": SimpleLazyObject(lambda: recent_movements(product_id=product.pk)),
    }
    if request.method == "GET":
        return _page(request, "adjust-form", {**context, "form": AdjustForm.fresh()})
    form = AdjustForm(request.POST)
    if not form.is_valid():
        return _page(request, "adjust-form", {**context, "form": form}, status=422)
    delta, reason = form.cleaned_data["delta"], form.cleaned_data["reason"]

    def perform() -> StoredResponse:
        change = stock_adjust(
            product=product.pk,
            delta=delta,
            actor=request.user,
            reason=reason,
            idempotency_key=form.cleaned_data["idempotency_key"],
        )
        movement = change.movement
        assert movement is not None
        message = (
            f"{product.name}: stock {movement.stock_before} → {movement.stock_after} "
            f"({movement.delta:+d})."
        )
        return _done(
            request,
            partial="adjust-result",
            context={"product": change.product, "movement": movement},
            message=message,
            location=reverse("store-product-adjust", args=[product.pk]),
        )

    return _run(
        request,
        form=form,
        action="adjust",
        payload={"product": product.pk, "delta": delta, "reason": reason},
        perform=perform,
        event="stock-changed",
        on_error=_form_error(request, "adjust-form", form, context),
    )


PRICE_NEEDS_PERMISSION = "Changing the price needs the price permission; stock was not saved."


def _price_lock(form: EditForm, can_price: bool) -> EditForm:
    """Without the price permission the price is shown read-only (and checked on POST)."""
    if not can_price:
        form.fields["price"].widget.attrs["readonly"] = True
        form.fields["price"].help_text = "Price changes need the price permission."
    return form


# Each render carries a fresh key: never cached; HTMX and full answers differ.
@require_http_methods(["GET", "POST"])
@permission_required("store.adjust_stock")
@never_cache
@vary_on_headers("HX-Request")
def product_edit(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    product = get_object_or_404(Product, pk=pk)
    context: dict[str, Any] = {"product": product, "title": f"Edit stock and price: {product.name}"}
    # Stock edits need adjust_stock (above); a price change needs change_price too.
    can_price = request.user.has_perm("store.change_price")
    if request.method == "GET":
        form = EditForm.fresh(
            {"stock": product.stock, "price": product.price, "version": product.version}
        )
        return _page(request, "edit-form", {**context, "form": _price_lock(form, can_price)})
    form = _price_lock(EditForm(request.POST), can_price)
    if not form.is_valid():
        return _page(request, "edit-form", {**context, "form": form}, status=422)
    data = form.cleaned_data
    if not can_price and data["price"] != product.price:
        form.add_error("price", PRICE_NEEDS_PERMISSION)
        return _page(request, "edit-form", {**context, "form": form}, status=403)

    def perform() -> StoredResponse:
        change = stock_set_optimistic(
            product=product.pk,
            expected_version=data["version"],
            new_stock=data["stock"],
            new_price=data["price"] if can_price else None,
            actor=request.user,
            reason=data["reason"],
            idempotency_key=data["idempotency_key"],
        )
        updated = change.product
        return _done(
            request,
            partial="edit-result",
            context={"product": updated},
            message=(
                f"{updated.name}: stock {updated.stock}, price {format_money(updated.price)} saved."
            ),
            location=reverse("store-product-edit", args=[product.pk]),
        )

    def conflict(message: str, status: int) -> HttpResponse:
        # Keep what the user typed, but carry the current version so a deliberate
        # resubmission can win; the message shows the numbers that changed.
        product.refresh_from_db()
        values = request.POST.copy()
        values["version"] = str(product.version)
        retry = EditForm(values).rekeyed()
        retry.is_valid()
        retry.add_error(None, message)
        ctx = {**context, "product": product, "form": retry}
        return _page(request, "edit-form", ctx, status=status)

    return _run(
        request,
        form=form,
        action="edit",
        payload={k: data[k] for k in ("stock", "price", "version", "reason")} | {"pk": pk},
        perform=perform,
        event="stock-changed",
        on_error=conflict,
    )


# --- orders -------------------------------------------------------------------


# Each render carries a fresh key: never cached; HTMX and full answers differ.
@require_http_methods(["GET", "POST"])
@permission_required("store.mark_order_paid")
@never_cache
@vary_on_headers("HX-Request")
def order_pay(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    order = get_object_or_404(Order.objects.select_related("shop"), pk=pk)
    context: dict[str, Any] = {"order": order, "title": f"Pay order #{order.pk}"}
    if request.method == "GET":
        return _page(request, "pay-form", {**context, "form": PayForm.fresh()})
    form = PayForm(request.POST)
    if not form.is_valid():
        return _page(request, "pay-form", {**context, "form": form}, status=422)

    def perform() -> StoredResponse:
        result = payment_process(
            order=order.pk,
            amount=order.total,
            idempotency_key=form.cleaned_data["idempotency_key"],
            actor=request.user,
        )
        message = (
            f"Order #{order.pk} marked paid."
            if result.newly_paid
            else f"Order #{order.pk} was already paid."
        )
        return _done(
            request,
            partial="pay-result",
            context={"order": result.order},
            message=message,
            location=reverse("store-order-pay", args=[order.pk]),
        )

    return _run(
        request,
        form=form,
        action="pay",
        payload={"order": order.pk},
        perform=perform,
        event="order-paid",
        on_error=_form_error(request, "pay-form", form, context),
    )


# Each render carries a fresh key: never cached; HTMX and full answers differ.
@require_http_methods(["GET", "POST"])
@permission_required("store.cancel_order")
@never_cache
@vary_on_headers("HX-Request")
def order_cancel(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The order saga's compensating step: restock every line, mark it cancelled."""
    order = get_object_or_404(Order.objects.select_related("shop"), pk=pk)
    context: dict[str, Any] = {
        "order": order,
        "title": f"Cancel order #{order.pk}",
    }
    if request.method == "GET":
        return _page(request, "cancel-form", {**context, "form": CancelForm.fresh()})
    form = CancelForm(request.POST)
    if not form.is_valid():
        return _page(request, "cancel-form", {**context, "form": form}, status=422)
    data = form.cleaned_data

    def perform() -> StoredResponse:
        already = order.cancelled_at is not None
        cancelled = order_services.order_cancel(
            order=order.pk, actor=request.user, reason=data["reason"], refunded=data["refunded"]
        )
        message = (
            f"Order #{order.pk} was already cancelled."
            if already
            else f"Order #{order.pk} cancelled; every line restocked."
        )
        return _done(
            request,
            partial="cancel-result",
            context={"order": cancelled},
            message=message,
            location=reverse("store-order-cancel", args=[order.pk]),
        )

    return _run(
        request,
        form=form,
        action="cancel",
        payload={"order": order.pk, "reason": data["reason"], "refunded": data["refunded"]},
        perform=perform,
        event="order-cancelled",
        on_error=_form_error(request, "cancel-form", form, context),
    )


# --- prices -------------------------------------------------------------------


# Each render carries a fresh key: never cached; HTMX and full answers differ.
@require_http_methods(["GET", "POST"])
@permission_required("store.change_price")
@never_cache
@vary_on_headers("HX-Request")
def prices_change(request: HtmxHttpRequest) -> HttpResponse:
    """Two steps: the first POST shows what would change, the second applies it."""
    context: dict[str, Any] = {"title": "Raise or lower prices"}
    if request.method == "GET":
        return _page(request, "price-form", {**context, "form": PriceChangeForm.fresh()})
    form = PriceChangeForm(request.POST)
    if not form.is_valid():
        return _page(request, "price-form", {**context, "form": form}, status=422)
    data = form.cleaned_data
    filters = PriceFilter(
        shop_id=data["shop"].pk if data["shop"] else None,
        category_id=data["category"].pk if data["category"] else None,
    )
    if not data["confirm"]:
        preview = price_change_preview(filters=filters)
        confirm_data = form.data.copy()
        confirm_data["confirm"] = "on"
        ctx = {**context, "form": PriceChangeForm(confirm_data), "preview": preview}
        return _page(request, "price-confirm", ctx)

    def perform() -> StoredResponse:
        changed = price_change(filters=filters, percent=data["percent"], actor=request.user)
        return _done(
            request,
            partial="price-result",
            context={"changed": changed, "percent": data["percent"]},
            message=f"{changed} price(s) changed by {data['percent']:+d}%.",
            location=reverse("store-price-change"),
        )

    return _run(
        request,
        form=form,
        action="prices",
        payload={**filters.__dict__, "percent": data["percent"]},
        perform=perform,
        event="prices-changed",
        on_error=_form_error(request, "price-form", form, context),
    )


# --- outbox -------------------------------------------------------------------


@require_POST
@permission_required("store.change_outboxevent")
def outbox_event_requeue(request: HtmxHttpRequest, pk: str) -> HttpResponse:
    form = RequeueForm({"event": pk})
    if not form.is_valid():
        raise Http404("No such outbox event.")
    event = get_object_or_404(OutboxEvent, pk=form.cleaned_data["event"])
    outbox_requeue(event_id=event.pk, actor=request.user)
    message = f"Event {event.topic} {str(event.pk)[:8]} requeued."
    if request.htmx:
        response = render(request, f"{TEMPLATE}#requeue-result", {"message": message})
        return trigger_client_event(response, "outbox-changed")
    messages.success(request, message)
    return _see_other(reverse("dashboard-index"))
