"""Stock writes: locked adjustments and optimistic sets, each with its ledger row.

Invariant kept by every function here: ``stock == initial_stock + sum(ledger deltas)``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from django.db import connections
from django.db.backends.utils import CursorWrapper
from django.db.models import F
from django.utils import timezone
from psycopg import errors as psycopg_errors
from psycopg import pq

from store.caching import bump
from store.exceptions import InsufficientStock, StockLimitExceeded, VersionConflict
from store.models import Product, StockMovement
from store.services.actors import Actor, actor_ref
from store.services.ledger import ledger_record, stock_namespaces
from store.services.ledger_fold import ledger_written
from store.services.outbox import TOPIC_PRICE_CHANGED, TOPIC_STOCK_CHANGED, outbox_enqueue
from store.services.retry import atomic_with_retry
from store.services.rollups import ProductState, RollupDeltas

# PositiveIntegerField is a 32-bit column on PostgreSQL.
MAX_UNITS = 2_147_483_647


class StockChange:
    """What a stock write did: the product as written and its ledger row (None when
    the stock did not move).

    Built on first read from what the write returned: the PostgreSQL adjustment's
    two model instances cost 4% of the call, and most of its callers (scripts, the
    write stream) never look.
    """

    def __init__(self, build: Callable[[], tuple[Product, StockMovement | None]]) -> None:
        self._build = build

    @classmethod
    def of(cls, product: Product, movement: StockMovement | None) -> StockChange:
        return cls(lambda: (product, movement))

    @cached_property
    def _built(self) -> tuple[Product, StockMovement | None]:
        return self._build()

    @property
    def product(self) -> Product:
        return self._built[0]

    @property
    def movement(self) -> StockMovement | None:
        return self._built[1]


def stock_adjust(
    *,
    product: Product | int,
    delta: int,
    actor: Actor,
    reason: str = "",
    idempotency_key: str = "",
) -> StockChange:
    """Add ``delta`` (signed) under a row lock; never below zero."""
    pk = product if isinstance(product, int) else product.pk
    if connections["default"].vendor == "postgresql":
        return _adjust_in_one_statement(
            pk=pk, delta=delta, actor=actor, reason=reason, idempotency_key=idempotency_key
        )

    def apply() -> StockChange:
        locked = (
            Product.objects.select_for_update()
            .only("pk", "shop_id", "category_id", "stock", "version")
            .get(pk=pk)
        )
        before = locked.stock
        after = before + delta
        if after < 0:
            raise InsufficientStock(product_id=pk, available=before, requested=-delta)
        if after > MAX_UNITS:
            raise StockLimitExceeded(maximum=MAX_UNITS)
        Product.objects.filter(pk=pk).update(
            stock=after, version=F("version") + 1, updated_at=timezone.now()
        )
        locked.stock = after
        locked.version += 1
        movement = ledger_record(
            product=locked,
            before=before,
            after=after,
            method=StockMovement.Method.ADJUST,
            actor=actor,
            reason=reason,
            idempotency_key=idempotency_key,
        )
        return StockChange.of(locked, movement)

    return atomic_with_retry(apply)


# PostgreSQL: one statement. The conditional UPDATE takes the row lock
# (FOR NO KEY UPDATE, the lock SELECT ... FOR UPDATE would take, minus blocking FK
# checks) and re-checks the stock on the newest row version; the ledger row and the
# outbox event are written by the same statement; the ledger row, stamped with the
# product's shop and category, is the stock rollup's delta (stock_ledger_fold), so
# the statement writes no rollup row. Outside a transaction it runs in
# autocommit, so the hot row's lock is held only for the server-side execution and
# commit, never across round trips.
# Timestamps come from clock_timestamp(), read after the lock is granted, so one
# product's events sort in the order their changes were applied (the relay's order).
# The row comes back as integers only (created_at as epoch microseconds: exact), so
# both ways of running it (_execute_adjust) read it alike.
# The topic is our constant, not input: formatting it in is safe.
_ADJUST_SQL = f"""
WITH changed AS (
    UPDATE store_product
       SET stock = stock + %(delta)s, version = version + 1, updated_at = clock_timestamp()
     WHERE id = %(pk)s AND stock::bigint + %(delta)s BETWEEN 0 AND %(max)s
 RETURNING id, shop_id, category_id, stock - %(delta)s AS stock_before, stock AS stock_after,
           version
), movement AS (
    INSERT INTO store_stockmovement (product_id, delta, stock_before, stock_after, reason,
                                     method, actor_id, order_id, idempotency_key, created_at,
                                     shop_id, category_id)
    SELECT id, %(delta)s, stock_before, stock_after, %(reason)s,
           %(method)s, %(actor)s, NULL, %(key)s, clock_timestamp(), shop_id, category_id
      FROM changed
 RETURNING id, product_id, stock_before, stock_after, created_at, shop_id, category_id
), event AS (
    INSERT INTO store_outboxevent (id, topic, "key", payload, created_at, available_at,
                                   attempts, claimed_by, last_error)
    SELECT gen_random_uuid(), '{TOPIC_STOCK_CHANGED}', 'product:' || product_id,
           jsonb_build_object(
               'product_id', product_id, 'delta', %(delta)s::integer,
               'stock_before', stock_before, 'stock_after', stock_after,
               'method', %(method)s::text, 'actor_id', %(actor)s::bigint,
               'order_id', NULL, 'movement_id', id),
           clock_timestamp(), clock_timestamp(), 0, '', ''
      FROM movement
)
SELECT movement.id, movement.stock_before, movement.stock_after, changed.version,
       (extract(epoch FROM movement.created_at) * 1000000)::bigint,
       movement.shop_id, movement.category_id
  FROM movement JOIN changed ON changed.id = movement.product_id
"""  # noqa: S608


# Parsing and planning that statement costs more than running it (pgbench on the
# 1M-product clone, one client: 1,040 tx/s sent as text, 1,415 prepared), so each
# connection prepares it once and then sends only EXECUTE with the values. Prepared
# statements live as long as the session, whatever happens to transactions (so a
# transaction-pooling proxy in front of PostgreSQL would need session pooling).
_ADJUST_PARAMS = {
    "pk": "bigint",
    "delta": "integer",
    "max": "bigint",
    "reason": "text",
    "method": "text",
    "actor": "bigint",
    "key": "text",
}
_ADJUST_STATEMENT = "storeops_stock_adjust"
_MOVEMENT_FIELDS = [field.attname for field in StockMovement._meta.concrete_fields]


def _prepare_statement() -> str:
    body = _ADJUST_SQL
    for number, name in enumerate(_ADJUST_PARAMS, start=1):
        body = body.replace(f"%({name})s", f"${number}")
    return f"PREPARE {_ADJUST_STATEMENT} ({', '.join(_ADJUST_PARAMS.values())}) AS {body}"


_PREPARE_ADJUST = _prepare_statement()
_EXECUTE_ADJUST = (
    f"EXECUTE {_ADJUST_STATEMENT} ({', '.join(f'%({name})s' for name in _ADJUST_PARAMS)})"
)


class _AdjustSession(threading.local):
    """The session on which this thread prepared the statement, and a driver cursor
    on it (kept: opening one per call cost 5% of the call)."""

    session: Any = None
    cursor: Any = None


_adjust_session = _AdjustSession()


def _adjust_connection() -> Any:
    """This thread's connection, checked as ``cursor()`` checks it, with the statement
    prepared on it."""
    db = connections["default"]
    db.close_if_health_check_failed()
    db.ensure_connection()
    db.validate_thread_sharing()
    if _adjust_session.session is not db.connection:  # first use, or a reconnect
        raw = db.connection.cursor()
        _django_cursor(db, raw).execute(_PREPARE_ADJUST)  # remembered only once it worked
        _adjust_session.session, _adjust_session.cursor = db.connection, raw
    return db


def _django_cursor(db: Any, raw: Any) -> CursorWrapper:
    return db.make_debug_cursor(raw) if db.queries_logged else db.make_cursor(raw)


# How each parameter travels to libpq: numbers as text, strings in binary. A text
# parameter is a C string, so a NUL would silently cut it; in binary PostgreSQL
# checks it and refuses it, as it refuses it through psycopg.
_ADJUST_FORMATS = [1 if kind == "text" else 0 for kind in _ADJUST_PARAMS.values()]
_ADJUST_STATEMENT_NAME = _ADJUST_STATEMENT.encode()


def _execute_adjust(params: dict[str, Any]) -> tuple[Any, ...] | None:
    """Run the prepared adjustment; its row (numbers only), or None if refused."""
    db = _adjust_connection()
    if db.execute_wrappers or db.queries_logged or not db.get_autocommit():
        # Through Django's cursor when someone watches statements (a request's
        # slow-query log, a test counting queries), so that they see this one, and
        # inside a transaction, which psycopg opens (BEGIN) only for its own cursors.
        cursor = _django_cursor(db, _adjust_session.cursor)
        cursor.execute(_EXECUTE_ADJUST, params)
        return cursor.fetchone()
    # A transaction of its own that nobody watches: libpq executes the prepared
    # statement itself (one Bind/Execute, the GIL released while it waits), without
    # psycopg's and Django's cursor layers: they cost 0.15 ms of a 0.9 ms adjustment.
    # The deadline and Django's error translation still apply.
    values = [
        None if value is None else str(value).encode()
        for value in (params[name] for name in _ADJUST_PARAMS)
    ]
    with db.watch(), db.wrap_database_errors:  # nested as in the cursor's _execute
        result = db.connection.pgconn.exec_prepared(
            _ADJUST_STATEMENT_NAME, values, param_formats=_ADJUST_FORMATS
        )
        if result.status != pq.ExecStatus.TUPLES_OK:
            raise psycopg_errors.error_from_result(result, encoding=db.connection.info.encoding)
    if not result.ntuples:
        return None
    row = (result.get_value(0, column) for column in range(result.nfields))
    return tuple(None if value is None else int(value) for value in row)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _adjust_in_one_statement(
    *, pk: int, delta: int, actor: Actor, reason: str, idempotency_key: str
) -> StockChange:
    reason = reason[:200]
    actor_id = actor_ref(actor)
    params: dict[str, Any] = {
        "pk": pk,
        "delta": delta,
        "max": MAX_UNITS,
        "reason": reason,
        "method": StockMovement.Method.ADJUST.value,
        "actor": actor_id,
        "key": idempotency_key,
    }
    row = _execute_adjust(params)
    if row is None:
        current = Product.objects.filter(pk=pk).values_list("stock", flat=True).first()
        if current is None:
            raise Product.DoesNotExist(f"No product {pk}.")
        if current + delta < 0:
            raise InsufficientStock(product_id=pk, available=current, requested=-delta)
        raise StockLimitExceeded(maximum=MAX_UNITS)
    movement_id, before, after, version, created_us, shop_id, category_id = row
    bump(*stock_namespaces(before, after), "outbox")  # after commit; at once in autocommit
    ledger_written(movement_id)

    def build() -> tuple[Product, StockMovement]:
        # Built as the ORM builds loaded rows (every field, in order): half the cost
        # of keyword construction. A new field fails loudly here.
        values = {
            "id": movement_id,
            "product_id": pk,
            "delta": delta,
            "stock_before": before,
            "stock_after": after,
            "reason": reason,
            "method": StockMovement.Method.ADJUST.value,
            "actor_id": actor_id,
            "order_id": None,
            "idempotency_key": idempotency_key,
            "created_at": _EPOCH + timedelta(microseconds=created_us),
            "shop_id": shop_id,
            "category_id": category_id,
        }
        movement = StockMovement.from_db(
            "default", _MOVEMENT_FIELDS, [values[name] for name in _MOVEMENT_FIELDS]
        )
        # Only the fields this statement knows; any other attribute loads on access.
        changed = Product.from_db("default", ["id", "stock", "version"], [pk, after, version])
        return changed, movement

    return StockChange(build)


def stock_set_optimistic(
    *,
    product: Product | int,
    expected_version: int,
    new_stock: int,
    new_price: int | None = None,
    actor: Actor,
    reason: str = "",
    idempotency_key: str = "",
) -> StockChange:
    """Set stock (and price) only if nobody wrote since ``expected_version``.

    No lock is held while the user edits: the conditional UPDATE decides, and a
    conflict carries the current values for the form to show.
    """
    pk = product if isinstance(product, int) else product.pk
    if not 0 <= new_stock <= MAX_UNITS or (
        new_price is not None and not 0 <= new_price <= MAX_UNITS
    ):
        raise StockLimitExceeded(maximum=MAX_UNITS)

    def apply() -> StockChange:
        # Every write bumps the version, so the stock read at the expected version
        # is exactly the stock the conditional UPDATE replaces.
        seen = Product.objects.only(
            "pk", "shop_id", "category_id", "stock", "price", "version"
        ).get(pk=pk)
        changes: dict[str, object] = {
            "stock": new_stock,
            "version": F("version") + 1,
            "updated_at": timezone.now(),
        }
        if new_price is not None:
            changes["price"] = new_price
        won = (
            seen.version == expected_version
            and Product.objects.filter(pk=pk, version=expected_version).update(**changes) == 1
        )
        if not won:
            current = Product.objects.values("stock", "price", "version").get(pk=pk)
            raise VersionConflict(current=dict(current))
        updated = Product.objects.get(pk=pk)
        movement = None
        if new_stock != seen.stock:
            movement = ledger_record(
                product=updated,
                before=seen.stock,
                after=new_stock,
                method=StockMovement.Method.OPTIMISTIC,
                actor=actor,
                reason=reason,
                idempotency_key=idempotency_key,
            )
        # The price's part (the ledger row above carries the stock's), written after
        # the ledger row: ledger, then rollup, the order a rollup rebuild locks them in.
        rollup = RollupDeltas()
        rollup.product(ProductState.of(seen), -1)
        rollup.product(replace(ProductState.of(updated), stock=seen.stock), 1)
        rollup.apply()
        if new_price is not None and new_price != seen.price:
            outbox_enqueue(
                topic=TOPIC_PRICE_CHANGED,
                key=f"product:{pk}",
                payload={
                    "product_ids": [pk],
                    "price_before": seen.price,
                    "price_after": new_price,
                    "actor_id": actor_ref(actor),
                    "reason": reason,
                },
            )
            bump("catalog")
        return StockChange.of(updated, movement)

    return atomic_with_retry(apply)
