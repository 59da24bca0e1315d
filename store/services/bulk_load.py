"""Loading many rows fast: COPY on PostgreSQL, batched ``executemany`` elsewhere,
with secondary indexes and foreign keys dropped for the load and rebuilt once after.

Used by the demo seeding (store/services/seeding.py); explicit ids, no model code
runs per row, so the caller owns the rows' consistency (and the rollups after).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.core.management.color import no_style
from django.db import connections


class BulkSink:
    """Writes rows to one database: COPY on PostgreSQL, executemany elsewhere."""

    def __init__(self, alias: str) -> None:
        self.connection = connections[alias]
        self.vendor = self.connection.vendor

    def write(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        count = 0
        with self.connection.cursor() as cursor:
            if self.vendor == "postgresql":
                sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
                with cursor.cursor.copy(sql) as copy:
                    for row in rows:
                        copy.write_row(row)
                        count += 1
            else:
                ops = self.connection.ops
                placeholders = ", ".join(["%s"] * len(columns))
                # Identifiers come from model metadata, never input; values are bound.
                sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"  # noqa: S608
                batch = []
                for row in rows:
                    batch.append(
                        [
                            ops.adapt_datetimefield_value(v)
                            if isinstance(v, datetime)
                            else str(v)
                            if isinstance(v, Decimal)
                            else v
                            for v in row
                        ]
                    )
                    if len(batch) >= 5_000:
                        cursor.executemany(sql, batch)
                        count += len(batch)
                        batch.clear()
                if batch:
                    cursor.executemany(sql, batch)
                    count += len(batch)
        return count

    @contextmanager
    def bulk_load(self, models: list[Any]) -> Iterator[None]:
        """On PostgreSQL, drop secondary indexes and FKs for the load, then rebuild them.

        Building an index once is far cheaper than maintaining it row by row, and
        re-adding a foreign key validates it in one join instead of queueing a
        deferred trigger check per row. Must run inside the loading transaction.
        """
        if self.vendor != "postgresql":
            yield
            return
        tables = [model._meta.db_table for model in models]
        with self.connection.cursor() as cursor:
            cursor.execute(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
                "FROM pg_constraint WHERE contype = 'f' AND conrelid::regclass::text = ANY(%s)",
                [tables],
            )
            foreign_keys = cursor.fetchall()
            cursor.execute(
                "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) "
                "FROM pg_index i WHERE i.indrelid::regclass::text = ANY(%s) "
                "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
                [tables],
            )
            indexes = cursor.fetchall()
            for table, name, _ in foreign_keys:
                cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
            for name, _ in indexes:
                cursor.execute(f"DROP INDEX {name}")
        yield
        with self.connection.cursor() as cursor:
            cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
            for _, definition in indexes:
                cursor.execute(definition)
            for table, name, definition in foreign_keys:
                cursor.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')

    def reset_sequences(self, models: list[Any]) -> None:
        statements = self.connection.ops.sequence_reset_sql(no_style(), models)
        with self.connection.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)
