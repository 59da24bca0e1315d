"""A customer's page: profile and events from their own shard, orders from the primary."""

from __future__ import annotations

import logging

from django.db import DatabaseError
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from dashboard.access import permission_required
from dashboard.http import HtmxHttpRequest
from store.selectors.catalog import order_table_rows
from store.selectors.customers import customer_view
from store.sharding import shard_for_user

logger = logging.getLogger(__name__)
RECENT_ORDERS = 20
# User ids are positive bigints; the URL's <int:...> takes any digits, and a larger
# number overflows the shard hash and the database's integer before any lookup.
MAX_USER_ID = 2**63 - 1


@require_GET
@permission_required("store.view_dashboard")
def customer_detail(request: HtmxHttpRequest, user_id: int) -> HttpResponse:
    if not 0 < user_id <= MAX_USER_ID:
        raise Http404(f"There is no customer with user id {user_id}.")
    orders = list(order_table_rows().filter(customer_id=user_id)[:RECENT_ORDERS])
    try:
        customer = customer_view(user_id=user_id)
    except DatabaseError as exc:
        # Only this customer's shard is down: say so, keep their orders, never a 500.
        alias = shard_for_user(user_id)
        logger.warning("customer %s: shard %s unavailable: %s", user_id, alias, exc)
        context = {"user_id": user_id, "orders": orders, "shard_down": alias}
        return render(request, "dashboard/customer.html", context, status=503)
    if customer is None and not orders:
        raise Http404(f"There is no customer with user id {user_id}.")
    context = {"user_id": user_id, "customer": customer, "orders": orders}
    return render(request, "dashboard/customer.html", context)
