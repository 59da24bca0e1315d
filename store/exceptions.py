"""Domain errors raised by services; each carries the HTTP status it answers with.

Messages are class constants (or built from them) so tests and views can assert
them without copying strings around. ``status`` is the one mapping to HTTP: 409 for
the ``Conflict`` family (the request was fine, the store's state refused it: retry
or reload), 422 for the rest (the request itself cannot be done as asked).
"""

from __future__ import annotations

from typing import Any


class StoreError(Exception):
    """Base class: its message is safe to show to ops staff."""

    status = 422


class Conflict(StoreError):
    """The store's current state refuses the change (a lost race, a busy key, an
    order in the wrong state): reloading or retrying may succeed."""

    status = 409


class InsufficientStock(Conflict):
    """A decrement would take stock below zero (HTTP 409)."""

    MESSAGE = "Only {available} in stock: cannot remove {requested}."

    def __init__(self, *, product_id: int, available: int, requested: int) -> None:
        self.product_id = product_id
        self.available = available
        self.requested = requested
        super().__init__(self.MESSAGE.format(available=available, requested=requested))


class StockLimitExceeded(StoreError):
    """A stock or price value would not fit its column (HTTP 422)."""

    MESSAGE = "That change would push the value past the allowed maximum of {maximum}."

    def __init__(self, *, maximum: int) -> None:
        self.maximum = maximum
        super().__init__(self.MESSAGE.format(maximum=maximum))


class VersionConflict(Conflict):
    """An optimistic write lost: the row changed since the form was rendered (HTTP 409)."""

    MESSAGE = "Changed by someone else since you opened it: now stock {stock}, price {price}."

    def __init__(self, *, current: dict[str, Any]) -> None:
        self.current = current
        # The price in currency units, as the edit form takes it (cents are stored).
        whole, part = divmod(int(current["price"]), 100)
        price = f"{whole:,}.{part:02d}"
        super().__init__(self.MESSAGE.format(stock=current["stock"], price=price))


class IdempotencyMismatch(StoreError):
    """The key was already used for a different request (HTTP 422)."""

    MESSAGE = "This form was already submitted with different values; reload it and try again."

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


class IdempotencyInProgress(Conflict):
    """The same key is being processed right now (HTTP 409)."""

    MESSAGE = "This request is already being processed; wait a moment and reload."

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


class ConcurrencyFailure(Conflict):
    """Deadlocks or serialization failures persisted after bounded retries (HTTP 409)."""

    MESSAGE = "The store is busy and the change could not be applied; please try again."

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


class OrderCancelled(Conflict):
    MESSAGE = "Order #{pk} is cancelled and cannot be paid."

    def __init__(self, *, pk: int) -> None:
        super().__init__(self.MESSAGE.format(pk=pk))


class OrderNeedsRefund(Conflict):
    MESSAGE = "Order #{pk} is paid: refund it before cancelling."

    def __init__(self, *, pk: int) -> None:
        super().__init__(self.MESSAGE.format(pk=pk))


class PaymentAmountMismatch(StoreError):
    MESSAGE = "Payment of {amount} does not match the order total of {total}."

    def __init__(self, *, amount: int, total: int) -> None:
        self.amount = amount
        self.total = total
        super().__init__(self.MESSAGE.format(amount=amount, total=total))


class InvalidOrder(StoreError):
    """An order request that cannot be placed as asked (HTTP 422)."""


class NothingToChange(StoreError):
    MESSAGE = "No products match those filters."

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


class BucketMoving(StoreError):
    """A write hit a bucket that is being moved to another shard (retry in seconds)."""

    MESSAGE = "Customer data for this user is being moved between shards; retry in a few seconds."

    def __init__(self, *, bucket: int) -> None:
        self.bucket = bucket
        super().__init__(self.MESSAGE)


class MoveRefused(StoreError):
    """A bucket move's arguments make no sense (unknown shard, bad bucket range)."""


class MoveVerificationFailed(StoreError):
    """The copy of a bucket does not match its source (it stays frozen; re-run the move)."""
