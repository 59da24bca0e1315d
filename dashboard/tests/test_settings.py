"""Production settings pass Django's deploy checks; bad values fail loudly at start;
every PostgreSQL alias gets a deadline for every kind of wait (issue 15)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": "k3P9vQz7-Lw2Rt8Yx1Nb5Hc6Jd0Fg4Sa-Me9Uo7Ti2Wr5Qy8Xp3Zl6Kv1Bn4Cm0Dh",
    "ALLOWED_HOSTS": "ops.example.com",
    "STOREOPS_HTTPS": "true",
}


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_deploy_is_clean_with_production_env() -> None:
    result = _manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr


def test_malformed_setting_fails_loudly() -> None:
    result = _manage("check", STOREOPS_STICKY_SECONDS="soon")
    assert result.returncode != 0
    assert "STOREOPS_STICKY_SECONDS must be a int" in result.stderr


def _databases(**env: str) -> dict:
    """``settings.DATABASES`` as a fresh process builds it from ``env``."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "PYTEST", "DATABASE_", "STOREOPS_STATEMENT"))
    }
    code = "import json, config.settings as s; print(json.dumps(s.DATABASES, default=str))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)


def test_every_postgres_alias_has_a_deadline_for_every_wait(tmp_path: Path) -> None:
    pg = "postgres://u@db.example:5432"
    databases = _databases(
        DATABASE_URL=f"{pg}/main",
        DATABASE_REPLICA_URLS=f"{pg}/replica",
        DATABASE_SHARD_URLS=f"{pg}/s0,{pg}/s1",
        STOREOPS_VAR_DIR=str(tmp_path),
    )
    assert set(databases) == {"default", "replica_0", "shard_0", "shard_1"}
    # alias: (connect timeout s, statement_timeout ms, lock_timeout ms or None)
    expected = {
        "default": (5, 30_000, 10_000),
        "replica_0": (1, 5_000, None),  # reads only
        "shard_0": (2, 2_000, 10_000),
        "shard_1": (2, 2_000, 10_000),
    }
    for alias, (connect, statement_ms, lock_ms) in expected.items():
        conf = databases[alias]
        options = conf["OPTIONS"]
        assert conf["ENGINE"] == "store.backends.postgresql", alias  # the watchdog's backend
        assert conf["STOREOPS_DEADLINE"] == statement_ms / 1000, alias
        assert options["connect_timeout"] == connect, alias
        assert (options["keepalives"], options["tcp_user_timeout"]) == (1, 10_000), alias
        # A dead host is noticed by TCP within idle + interval x count (16 s).
        keepalive = (options["keepalives_idle"], options["keepalives_interval"])
        assert (*keepalive, options["keepalives_count"]) == (10, 2, 3), alias
        server = options["options"].split()
        assert f"statement_timeout={statement_ms}" in server, alias
        assert (f"lock_timeout={lock_ms}" in server) == (lock_ms is not None), alias


def test_commands_run_without_statement_deadlines(tmp_path: Path) -> None:
    """manage.py sets STOREOPS_STATEMENT_TIMEOUT=0: bulk seeding runs long statements."""
    pg = "postgres://u@db.example:5432"
    databases = _databases(
        DATABASE_URL=f"{pg}/main",
        DATABASE_SHARD_URLS=f"{pg}/s0",
        STOREOPS_VAR_DIR=str(tmp_path),
        STOREOPS_STATEMENT_TIMEOUT="0",
    )
    for alias in ("default", "shard_0"):
        assert databases[alias]["STOREOPS_DEADLINE"] == 0, alias
        assert "options" not in databases[alias]["OPTIONS"], alias
        assert databases[alias]["OPTIONS"]["tcp_user_timeout"] == 10_000, alias
