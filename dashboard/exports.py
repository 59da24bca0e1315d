"""Exports of a filtered, sorted table: streaming CSV and JSON, bounded XLSX.

django-tables2's own export materialises every row (and renders each cell) in
memory; here the table only decides *which* columns and *which* queryset. Rows come
straight from ``values_list(...).iterator(chunk_size=...)`` (a server-side cursor on
PostgreSQL, from a replica when the router picks one) and leave as typed values:
numbers as numbers, money as currency units, timestamps as ISO 8601. CSV on
PostgreSQL runs the same query through ``COPY ... TO STDOUT`` instead (see
``_copy_csv_chunks``): it is the one format the database can write itself.

Text cells a spreadsheet would run as a formula (starting with ``= + - @``, tab or
carriage return: OWASP's CSV-injection list) get a leading ``'`` in CSV and XLSX,
so they open as text; numbers are never touched, and JSON carries text as it is.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from itertools import islice
from typing import Any

import django_tables2 as tables
from django.conf import settings
from django.db import DatabaseError, connections
from django.db.models import Case, CharField, F, Func, QuerySet, Value, When
from django.db.models.functions import Concat, Left
from django.db.models.lookups import In
from django.http import FileResponse, HttpResponseBase, StreamingHttpResponse
from django.utils import timezone
from psycopg import ClientCursor

from dashboard.tables import Kind
from store import deadlines

logger = logging.getLogger("dashboard.exports")

CHUNK_ROWS = 5000
# The response leaves in blocks of at least this many bytes (the last may be smaller):
# one chunk per row meant one send() per row, and the worker, not the database, set
# the pace. Rows are formatted a few at a time, so a block is at most this plus a
# handful of rows: memory stays bounded by the block size, whatever the export's size.
BLOCK_BYTES = 64 * 1024
PIECE_ROWS = 64
# One sheet holds 1,048,576 rows; the first is the header.
XLSX_MAX_ROWS = 1_048_575
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


class ExportTooLarge(Exception):
    MESSAGE = (
        "An XLSX sheet holds at most 1,048,575 rows and this table has more. "
        "Narrow the filters, or export CSV or JSON, which have no limit."
    )


@dataclass(frozen=True)
class ExportColumn:
    name: str  # the machine name: CSV and JSON headers
    path: str
    kind: str
    label: str = ""  # the on-screen header: XLSX, read by people

    @property
    def title(self) -> str:
        return self.label or self.name


def export_columns(table: tables.Table) -> list[ExportColumn]:
    """The table's visible, exportable columns, in order, with their ORM paths."""
    return [
        ExportColumn(bound.name, str(bound.accessor), bound.column.export_kind, str(bound.header))
        for bound in table.columns
        if not bound.column.exclude_from_export
    ]


def export_queryset(table: tables.Table) -> QuerySet[Any]:
    """The filtered queryset with the table's current ordering applied."""
    return table.data.data


# OWASP's CSV-injection triggers: a cell starting with one of these is a formula to
# Excel, LibreOffice or Sheets ("-" and "+" too: "-1+1" computes).
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: str) -> str:
    """``value`` as a spreadsheet must show it: a formula trigger gets a leading ``'``."""
    return "'" + value if value.startswith(FORMULA_TRIGGERS) else value


def _sql_text(template: str) -> Callable[[str], Func]:
    return lambda path: Func(F(path), template=template, output_field=CharField())


def _sql_neutralised(path: str) -> Case:
    """``neutralise`` in SQL for COPY: CASE WHEN left(col, 1) IN (...) THEN "'" || col.

    The trigger characters travel as bound parameters; NULL stays NULL.
    """
    return Case(
        When(
            In(Left(F(path), 1), list(FORMULA_TRIGGERS)),
            then=Concat(Value("'"), F(path), output_field=CharField()),
        ),
        default=F(path),
        output_field=CharField(),
    )


# On PostgreSQL the database formats what the file needs as text: parsing timestamps
# and numerics into Python objects only to format them again halves the throughput.
_PG_TEXT: dict[tuple[str, str], Callable[[str], Func | Case]] = {
    (fmt, Kind.DATETIME): _sql_text(
        "to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"
    )
    for fmt in ("csv", "json")
} | {
    ("csv", Kind.MONEY): _sql_text("((%(expressions)s) / 100.0)::numeric(20, 2)::text"),
    ("csv", Kind.DECIMAL): _sql_text("(%(expressions)s)::text"),
    ("csv", Kind.BOOL): _sql_text("CASE WHEN %(expressions)s THEN 'true' ELSE 'false' END"),
    ("csv", Kind.TEXT): _sql_neutralised,
}


def _is_postgresql(queryset: QuerySet[Any]) -> bool:
    return connections[queryset.db].vendor == "postgresql"


def export_values(
    queryset: QuerySet[Any], columns: list[ExportColumn], fmt: str
) -> tuple[QuerySet[Any], set[int]]:
    """A values_list queryset of the columns, and the indexes SQL already formatted."""
    annotations: dict[str, Func | Case] = {}
    fields: list[str] = []
    done: set[int] = set()
    in_sql = _is_postgresql(queryset)
    for i, column in enumerate(columns):
        to_text = _PG_TEXT.get((fmt, column.kind)) if in_sql else None
        if to_text is None:
            fields.append(column.path)
            continue
        annotations[f"export_{i}"] = to_text(column.path)
        fields.append(f"export_{i}")
        done.add(i)
    if annotations:
        queryset = queryset.annotate(**annotations)
    return queryset.values_list(*fields), done


def export_rows(
    queryset: QuerySet[Any], columns: list[ExportColumn], fmt: str
) -> tuple[Iterator[tuple[Any, ...]], set[int]]:
    """The rows as tuples from a server-side cursor, and the columns SQL formatted."""
    values, done = export_values(queryset, columns, fmt)
    return values.iterator(chunk_size=CHUNK_ROWS), done


def _money_text(cents: int) -> str:
    whole, part = divmod(cents, 100)
    return f"{whole}.{part:02d}"


def _iso(value: datetime) -> str:
    return value.isoformat()


def _text_cell(value: Any) -> Any:
    return neutralise(value) if isinstance(value, str) else value


# Per format, the conversion each kind needs (None: the value is written as is).
_CSV: dict[str, Callable[[Any], Any] | None] = {
    Kind.TEXT: _text_cell,
    Kind.MONEY: _money_text,
    Kind.BOOL: lambda v: "true" if v else "false",
    Kind.DATETIME: _iso,
}
_JSON: dict[str, Callable[[Any], Any] | None] = {
    # cents / 100 as a float prints as the shortest decimal: 1999 -> 19.99
    Kind.MONEY: lambda v: v / 100,
    Kind.DECIMAL: float,
    Kind.DATETIME: _iso,
}
_XLSX: dict[str, Callable[[Any], Any] | None] = {
    # openpyxl stores any string starting with "=" as a formula.
    Kind.TEXT: _text_cell,
    Kind.MONEY: lambda v: Decimal(v) / 100,
    # Spreadsheets have no time zones: write UTC wall-clock time.
    Kind.DATETIME: lambda v: v.astimezone(UTC).replace(tzinfo=None),
}


def _converted(
    rows: Iterable[tuple[Any, ...]],
    columns: list[ExportColumn],
    table: dict[str, Any],
    done: set[int],
) -> Iterator[Any]:
    convert = [
        (i, table[c.kind]) for i, c in enumerate(columns) if table.get(c.kind) and i not in done
    ]
    if not convert:
        yield from rows
        return
    for row in rows:
        out = list(row)
        for i, fn in convert:
            if out[i] is not None:
                out[i] = fn(out[i])
        yield out


def _csv_header(columns: list[ExportColumn]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([c.name for c in columns])
    return buffer.getvalue()


class _RowsEndingInNewline:
    """A csv.writer target that ends each row in "\\n", as PostgreSQL's COPY does.

    Python's writer quotes only the characters of its own line terminator: with
    "\\n" a "\\r" inside a value went out unquoted and split the row for readers.
    So the writer ends rows in "\\r\\n" (both then quoted inside values) and each
    row, which it writes in one call, is kept with "\\n" instead.
    """

    def __init__(self) -> None:
        self.rows: list[str] = []

    def write(self, row: str) -> None:
        self.rows.append(row[:-2] + "\n")


def _csv_chunks(rows: Iterable[Any], columns: list[ExportColumn], done: set[int]) -> Iterator[str]:
    target = _RowsEndingInNewline()
    writer = csv.writer(target, lineterminator="\r\n")
    yield _csv_header(columns)
    converted = _converted(rows, columns, _CSV, done)
    while True:
        batch = list(islice(converted, PIECE_ROWS))
        if not batch:
            return
        writer.writerows(batch)
        yield "".join(target.rows)
        target.rows.clear()


def _copy_csv_chunks(queryset: QuerySet[Any], columns: list[ExportColumn]) -> Iterator[bytes]:
    """CSV straight from PostgreSQL's ``COPY (query) TO STDOUT``.

    The same annotated query as the cursor path, but the database writes the CSV in C:
    the worker only forwards its rows (about a million rows per CPU-second instead of
    three hundred thousand), which holds the rate on a busy machine. psycopg hands
    over one row per COPY message; ``_blocks`` regroups them, so memory stays flat.
    """
    values, _ = export_values(queryset, columns, "csv")
    sql, params = values.query.sql_with_params()
    connection = connections[values.db]
    connection.ensure_connection()
    # COPY cannot take bind parameters: psycopg merges them client-side, quoted and
    # escaped (mogrify); without parameters, Django's "%%" escapes are undone here.
    query = ClientCursor(connection.connection).mogrify(sql, params) if params else sql % ()
    yield _csv_header(columns).encode()
    with (
        connection.cursor() as cursor,
        _export_deadline(connection, cursor),
        cursor.copy(f"COPY ({query}) TO STDOUT (FORMAT csv)") as copy,
    ):
        for block in copy:
            yield bytes(block)


@contextlib.contextmanager
def _export_deadline(connection: Any, cursor: Any) -> Iterator[None]:
    """The export's own deadline (``STOREOPS_EXPORT_TIMEOUT``) instead of the alias's
    per-request one, which would cancel the COPY mid-file: the server's
    ``statement_timeout`` for this statement, restored afterwards (the connection is
    reused), and the watchdog's, in case the database goes silent mid-stream."""
    seconds = float(settings.STOREOPS_EXPORT_TIMEOUT)
    cursor.execute("SELECT current_setting('statement_timeout')")
    previous = cursor.fetchone()[0]
    cursor.execute(
        "SELECT set_config('statement_timeout', %s, false)", [f"{int(seconds * 1000)}ms"]
    )
    try:
        with connection.watch(seconds + deadlines.GRACE_SECONDS if seconds else 0):
            yield
    finally:
        with contextlib.suppress(DatabaseError):
            cursor.execute("SELECT set_config('statement_timeout', %s, false)", [previous])


def _json_chunks(rows: Iterable[Any], columns: list[ExportColumn], done: set[int]) -> Iterator[str]:
    names = [c.name for c in columns]
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    separator = "[\n"
    for row in _converted(rows, columns, _JSON, done):
        yield separator + encode(dict(zip(names, row, strict=True)))
        separator = ",\n"
    yield "[\n]\n" if separator == "[\n" else "\n]\n"


def _blocks(pieces: Iterable[str | bytes], size: int = BLOCK_BYTES) -> Iterator[bytes]:
    """The pieces (a few rows each, or one COPY row) regrouped into blocks of at least
    ``size`` bytes, the last one excepted. Text is UTF-8, as the response declares."""
    buffer = bytearray()
    for piece in pieces:
        buffer += piece.encode() if isinstance(piece, str) else piece
        if len(buffer) >= size:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


def _logged(chunks: Iterator[Any], what: str) -> Iterator[Any]:
    started = time.monotonic()
    sent = 0
    for chunk in chunks:
        sent += len(chunk)
        yield chunk
    seconds = time.monotonic() - started
    logger.info("export finished %s size=%d seconds=%.2f", what, sent, seconds)


def export_filename(table_name: str, fmt: str) -> str:
    return f"{table_name}-{timezone.now():%Y%m%dT%H%M%SZ}.{fmt}"


def export_response(
    *, table: tables.Table, table_name: str, fmt: str, username: str, query: str
) -> HttpResponseBase:
    """The download of ``table`` (filtered and sorted) as csv, json or xlsx.

    Raises ExportTooLarge for an XLSX beyond one sheet's rows.
    """
    columns = export_columns(table)
    queryset = export_queryset(table)
    # Choose the database now, inside the request (replica unless pinned to the
    # primary): the rows are read later, while the response streams.
    queryset = queryset.using(queryset.db)
    what = f"table={table_name} format={fmt} user={username} query={query!r}"
    logger.info("export started %s", what)
    filename = export_filename(table_name, fmt)
    if fmt == "xlsx":
        return FileResponse(
            _xlsx_file(queryset, columns, title=table_name),
            as_attachment=True,
            filename=filename,
            content_type=CONTENT_TYPES["xlsx"],
        )
    chunks: Iterator[Any]
    if fmt == "csv" and _is_postgresql(queryset):
        chunks = _copy_csv_chunks(queryset, columns)
    else:
        rows, done = export_rows(queryset, columns, fmt)
        chunks = (_csv_chunks if fmt == "csv" else _json_chunks)(rows, columns, done)
    response = StreamingHttpResponse(
        _logged(_blocks(chunks), what), content_type=CONTENT_TYPES[fmt]
    )
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


# Money as currency with two decimals, times as people read them; widths by kind.
XLSX_FORMATS = {Kind.MONEY: "#,##0.00", Kind.DATETIME: "yyyy-mm-dd hh:mm:ss"}
XLSX_WIDTHS = {Kind.TEXT: 28, Kind.DATETIME: 20, Kind.MONEY: 14}


def _xlsx_file(queryset: QuerySet[Any], columns: list[ExportColumn], *, title: str) -> Any:
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    # A bounded count (stops at the limit) rather than COUNT(*) of everything.
    if queryset.order_by()[: XLSX_MAX_ROWS + 1].count() > XLSX_MAX_ROWS:
        raise ExportTooLarge(ExportTooLarge.MESSAGE)
    # Write-only mode keeps one row in memory; the workbook spools to a temp file.
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(title=title)
    # What comes before the rows in the file: widths and the frozen header.
    for index, column in enumerate(columns, start=1):
        width = max(len(column.title) + 4, XLSX_WIDTHS.get(column.kind, 12))
        sheet.column_dimensions[get_column_letter(index)].width = width
    sheet.freeze_panes = "A2"
    header = []
    for column in columns:
        cell = WriteOnlyCell(sheet, value=column.title)
        cell.font = Font(bold=True)
        header.append(cell)
    sheet.append(header)
    formats = {i: XLSX_FORMATS[c.kind] for i, c in enumerate(columns) if c.kind in XLSX_FORMATS}
    count = 0
    rows, done = export_rows(queryset, columns, "xlsx")
    for row in _converted(rows, columns, _XLSX, done):
        values = list(row)
        for i, number_format in formats.items():
            if values[i] is not None:
                cell = WriteOnlyCell(sheet, value=values[i])
                cell.number_format = number_format
                values[i] = cell
        sheet.append(values)
        count += 1
    sheet.auto_filter.ref = f"A1:{get_column_letter(max(len(columns), 1))}{count + 1}"
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - FileResponse closes it
    workbook.save(spool)
    spool.seek(0)
    return spool
