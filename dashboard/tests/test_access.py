"""Every URL but login and the health probes needs a login; the dashboard a permission."""

import re

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve

pytestmark = pytest.mark.django_db
PUBLIC = {"login", "health-liveness", "health-readiness"}


def _named_urls(resolver: URLResolver | None = None, prefix: str = "") -> list[tuple[str, str]]:
    found = []
    for entry in (resolver or get_resolver()).url_patterns:
        if isinstance(entry, URLResolver):
            if entry.namespace == "admin":
                continue  # the admin has its own login, tested below
            found += _named_urls(entry, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern) and entry.name:
            found.append((entry.name, prefix + str(entry.pattern)))
    return found


def _concrete(pattern: str) -> str:
    """A real path for a route: every converter gets a value it accepts."""
    path = re.sub(r"<int:\w+>", "1", pattern.replace("^", "").replace("$", ""))
    return "/" + re.sub(r"<(?:str|slug):\w+>", "trending", path)


@pytest.mark.parametrize(("name", "pattern"), _named_urls())
def test_anonymous_is_sent_to_login(client: Client, name: str, pattern: str) -> None:
    path = _concrete(pattern)
    resolve(path)  # the route exists, so a redirect below is the login check's doing
    response = client.get(path)
    if name in PUBLIC:
        assert response.status_code in (200, 503)
    else:
        assert response.status_code == 302, name
        assert response["Location"].startswith("/accounts/login/")


def test_admin_requires_staff_login(client: Client) -> None:
    response = client.get("/admin/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_logged_in_without_permission_gets_403(outsider_client: Client) -> None:
    assert outsider_client.get("/").status_code == 403


def test_viewer_sees_the_dashboard(viewer_client: Client) -> None:
    response = viewer_client.get("/")
    assert response.status_code == 200
    assert b"Dashboard" in response.content
    assert b"viewer" in response.content  # their role is shown in the header


def test_login_form_logs_in(client: Client, viewer) -> None:
    from conftest import PASSWORD

    response = client.post("/accounts/login/", {"username": "viewer", "password": PASSWORD})
    assert response.status_code == 302
    assert client.get("/").status_code == 200


def test_wrong_password_shows_a_message(client: Client, viewer) -> None:
    response = client.post("/accounts/login/", {"username": "viewer", "password": "nope"})
    assert response.status_code == 200
    assert b"Please enter a correct username and password" in response.content


def test_healthz_is_public_json(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("url", ["/", "/panels/low-stock/", "/api/trending.json"])
def test_the_dashboard_refusal_names_the_missing_permission(
    outsider_client: Client, url: str
) -> None:
    response = outsider_client.get(url)
    assert response.status_code == 403
    assert "store.view_dashboard" in response.content.decode()
