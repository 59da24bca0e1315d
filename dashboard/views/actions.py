"""Write actions: stock adjustments, optimistic edits, payments, price changes, requeue.

Views parse with a form, call one service through an idempotency key and answer:
a plain POST redirects (303, PRG) to a GET page with a flash message; an HTMX POST
answers 200 with the updated fragment and an ``HX-Trigger`` event, since htmx
ignores response headers on redirects. Domain errors re-render the form with the
message: 409 for conflicts, 422 for invalid requests. Every read of these views is
on the primary (``store.routing.decides``): a form's current values and version, and
the conflict view after a 409, must not come from a replica that is behind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.functional import SimpleLazyObject
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import trigger_client_event

from dashboard import events
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
from dashboard.http import HtmxHttpRequest, never_cache_htmx, render_partial_or_page
from store.exceptions import StoreError
from store.models import Order, OutboxEvent, Product
from store.money import format_money
from store.routing import decides
from store.selectors.prices import price_change_preview
from store.selectors.stock import recent_movements
from store.services import orders as order_services
from store.services.idempotency import StoredResponse, idempotency_run, request_fingerprint
from store.services.outbox import outbox_requeue
from store.services.payments import payment_process
from store.services.prices import PriceFilter, price_change
from store.services.stock import stock_adjust, stock_set_optimistic

TEMPLATE = "dashboard/actions.html"
ViewFunc = Callable[..., HttpResponse]
REPLAYED = "Already applied (this form was submitted before): "


def _page(
    request: HtmxHttpRequest, partial: str, context: dict[str, Any], status: int = 200
) -> HttpResponse:
    """The partial alone for HTMX, else the whole page around it."""
    return render_partial_or_page(request, f"{TEMPLATE}#{partial}", context, status=status)


def action_view(permission: str) -> Callable[[ViewFunc], ViewFunc]:
    """An action's form view: GET renders the form, POST runs the action; the
    permission is checked on both, each render carries a fresh idempotency key (never
    cached), and what the operator decides on is read from the primary."""

    def decorate(view: ViewFunc) -> ViewFunc:
        checked = permission_required(permission)(never_cache_htmx(decides()(view)))
        return require_http_methods(["GET", "POST"])(checked)

    return decorate


def _see_other(location: str) -> HttpResponse:
    response = HttpResponseRedirect(location)
    response.status_code = 303
    return response


@dataclass(frozen=True)
class Action:
    """What every write action shares: its forms' partials, the event its success
    sends, the URL a plain POST returns to, and what its result names."""

    name: str  # the idempotency fingerprint's namespace
    form_partial: str
    result_partial: str
    event: str  # HX-Trigger: the panels and tables that listen refresh
    url_name: str  # the action's own page (PRG target)
    subject: str = ""  # "product" or "order": the row the result points at


ADJUST = Action(
    "adjust",
    "adjust-form",
    "adjust-result",
    events.STOCK_CHANGED,
    "store-product-adjust",
    "product",
)
EDIT = Action(
    "edit", "edit-form", "edit-result", events.STOCK_CHANGED, "store-product-edit", "product"
)
PAY = Action("pay", "pay-form", "pay-result", events.ORDER_PAID, "store-order-pay", "order")
CANCEL = Action(
    "cancel", "cancel-form", "cancel-result", events.ORDER_CANCELLED, "store-order-cancel", "order"
)
PRICES = Action("prices", "price-form", "price-result", events.PRICES_CHANGED, "store-price-change")


def _run(
    request: HtmxHttpRequest,
    action: Action,
    *,
    form: IdempotentForm,
    pk: int | None,
    payload: dict[str, Any],
    perform: Callable[[], str],
    on_error: Callable[[str, int], HttpResponse],
) -> HttpResponse:
    """Run ``perform`` (the service call; returns the message) once per idempotency key.

    The key stores the small result (status, message, location), never HTML: the
    answer renders after the transaction has committed, so no row lock is held
    while a template renders, and a replay renders the first answer again.
    """
    location = reverse(action.url_name, args=[pk] if pk is not None else [])

    def stored() -> StoredResponse:
        message = perform()
        return StoredResponse(status=200 if request.htmx else 303, body=message, location=location)

    try:
        outcome = idempotency_run(
            user=request.user,  # type: ignore[arg-type]
            key=form.cleaned_data["idempotency_key"],
            fingerprint=request_fingerprint(action.name, payload),
            perform=stored,
        )
    except StoreError as exc:
        return on_error(str(exc), exc.status)  # 409 for a Conflict, else 422
    result = outcome.response
    if result.status == 303:
        if outcome.replayed:
            messages.info(request, REPLAYED + result.body)
        else:
            messages.success(request, result.body)
        return _see_other(result.location)
    context: dict[str, Any] = {"message": result.body}
    if action.subject:
        context[action.subject] = {"pk": pk}
    response = render(request, f"{TEMPLATE}#{action.result_partial}", context)
    return trigger_client_event(response, action.event)


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


@action_view("store.adjust_stock")
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
        return _page(request, ADJUST.form_partial, {**context, "form": AdjustForm.fresh()})
    form = AdjustForm(request.POST)
    if not form.is_valid():
        return _page(request, ADJUST.form_partial, {**context, "form": form}, status=422)
    delta, reason = form.cleaned_data["delta"], form.cleaned_data["reason"]

    def perform() -> str:
        change = stock_adjust(
            product=product.pk,
            delta=delta,
            actor=request.user,
            reason=reason,
            idempotency_key=form.cleaned_data["idempotency_key"],
        )
        movement = change.movement
        assert movement is not None
        return (
            f"{product.name}: stock {movement.stock_before} → {movement.stock_after} "
            f"({movement.delta:+d})."
        )

    return _run(
        request,
        ADJUST,
        form=form,
        pk=product.pk,
        payload={"product": product.pk, "delta": delta, "reason": reason},
        perform=perform,
        on_error=_form_error(request, ADJUST.form_partial, form, context),
    )


PRICE_NEEDS_PERMISSION = "Changing the price needs the price permission; stock was not saved."


def _price_lock(form: EditForm, can_price: bool) -> EditForm:
    """Without the price permission the price is shown read-only (and checked on POST)."""
    if not can_price:
        form.fields["price"].widget.attrs["readonly"] = True
        form.fields["price"].help_text = "Price changes need the price permission."
    return form


@action_view("store.adjust_stock")
def product_edit(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    product = get_object_or_404(Product, pk=pk)
    context: dict[str, Any] = {"product": product, "title": f"Edit stock and price: {product.name}"}
    # Stock edits need adjust_stock (above); a price change needs change_price too.
    can_price = request.user.has_perm("store.change_price")
    if request.method == "GET":
        form = EditForm.fresh(
            {"stock": product.stock, "price": product.price, "version": product.version}
        )
        return _page(request, EDIT.form_partial, {**context, "form": _price_lock(form, can_price)})
    form = _price_lock(EditForm(request.POST), can_price)
    if not form.is_valid():
        return _page(request, EDIT.form_partial, {**context, "form": form}, status=422)
    data = form.cleaned_data
    if not can_price and data["price"] != product.price:
        form.add_error("price", PRICE_NEEDS_PERMISSION)
        return _page(request, EDIT.form_partial, {**context, "form": form}, status=403)

    def perform() -> str:
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
        return f"{updated.name}: stock {updated.stock}, price {format_money(updated.price)} saved."

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
        return _page(request, EDIT.form_partial, ctx, status=status)

    return _run(
        request,
        EDIT,
        form=form,
        pk=product.pk,
        payload={k: data[k] for k in ("stock", "price", "version", "reason")} | {"pk": pk},
        perform=perform,
        on_error=conflict,
    )


# --- orders -------------------------------------------------------------------


@action_view("store.mark_order_paid")
def order_pay(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    order = get_object_or_404(Order.objects.select_related("shop"), pk=pk)
    context: dict[str, Any] = {"order": order, "title": f"Pay order #{order.pk}"}
    if request.method == "GET":
        return _page(request, PAY.form_partial, {**context, "form": PayForm.fresh()})
    form = PayForm(request.POST)
    if not form.is_valid():
        return _page(request, PAY.form_partial, {**context, "form": form}, status=422)

    def perform() -> str:
        result = payment_process(
            order=order.pk,
            amount=order.total,
            idempotency_key=form.cleaned_data["idempotency_key"],
            actor=request.user,
        )
        if result.newly_paid:
            return f"Order #{order.pk} marked paid."
        return f"Order #{order.pk} was already paid."

    return _run(
        request,
        PAY,
        form=form,
        pk=order.pk,
        payload={"order": order.pk},
        perform=perform,
        on_error=_form_error(request, PAY.form_partial, form, context),
    )


@action_view("store.cancel_order")
def order_cancel(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The order saga's compensating step: restock every line, mark it cancelled."""
    order = get_object_or_404(Order.objects.select_related("shop"), pk=pk)
    context: dict[str, Any] = {
        "order": order,
        "title": f"Cancel order #{order.pk}",
    }
    if request.method == "GET":
        return _page(request, CANCEL.form_partial, {**context, "form": CancelForm.fresh()})
    form = CancelForm(request.POST)
    if not form.is_valid():
        return _page(request, CANCEL.form_partial, {**context, "form": form}, status=422)
    data = form.cleaned_data

    def perform() -> str:
        already = order.cancelled_at is not None
        order_services.order_cancel(
            order=order.pk, actor=request.user, reason=data["reason"], refunded=data["refunded"]
        )
        if already:
            return f"Order #{order.pk} was already cancelled."
        return f"Order #{order.pk} cancelled; every line restocked."

    return _run(
        request,
        CANCEL,
        form=form,
        pk=order.pk,
        payload={"order": order.pk, "reason": data["reason"], "refunded": data["refunded"]},
        perform=perform,
        on_error=_form_error(request, CANCEL.form_partial, form, context),
    )


# --- prices -------------------------------------------------------------------


@action_view("store.change_price")
def prices_change(request: HtmxHttpRequest) -> HttpResponse:
    """Two steps: the first POST shows what would change, the second applies it."""
    context: dict[str, Any] = {"title": "Raise or lower prices"}
    if request.method == "GET":
        return _page(request, PRICES.form_partial, {**context, "form": PriceChangeForm.fresh()})
    form = PriceChangeForm(request.POST)
    if not form.is_valid():
        return _page(request, PRICES.form_partial, {**context, "form": form}, status=422)
    data = form.cleaned_data
    filters = PriceFilter(
        shop_id=data["shop"].pk if data["shop"] else None,
        category_id=data["category"].pk if data["category"] else None,
    )
    if not data["confirm"]:
        preview = price_change_preview(filters=filters)
        confirm_data = form.data.copy()  # type: ignore[attr-defined]  # a QueryDict
        confirm_data["confirm"] = "on"
        ctx = {**context, "form": PriceChangeForm(confirm_data), "preview": preview}
        return _page(request, "price-confirm", ctx)

    def perform() -> str:
        changed = price_change(filters=filters, percent=data["percent"], actor=request.user)
        return f"{changed} price(s) changed by {data['percent']:+d}%."

    return _run(
        request,
        PRICES,
        form=form,
        pk=None,
        payload={**filters.__dict__, "percent": data["percent"]},
        perform=perform,
        on_error=_form_error(request, PRICES.form_partial, form, context),
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
        return trigger_client_event(response, events.OUTBOX_CHANGED)
    messages.success(request, message)
    return _see_other(reverse("dashboard-index"))
