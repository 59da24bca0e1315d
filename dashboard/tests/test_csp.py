"""The Content-Security-Policy: on every page, strict, and nothing in a template needs
more (inline scripts, inline styles and htmx features that eval are refused)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

pytestmark = pytest.mark.django_db

TEMPLATES = Path(settings.BASE_DIR) / "templates"


def _policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {
        name: values
        for name, *values in (part.split() for part in header.split(";") if part.strip())
    }


@pytest.mark.parametrize("url", ["/", "/products/", "/panels/low-stock/", "/admin/"])
def test_every_page_carries_the_policy(superuser_client: Client, url: str) -> None:
    response = superuser_client.get(url)
    assert response.status_code == 200
    policy = _policy(response)
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["img-src"] == ["'self'", "data:"]  # Bootstrap's SVG icons
    assert policy["frame-ancestors"] == ["'none'"]


def test_the_login_page_and_a_refusal_carry_it_too(outsider_client: Client) -> None:
    assert "script-src 'self'" in Client().get("/accounts/login/")["Content-Security-Policy"]
    refused = outsider_client.get("/products/")
    assert refused.status_code == 403
    assert "script-src 'self'" in refused["Content-Security-Policy"]


def test_no_template_needs_inline_script_style_or_eval() -> None:
    offenders = []
    for path in TEMPLATES.rglob("*.html"):
        text = path.read_text()
        for pattern in (
            r"<script(?![^>]*\bsrc=)[^>]*>",  # inline script
            r"<style\b",
            r"\sstyle=",
            r"\shx-on[:-]",  # htmx evaluates these
            r"\son[a-z]+=",  # event handler attributes
            r"hx-trigger=\"[^\"]*\[",  # a trigger filter: htmx evaluates it
            r"hx-vals=['\"]js:",
        ):
            offenders += [f"{path.relative_to(TEMPLATES)}: {m}" for m in re.findall(pattern, text)]
    assert offenders == []
