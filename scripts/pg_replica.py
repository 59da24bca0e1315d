"""Start or stop a local PostgreSQL streaming replica of the running server.

    uv run python scripts/pg_replica.py start [--port 5433]   # prints the replica's URL
    uv run python scripts/pg_replica.py status [--port 5433]
    uv run python scripts/pg_replica.py stop [--port 5433]    # stops it and removes its files
    uv run python scripts/pg_replica.py halt|resume [--port 5433]  # an outage, for tests

``start`` takes a base backup of the primary (``pg_basebackup -R``: it writes
``standby.signal`` and ``primary_conninfo``) into a temporary directory and starts a
hot standby on another port as the ``postgres`` user. It is idempotent: a running
replica on that port is reused. If the primary does not accept replication
connections from 127.0.0.1 yet, the script adds one ``pg_hba.conf`` line (trust, as
for every other local connection on a development or CI machine) and reloads the
server, so a fresh CI machine needs no manual step. The
replica is given a physical replication slot (``storeops_replica_<port>``) so that it
can catch up after an outage however much the primary wrote meanwhile; ``stop``
drops the slot, and ``start`` drops a stale one left by a crashed run, so a thrown-away
replica never makes the primary keep WAL for ever.

Environment: ``STOREOPS_PG_PRIMARY`` (default ``postgres://postgres@127.0.0.1:5432``)
and ``STOREOPS_PG_BIN`` (default ``/usr/lib/postgresql/15/bin``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

PRIMARY = os.environ.get("STOREOPS_PG_PRIMARY", "postgres://postgres@127.0.0.1:5432")
PG_BIN = Path(os.environ.get("STOREOPS_PG_BIN", "/usr/lib/postgresql/15/bin"))
HBA_LINE = "host replication all 127.0.0.1/32 trust"
# Hot standby refuses to start when these are lower than on the primary.
MUST_MATCH = (
    "max_connections",
    "max_worker_processes",
    "max_wal_senders",
    "max_prepared_transactions",
    "max_locks_per_transaction",
)


def _state_file(port: int) -> Path:
    return Path(tempfile.gettempdir()) / f"storeops_pg_replica_{port}.path"


def _as_postgres(args: list[str]) -> list[str]:
    # The server refuses to run as root; on a developer login we already are the owner.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


def _run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    # Fixed argument lists built here, no shell: nothing untrusted reaches the call.
    # Tool chatter goes to stderr: stdout carries only the URL that callers capture.
    kwargs.setdefault("stdout", sys.stderr)
    return subprocess.run(_as_postgres(args), check=True, text=True, **kwargs)  # noqa: S603  # type: ignore[call-overload]


def _primary(dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(f"{PRIMARY}/{dbname}", autocommit=True, connect_timeout=5)


def _slot(port: int) -> str:
    return f"storeops_replica_{port}"


def _drop_slot(port: int) -> None:
    with _primary() as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE slot_name = %s AND NOT active",
            [_slot(port)],
        )


def _replica_url(port: int) -> str:
    host = urlsplit(PRIMARY).hostname or "127.0.0.1"
    return f"postgres://postgres@{host}:{port}"


def _ensure_primary_accepts_replication() -> dict[str, str]:
    with _primary() as conn:
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                [["wal_level", "hba_file", *MUST_MATCH]],
            ).fetchall()
        )
        if settings["wal_level"] == "minimal":
            sys.exit(
                "the primary runs with wal_level=minimal: set wal_level=replica and restart it"
            )
        if int(settings["max_wal_senders"]) < 1:
            sys.exit("the primary has max_wal_senders=0: raise it and restart it")
        hba = Path(settings["hba_file"])
        lines = [line.split("#", 1)[0].split() for line in hba.read_text().splitlines()]
        allowed = any(
            len(f) >= 4 and f[0] == "host" and f[1] == "replication" and f[3] == "127.0.0.1/32"
            for f in lines
        )
        if not allowed:
            with hba.open("a") as fh:
                fh.write(f"\n# added by storeops scripts/pg_replica.py\n{HBA_LINE}\n")
            conn.execute("SELECT pg_reload_conf()")
            print(f"added '{HBA_LINE}' to {hba} and reloaded the primary", file=sys.stderr)
    return settings


def _is_up(port: int) -> bool:
    try:
        with psycopg.connect(f"{_replica_url(port)}/postgres", connect_timeout=2) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            return bool(row and row[0])
    except psycopg.OperationalError:
        return False


def start(port: int) -> str:
    if _is_up(port):
        return _replica_url(port)
    _stop_and_remove(port)  # leftovers of a crashed run
    _drop_slot(port)
    settings = _ensure_primary_accepts_replication()
    data = Path(tempfile.mkdtemp(prefix=f"storeops_replica_{port}_"))
    shutil.chown(data, "postgres", "postgres") if os.geteuid() == 0 else None
    data.chmod(0o700)
    _state_file(port).write_text(str(data))
    primary = urlsplit(PRIMARY)
    _run(
        [
            str(PG_BIN / "pg_basebackup"),
            f"--host={primary.hostname or '127.0.0.1'}",
            f"--port={primary.port or 5432}",
            f"--username={primary.username or 'postgres'}",
            f"--pgdata={data}",
            "--write-recovery-conf",
            "--wal-method=stream",
            "--create-slot",
            f"--slot={_slot(port)}",
            "--checkpoint=fast",
            "--no-sync",  # a throw-away copy: no need to fsync gigabytes
        ]
    )
    # Debian keeps postgresql.conf and pg_hba.conf in /etc, outside the data directory.
    conf = [
        f"port = {port}",
        "listen_addresses = '127.0.0.1'",
        f"unix_socket_directories = '{data}'",
        "hot_standby = on",
        "hot_standby_feedback = on",
        "fsync = off",
        "shared_buffers = '64MB'",
        "logging_collector = off",
        *(f"{name} = {settings[name]}" for name in MUST_MATCH),
    ]
    _write_as_postgres(data / "postgresql.conf", "\n".join(conf) + "\n")
    _write_as_postgres(data / "pg_ident.conf", "")
    _write_as_postgres(
        data / "pg_hba.conf",
        "local all all trust\nhost all all 127.0.0.1/32 trust\n" + HBA_LINE + "\n",
    )
    _run(
        [
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(data / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        ]
    )
    deadline = time.monotonic() + 60
    while not _is_up(port):
        if time.monotonic() > deadline:
            sys.exit(f"the replica on port {port} did not come up; see {data / 'server.log'}")
        time.sleep(0.5)
    return _replica_url(port)


def _write_as_postgres(path: Path, text: str) -> None:
    path.write_text(text)
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def _stop_and_remove(port: int) -> bool:
    state = _state_file(port)
    if not state.exists():
        return False
    data = Path(state.read_text().strip())
    if (data / "postmaster.pid").exists():
        subprocess.run(  # noqa: S603 (fixed arguments, no shell)
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
            check=False,
        )
    shutil.rmtree(data, ignore_errors=True)
    state.unlink(missing_ok=True)
    _drop_slot(port)
    return True


def is_up(port: int) -> bool:
    return _is_up(port)


def stop(port: int) -> bool:
    """Stop the replica on ``port`` and remove its files and slot; False if none."""
    return _stop_and_remove(port)


def _data_dir(port: int) -> Path:
    state = _state_file(port)
    if not state.exists():
        sys.exit(f"no replica was started on port {port}")
    return Path(state.read_text().strip())


def halt(port: int) -> None:
    """Stop the server but keep its files (a replica outage, for tests).

    A fast shutdown writes a restartpoint, so the restart replays only what the
    primary wrote during the outage.
    """
    _run([str(PG_BIN / "pg_ctl"), "-D", str(_data_dir(port)), "-m", "fast", "-w", "stop"])


def resume(port: int, *, timeout: float = 300) -> None:
    """Start a halted replica again and wait until it accepts reads (it catches up
    from the primary through its slot)."""
    data = _data_dir(port)
    _run([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(data / "server.log"), "start"])
    deadline = time.monotonic() + timeout
    while not _is_up(port):
        if time.monotonic() > deadline:
            sys.exit(f"the replica on port {port} did not come back; see {data / 'server.log'}")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["start", "stop", "status", "halt", "resume"])
    parser.add_argument("--port", type=int, default=5433)
    args = parser.parse_args()
    if args.action == "start":
        print(start(args.port))
    elif args.action == "halt":
        halt(args.port)
    elif args.action == "resume":
        resume(args.port)
    elif args.action == "stop":
        print("stopped and removed" if stop(args.port) else "no replica to stop")
    else:
        up = _is_up(args.port)
        print(f"{_replica_url(args.port)} {'up' if up else 'down'}")
        sys.exit(0 if up else 1)


if __name__ == "__main__":
    main()
