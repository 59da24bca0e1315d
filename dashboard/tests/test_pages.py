"""The edges a first user meets: logging out, the 403 page, the icon, the skip link."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.test import Client

pytestmark = pytest.mark.django_db


def test_logging_out_says_so(viewer_client: Client) -> None:
    response = viewer_client.post("/accounts/logout/")
    assert response.status_code == 200
    assert "You have been logged out" in response.content.decode()
    assert viewer_client.get("/").status_code == 302  # really logged out


def test_every_page_has_an_icon_and_a_skip_link(viewer_client: Client) -> None:
    html = viewer_client.get("/products/").content.decode()
    assert 'rel="icon"' in html
    assert 'href="#main"' in html
    assert 'id="main"' in html
    assert Client().get("/accounts/login/").content.decode().count('rel="icon"') == 1


def test_a_refused_page_is_styled_and_says_why(outsider_client: Client) -> None:
    response = outsider_client.get("/products/")
    assert response.status_code == 403
    html = response.content.decode()
    assert '<nav class="navbar' in html  # inside the console's layout
    assert "store.view_dashboard" in html  # what to ask an administrator for


def test_the_empty_ledger_says_where_movements_come_from(viewer_client: Client) -> None:
    html = viewer_client.get("/stock/ledger/").content.decode()
    assert "Movements come from stock adjustments" in html


def test_demo_documents_addrport(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        call_command("demo", "--help")
    assert "--addrport" in capsys.readouterr().out


def test_a_request_warning_is_logged_once_under_debug() -> None:
    """Django's DEBUG console handler on "django" and ours on the root printed it twice."""
    import os
    import subprocess
    import sys

    snippet = (
        "import django; django.setup(); import logging; "
        "logging.getLogger('django.request').warning('Not Found: /nowhere')"
    )
    env = os.environ | {"DEBUG": "true", "DJANGO_SETTINGS_MODULE": "config.settings"}
    done = subprocess.run(
        [sys.executable, "-c", snippet], env=env, capture_output=True, text=True, check=True
    )
    assert (done.stdout + done.stderr).count("Not Found: /nowhere") == 1
