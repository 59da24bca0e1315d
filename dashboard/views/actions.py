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
from typing import Any, Generic, TypeVar

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpResponse, HttpResponseRedirect, QueryDict
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
S = TypeVar("S")  # an action's subject: the row it acts on (None for prices)


@dataclass(frozen=True)
class Attempt(Generic[S]):
    """One valid submission of an action: what its payload, service call and hooks read."""

    request: HtmxHttpRequest
    subject: S
    data: dict[str, Any]  # the form's cleaned data


@dataclass(frozen=True)
class Refusal:
    """A valid form the action still refuses, shown on one of its fields."""

    field: str
    message: str
    status: int


def _nothing(subject: object) -> dict[str, Any]:
    return {}


def _same_values(subject: object, values: QueryDict) -> QueryDict:
    return values


@dataclass(frozen=True)
class Action(Generic[S]):
    """One write action, whole: ``action_view`` runs any of them the same way.

    GET renders ``form_class`` fresh; POST validates it (422), asks ``refuse``
    (its status), shows the ``confirm`` step if there is one, then runs ``perform``
    (the service call, returning the success message) once per idempotency key with
    ``payload`` as the key's fingerprint. A domain error re-renders the form as
    typed, with its message, under a fresh key (409 or 422).
    """

    name: str  # the idempotency fingerprint's namespace and the form's data-action
    permission: str  # checked on GET and POST
    form_class: type[IdempotentForm]
    url_name: str  # the action's own page (PRG target)
    event: str  # HX-Trigger: the panels and tables that listen refresh
    # The subject from the URL's arguments (404 when missing); called inside
    # ``decides()``, so it is read on the primary.
    load: Callable[..., S]
    title: Callable[[S], str]
    payload: Callable[[Attempt[S]], dict[str, Any]]  # what the key's fingerprint covers
    perform: Callable[[Attempt[S]], str]  # the service call; returns the message
    subject: str = ""  # "product" or "order": the subject's name in the partials
    # Hooks, where an action really differs from the others:
    context: Callable[[S], dict[str, Any]] = _nothing  # more of what the operator decides on
    initial: Callable[[S], dict[str, Any]] = _nothing  # the fresh form's values
    restrict: Callable[[HtmxHttpRequest, IdempotentForm], None] | None = None  # per-user fields
    refuse: Callable[[Attempt[S]], Refusal | None] | None = None
    # The values a refused form is shown again with (re-read what moved on).
    retry_values: Callable[[S, QueryDict], QueryDict] = _same_values
    # A confirmation step: while the form's ``confirm`` is unset, a POST shows the
    # ``<name>-confirm`` partial with this context (what would change) instead of acting.
    confirm: Callable[[Attempt[S]], dict[str, Any]] | None = None

    @property
    def form_partial(self) -> str:
        return f"{self.name}-form"

    @property
    def result_partial(self) -> str:
        return f"{self.name}-result"

    @property
    def confirm_partial(self) -> str:
        return f"{self.name}-confirm"


def _page(
    request: HtmxHttpRequest, partial: str, context: dict[str, Any], status: int = 200
) -> HttpResponse:
    """The partial alone for HTMX, else the whole page around it."""
    return render_partial_or_page(request, f"{TEMPLATE}#{partial}", context, status=status)


def _see_other(location: str) -> HttpResponse:
    response = HttpResponseRedirect(location)
    response.status_code = 303
    return response


def action_view(action: Action[Any]) -> ViewFunc:
    """The view of ``action``: GET renders the form, POST runs the action; the
    permission is checked on both, each render carries a fresh idempotency key (never
    cached), and what the operator decides on is read from the primary."""

    def view(request: HtmxHttpRequest, **url_args: Any) -> HttpResponse:
        subject = action.load(**url_args)
        context: dict[str, Any] = {"title": action.title(subject), **action.context(subject)}
        if action.subject:
            context[action.subject] = subject
        if request.method == "GET":
            form = action.form_class.fresh(action.initial(subject))
            if action.restrict:
                action.restrict(request, form)
            return _page(request, action.form_partial, {**context, "form": form})
        form = action.form_class(request.POST)
        if action.restrict:
            action.restrict(request, form)
        if not form.is_valid():
            return _page(request, action.form_partial, {**context, "form": form}, status=422)
        attempt = Attempt(request, subject, form.cleaned_data)
        refusal = action.refuse(attempt) if action.refuse else None
        if refusal is not None:
            form.add_error(refusal.field, refusal.message)
            ctx = {**context, "form": form}
            return _page(request, action.form_partial, ctx, status=refusal.status)
        if action.confirm and not attempt.data["confirm"]:
            values = request.POST.copy()
            values["confirm"] = "on"
            ctx = {**context, "form": action.form_class(values), **action.confirm(attempt)}
            return _page(request, action.confirm_partial, ctx)

        def refused(message: str, status: int) -> HttpResponse:
            # Keep what the user typed, under a fresh key, with the message.
            values = action.retry_values(subject, request.POST.copy())
            retry = action.form_class(values).rekeyed()
            retry.is_valid()
            retry.add_error(None, message)
            return _page(request, action.form_partial, {**context, "form": retry}, status=status)

        return _run(request, action, attempt, url_args=url_args, on_error=refused)

    view.__name__ = view.__qualname__ = f"{action.name}_view"
    checked = permission_required(action.permission)(never_cache_htmx(decides()(view)))
    return require_http_methods(["GET", "POST"])(checked)


def _run(
    request: HtmxHttpRequest,
    action: Action[S],
    attempt: Attempt[S],
    *,
    url_args: dict[str, Any],
    on_error: Callable[[str, int], HttpResponse],
) -> HttpResponse:
    """Run the action's service call once per idempotency key.

    The key stores the small result (status, message, location), never HTML: the
    answer renders after the transaction has committed, so no row lock is held
    while a template renders, and a replay renders the first answer again.
    """
    location = reverse(action.url_name, kwargs=url_args)

    def stored() -> StoredResponse:
        message = action.perform(attempt)
        return StoredResponse(status=200 if request.htmx else 303, body=message, location=location)

    try:
        outcome = idempotency_run(
            user=request.user,  # type: ignore[arg-type]
            key=attempt.data["idempotency_key"],
            fingerprint=request_fingerprint(action.name, action.payload(attempt)),
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
        context[action.subject] = url_args  # the result names its row: {"pk": ...}
    response = render(request, f"{TEMPLATE}#{action.result_partial}", context)
    return trigger_client_event(response, action.event)


def _product(pk: int) -> Product:
    return get_object_or_404(Product, pk=pk)


def _order(pk: int) -> Order:
    return get_object_or_404(Order.objects.select_related("shop"), pk=pk)


# --- stock: adjust -------------------------------------------------------------


def _adjust(a: Attempt[Product]) -> str:
    change = stock_adjust(
        product=a.subject.pk,
        delta=a.data["delta"],
        actor=a.request.user,
        reason=a.data["reason"],
        idempotency_key=a.data["idempotency_key"],
    )
    movement = change.movement
    assert movement is not None
    return (
        f"{a.subject.name}: stock {movement.stock_before} → {movement.stock_after} "
        f"({movement.delta:+d})."
    )


ADJUST = Action(
    name="adjust",
    permission="store.adjust_stock",
    form_class=AdjustForm,
    url_name="store-product-adjust",
    event=events.STOCK_CHANGED,
    load=_product,
    subject="product",
    title=lambda product: f"Adjust stock: {product.name}",
    # What the operator decides on: stock, the threshold and the last movements,
    # read only when a form renders (not on the success path, before the write).
    context=lambda product: {
        "low_stock_threshold": settings.STOREOPS_LOW_STOCK_THRESHOLD,
        "movements": SimpleLazyObject(lambda: recent_movements(product_id=product.pk)),
    },
    payload=lambda a: {
        "product": a.subject.pk,
        "delta": a.data["delta"],
        "reason": a.data["reason"],
    },
    perform=_adjust,
)


# --- stock: optimistic edit ----------------------------------------------------

PRICE_NEEDS_PERMISSION = "Changing the price needs the price permission; stock was not saved."
CHANGE_PRICE = "store.change_price"


def _price_lock(request: HtmxHttpRequest, form: IdempotentForm) -> None:
    """Without the price permission the price is shown read-only (and checked on POST)."""
    if not request.user.has_perm(CHANGE_PRICE):
        form.fields["price"].widget.attrs["readonly"] = True
        form.fields["price"].help_text = "Price changes need the price permission."


def _price_refusal(a: Attempt[Product]) -> Refusal | None:
    if not a.request.user.has_perm(CHANGE_PRICE) and a.data["price"] != a.subject.price:
        return Refusal("price", PRICE_NEEDS_PERMISSION, 403)
    return None


def _current_version(product: Product, values: QueryDict) -> QueryDict:
    # Keep what the user typed, but carry the current version so a deliberate
    # resubmission can win; the message shows the numbers that changed.
    product.refresh_from_db()
    values["version"] = str(product.version)
    return values


def _edit(a: Attempt[Product]) -> str:
    change = stock_set_optimistic(
        product=a.subject.pk,
        expected_version=a.data["version"],
        new_stock=a.data["stock"],
        new_price=a.data["price"] if a.request.user.has_perm(CHANGE_PRICE) else None,
        actor=a.request.user,
        reason=a.data["reason"],
        idempotency_key=a.data["idempotency_key"],
    )
    updated = change.product
    return f"{updated.name}: stock {updated.stock}, price {format_money(updated.price)} saved."


EDIT = Action(
    name="edit",
    # Stock edits need adjust_stock; a price change needs change_price too.
    permission="store.adjust_stock",
    form_class=EditForm,
    url_name="store-product-edit",
    event=events.STOCK_CHANGED,
    load=_product,
    subject="product",
    title=lambda product: f"Edit stock and price: {product.name}",
    initial=lambda p: {"stock": p.stock, "price": p.price, "version": p.version},
    restrict=_price_lock,
    refuse=_price_refusal,
    retry_values=_current_version,
    payload=lambda a: (
        {k: a.data[k] for k in ("stock", "price", "version", "reason")} | {"pk": a.subject.pk}
    ),
    perform=_edit,
)


# --- orders: pay ---------------------------------------------------------------


def _pay(a: Attempt[Order]) -> str:
    result = payment_process(
        order=a.subject.pk,
        amount=a.subject.total,
        idempotency_key=a.data["idempotency_key"],
        actor=a.request.user,
    )
    if result.newly_paid:
        return f"Order #{a.subject.pk} marked paid."
    return f"Order #{a.subject.pk} was already paid."


PAY = Action(
    name="pay",
    permission="store.mark_order_paid",
    form_class=PayForm,
    url_name="store-order-pay",
    event=events.ORDER_PAID,
    load=_order,
    subject="order",
    title=lambda order: f"Pay order #{order.pk}",
    payload=lambda a: {"order": a.subject.pk},
    perform=_pay,
)


# --- orders: cancel (the order saga's compensating step) -----------------------


def _cancel(a: Attempt[Order]) -> str:
    already = a.subject.cancelled_at is not None
    order_services.order_cancel(
        order=a.subject.pk,
        actor=a.request.user,
        reason=a.data["reason"],
        refunded=a.data["refunded"],
    )
    if already:
        return f"Order #{a.subject.pk} was already cancelled."
    return f"Order #{a.subject.pk} cancelled; every line restocked."


CANCEL = Action(
    name="cancel",
    permission="store.cancel_order",
    form_class=CancelForm,
    url_name="store-order-cancel",
    event=events.ORDER_CANCELLED,
    load=_order,
    subject="order",
    title=lambda order: f"Cancel order #{order.pk}",
    payload=lambda a: {
        "order": a.subject.pk,
        "reason": a.data["reason"],
        "refunded": a.data["refunded"],
    },
    perform=_cancel,
)


# --- prices (two steps: the first POST shows what would change) -----------------


def _price_filter(data: dict[str, Any]) -> PriceFilter:
    return PriceFilter(
        shop_id=data["shop"].pk if data["shop"] else None,
        category_id=data["category"].pk if data["category"] else None,
    )


def _change_prices(a: Attempt[None]) -> str:
    percent = a.data["percent"]
    changed = price_change(filters=_price_filter(a.data), percent=percent, actor=a.request.user)
    return f"{changed} price(s) changed by {percent:+d}%."


def _no_subject() -> None:
    return None


PRICES = Action(
    name="prices",
    permission=CHANGE_PRICE,
    form_class=PriceChangeForm,
    url_name="store-price-change",
    event=events.PRICES_CHANGED,
    load=_no_subject,
    title=lambda _: "Raise or lower prices",
    confirm=lambda a: {"preview": price_change_preview(filters=_price_filter(a.data))},
    payload=lambda a: {**_price_filter(a.data).__dict__, "percent": a.data["percent"]},
    perform=_change_prices,
)

ACTIONS: tuple[Action[Any], ...] = (ADJUST, EDIT, PAY, CANCEL, PRICES)


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
