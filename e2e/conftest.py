"""Browser tests: Playwright drives Debian's Chromium against pytest-django's live server.

Playwright cannot download its own browser here, so we launch the system Chromium
by path. Missing it is a skip locally and a failure under CI=true.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage

# Playwright's sync API runs an event loop in this thread; Django's ORM calls made
# by fixtures are still synchronous and safe here.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = os.environ.get("STOREOPS_CHROMIUM") or shutil.which("chromium") or ""
CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "e2e" not in str(item.path):
            continue
        item.add_marker(pytest.mark.e2e)
        if not CHROMIUM and not CI:
            item.add_marker(
                pytest.mark.skip(reason="Chromium not installed (apt install chromium)")
            )


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    if not CHROMIUM:
        pytest.fail("CI=true but no Chromium: install Debian's chromium or set STOREOPS_CHROMIUM")
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    }


# Every page runs under the Content-Security-Policy: any violation (an inline script or
# style, an eval in htmx, a source outside the policy) fails the test that caused it.
# Chromium logs violations to the console; the DOM event catches any it would not.
_REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  const what = `${e.violatedDirective} blocked ${e.blockedURI || "inline"}`;
  console.error(`Content Security Policy violation: ${what} at ${where}`);
});
"""


def _is_csp_message(message: ConsoleMessage) -> bool:
    text = message.text
    return "Content Security Policy" in text or "Content-Security-Policy" in text


@pytest.fixture
def context(context: BrowserContext, request: pytest.FixtureRequest) -> Iterator[BrowserContext]:
    violations: list[str] = []
    request.node.csp_violations = violations
    context.add_init_script(_REPORT_VIOLATIONS)

    def watch(page: Any) -> None:
        page.on("console", lambda m: violations.append(m.text) if _is_csp_message(m) else None)

    context.on("page", watch)
    yield context
    # Anything that arrived after the test body ended (the context closes after this).
    if violations:
        pytest.fail("CSP violations in the browser console:\n" + "\n".join(violations))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    result = yield
    violations = getattr(item, "csp_violations", None)
    if violations:
        found, violations[:] = list(violations), []  # reported once, not again at teardown
        pytest.fail("CSP violations in the browser console:\n" + "\n".join(found))
    return result
