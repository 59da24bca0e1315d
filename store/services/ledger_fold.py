"""The stock ledger, folded into the stock columns of CategoryRollup and StoreHour.

The stock ledger is already an append-only log of every stock change, so a stock
change writes nothing to the rollups (the hot adjustment statement stays one row
update plus its ledger row) and ``stock_ledger_fold`` adds the ledger to
CategoryRollup's stock columns in the background; readers add the unfolded tail.
"""

from __future__ import annotations

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Count

from store.models import LedgerFold, StockMovement
from store.selectors.rollups import as_utc_hour, stock_tail
from store.services.rollups import RollupDeltas


def ledger_written(movement_id: int) -> None:
    """After a ledger row: every STOREOPS_LEDGER_FOLD_EVERY-th id folds the ledger.

    The fold runs once the writer's transaction has committed, so it never holds the
    writer's locks; ids skipped by rolled-back inserts only make one tail longer. A
    failing fold is logged, not raised: the write it follows has committed, and the
    next fold takes the rows this one left.
    """
    if movement_id % settings.STOREOPS_LEDGER_FOLD_EVERY == 0:
        transaction.on_commit(stock_ledger_fold, robust=True)


def stock_ledger_fold() -> int:
    """Add the finished part of the ledger's tail to CategoryRollup; rows folded.

    One fold at a time (the LedgerFold row, locked with SKIP LOCKED: a second caller
    returns at once). On PostgreSQL a fold adds the rows up to the candidate end the
    previous fold recorded, once the writing transactions of this database that were
    running then have ended, and records a new candidate: so the tail stays within
    two folds' worth of rows. A transaction that drew a ledger id had written before
    (every stock write updates the product first), so it had a transaction id and
    shows in pg_stat_activity (prepared transactions would not: none are used).
    SQLite has a single writer: what it sees committed is final at once.
    """
    db = connections["default"]
    with transaction.atomic():
        fold = LedgerFold.objects.select_for_update(skip_locked=True).filter(pk=1).first()
        if fold is None:
            if LedgerFold.objects.exists():
                return 0  # another fold holds it
            fold = LedgerFold.objects.create(pk=1)  # after a flush (tests)
        with db.cursor() as cursor:
            if db.vendor == "postgresql":
                ledger = StockMovement._meta.db_table
                ready = True
                if fold.candidate_waits_for:
                    cursor.execute(
                        "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity"
                        " WHERE datname = current_database()"
                        " AND backend_xid::text::bigint = ANY(%s))",
                        [fold.candidate_waits_for],
                    )
                    ready = cursor.fetchone()[0]
                end = fold.candidate_id if ready else fold.folded_id
                # The last id (of the statement's snapshot) and, read after it, the
                # writing transactions still running: any lower id is theirs. (The
                # activity view is cached per transaction: read it afresh.)
                cursor.execute("SELECT pg_stat_clear_snapshot()")
                cursor.execute(
                    f"SELECT (SELECT max(id) FROM {ledger}),"  # noqa: S608
                    " ARRAY(SELECT backend_xid::text::bigint FROM pg_stat_activity"
                    " WHERE datname = current_database() AND backend_xid IS NOT NULL"
                    " AND pid <> pg_backend_pid())"
                )
                last, running = cursor.fetchone()
            else:
                last = StockMovement.objects.order_by("-pk").values_list("pk", flat=True).first()
                running, end = [], last or fold.folded_id
        rows = 0
        if end > fold.folded_id:
            deltas = RollupDeltas()
            tail = stock_tail(by_hour=True).filter(pk__lte=end).annotate(rows=Count("pk"))
            for row in tail:
                category = deltas.categories[(row["shop_id"], row["category_id"], row["slot"])]
                # StoreHour's units, low and out columns, at the ledger rows' hour.
                hour = deltas.store_hours[(as_utc_hour(row["hour"]), row["slot"])]
                for n, column in enumerate(("stock_sum", "low_stock", "out_of_stock")):
                    category[2 + n] += row[column]
                    hour[1 + n] += row[column]
                rows += row["rows"]
            deltas.apply()
            fold.folded_id = end
        if db.vendor != "postgresql":
            fold.candidate_id = fold.folded_id
        elif fold.folded_id == fold.candidate_id and (last or 0) > fold.candidate_id:
            fold.candidate_id, fold.candidate_waits_for = last, running
        fold.save()
    return rows
