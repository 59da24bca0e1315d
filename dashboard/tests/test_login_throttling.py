"""Login throttling (django-axes, cache handler): 5 failures a minute per username and
per address lock the login for a minute, with the wait named; an admin command unlocks."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

from conftest import PASSWORD

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"


def attempt(client: Client, username: str, password: str) -> object:
    return client.post(LOGIN, {"username": username, "password": password})


def assert_locked(response) -> None:
    assert response.status_code == 429
    body = response.content.decode()
    assert "Too many failed logins" in body
    assert "Try again in 1 minute" in body  # the wait, named
    assert response["Retry-After"] == "60"
    assert "Traceback" not in body


def test_the_sixth_wrong_password_is_refused_and_then_the_right_one_too(viewer: User) -> None:
    client = Client()
    for _ in range(4):
        response = attempt(client, "viewer", "wrong")
        assert response.status_code == 200  # the form again, with its error
        assert "Please enter a correct username and password" in response.content.decode()
    # The 5th failure reaches AXES_FAILURE_LIMIT and its answer already names the wait.
    assert_locked(attempt(client, "viewer", "wrong"))
    assert_locked(attempt(client, "viewer", "wrong"))
    assert_locked(attempt(client, "viewer", PASSWORD))
    assert "_auth_user_id" not in client.session
    assert client.get("/").status_code == 302  # still anonymous


def test_one_address_is_locked_across_usernames(viewer: User) -> None:
    client = Client()
    for n in range(5):
        attempt(client, f"nobody-{n}", "wrong")
    assert_locked(attempt(client, "viewer", PASSWORD))


def test_one_username_is_locked_across_addresses(viewer: User) -> None:
    """Per username too: spreading the guesses over addresses does not help."""
    for n in range(5):
        attempt(Client(REMOTE_ADDR=f"10.0.1.{n}"), "viewer", "wrong")
    fresh_address = Client(REMOTE_ADDR="10.0.1.200")
    assert_locked(attempt(fresh_address, "viewer", PASSWORD))
    assert "_auth_user_id" not in fresh_address.session
    # Another username from that address is not affected.
    assert attempt(fresh_address, "nobody", "wrong").status_code == 200


def test_another_address_can_still_log_in_while_one_is_locked(viewer: User) -> None:
    attacker = Client(REMOTE_ADDR="10.0.0.9")
    for n in range(6):
        attempt(attacker, f"nobody-{n}", "wrong")
    assert_locked(attempt(attacker, "viewer", PASSWORD))
    colleague = Client(REMOTE_ADDR="10.0.0.10")
    assert attempt(colleague, "viewer", PASSWORD).status_code == 302


def test_the_unlock_commands_lift_the_lockout(viewer: User) -> None:
    client = Client()
    for _ in range(6):
        attempt(client, "viewer", "wrong")
    assert_locked(attempt(client, "viewer", PASSWORD))
    out = io.StringIO()
    call_command("axes_reset_username", "viewer", stdout=out)
    call_command("axes_reset_ip", "127.0.0.1", stdout=out)
    assert "attempts removed" in out.getvalue()
    response = attempt(client, "viewer", PASSWORD)
    assert response.status_code == 302
    assert client.get("/").status_code == 200


def test_force_login_is_not_throttled(viewer_client: Client) -> None:
    for _ in range(6):
        attempt(Client(), "viewer", "wrong")
    assert viewer_client.get("/").status_code == 200
