"""Production settings pass Django's deploy checks; bad values fail loudly at start."""

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
