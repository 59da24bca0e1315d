"""Dashboard panels: rendering, parameters, per-user fragment caching, failures."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.core.cache import cache, caches
from django.db import OperationalError, connection
from django.test import Client, override_settings

from conftest import _client_for
from dashboard.panels import PANELS
from store import caching
from store.models import Category, Product, Shop
from store.services.sales_windows import sales_windows_advance
from store.tests import factories
from store.tests.caches import DEAD_REDIS

# databases="__all__": the shard-health panel probes every database (in threads).
pytestmark = pytest.mark.django_db(databases="__all__")
HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def small_store() -> dict[str, object]:
    shop, category = factories.shop("Main"), factories.category("Tools")
    low = factories.product(shop=shop, category=category, stock=1, name="Low hammer")
    plenty = factories.product(shop=shop, category=category, stock=80, name="Big saw")
    factories.order(shop=shop, lines=[(low, 2), (plenty, 1)], paid=True)
    return {"shop": shop, "category": category, "low": low, "plenty": plenty}


def _panel(client: Client, name: str, query: str = "", **headers: str):
    return client.get(f"/panels/{name}/{'?' + query if query else ''}", **HX, **headers)


class SqlSeen:
    """The SQL as it reaches the database driver (after the panel tag is added)."""

    def __init__(self) -> None:
        self.sql: list[str] = []

    def __call__(self, execute, sql, params, many, context):
        self.sql.append(sql)
        return execute(sql, params, many, context)

    @property
    def panel(self) -> list[str]:
        return [sql for sql in self.sql if sql.startswith("/* panel:")]


@contextmanager
def sql_seen() -> Iterator[SqlSeen]:
    seen = SqlSeen()
    with connection.execute_wrapper(seen):
        yield seen


@pytest.mark.parametrize("name", list(PANELS))
def test_every_panel_renders_as_a_partial_and_as_a_page(
    viewer_client: Client, small_store, name: str
) -> None:
    partial = _panel(viewer_client, name)
    assert partial.status_code == 200
    body = partial.content.decode()
    assert body.lstrip().startswith(f'<section class="panel" id="panel-{name}" data-panel="{name}"')
    assert "<html" not in body
    page = viewer_client.get(f"/panels/{name}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<html" in html
    assert html.count("data-panel=") == 1  # just that panel
    assert f'data-panel="{name}"' in html


def test_unknown_panel_is_404(viewer_client: Client) -> None:
    assert viewer_client.get("/panels/no-such-panel/", **HX).status_code == 404


def test_outsider_gets_403(outsider_client: Client) -> None:
    assert outsider_client.get("/panels/trending/", **HX).status_code == 403
    assert outsider_client.get("/api/trending.json").status_code == 403


def test_dashboard_has_a_frame_per_panel_with_its_url_parameters(viewer_client: Client) -> None:
    html = viewer_client.get("/?low-stock-threshold=3&trending-window=24h").content.decode()
    for name in PANELS:
        assert f'data-panel="{name}"' in html
    assert 'hx-get="/panels/low-stock/?low-stock-threshold=3"' in html
    assert 'hx-get="/panels/trending/?trending-window=24h"' in html
    assert 'hx-get="/panels/shop-activity/"' in html


@pytest.mark.parametrize(
    "url",
    ["/", "/panels/trending/", "/panels/low-stock/?low-stock-threshold=2", "/api/trending.json"],
)
@pytest.mark.parametrize("htmx", [True, False])
def test_responses_are_private_and_vary_on_cookie_and_hx_request(
    viewer_client: Client, url: str, htmx: bool
) -> None:
    response = viewer_client.get(url, **(HX if htmx else {}))
    assert response.status_code == 200
    assert "private" in response["Cache-Control"]
    vary = {v.strip().lower() for v in response["Vary"].split(",")}
    assert {"cookie", "hx-request"} <= vary


def test_the_average_price_option_takes_currency_units(viewer_client: Client, small_store) -> None:
    body = _panel(viewer_client, "category-groups", "category-groups-min_avg_price=0.01")
    html = body.content.decode()
    assert 'name="category-groups-min_avg_price" value="0.01"' in html
    assert "groups averaging at least 0.01" in html
    assert "(cents)" not in html


@pytest.mark.parametrize(
    ("name", "query", "message", "default_shown"),
    [
        ("low-stock", "low-stock-threshold=abc", "Enter a whole number", 'value="5"'),
        ("low-stock", "low-stock-threshold=999", "less than or equal to 20", 'value="5"'),
        ("rank-window", "rank-window-top=21", "less than or equal to 20", 'value="3"'),
        ("rank-window", "rank-window-top=0", "greater than or equal to 1", 'value="3"'),
        ("rank-window", "rank-window-function=median", "Select a valid choice", "(rank)"),
        ("trending", "trending-window=1y", "Select a valid choice", "last 7d"),
        ("category-stats", "category-stats-sort=password", "Select a valid choice", "▼"),
        ("category-groups", "category-groups-min_avg_price=-1", "greater than or equal", "200.00"),
        ("shop-activity", "shop-activity-every=1", "greater than or equal to 5", "every 30 s"),
    ],
)
def test_bad_parameters_show_a_message_and_the_default(
    viewer_client: Client, small_store, name: str, query: str, message: str, default_shown: str
) -> None:
    response = _panel(viewer_client, name, query)
    assert response.status_code == 200
    body = response.content.decode()
    problems = re.search(r'data-testid="param-problems">(.*?)</div>\s*</div>', body, re.S)
    assert problems is not None
    assert message in problems.group(1)
    assert "Showing the default" in problems.group(1)
    assert default_shown in body


def test_parameters_change_the_result(viewer_client: Client, small_store) -> None:
    assert b"Low hammer" in _panel(viewer_client, "low-stock", "low-stock-threshold=1").content
    assert b"Low hammer" not in _panel(viewer_client, "low-stock", "low-stock-threshold=0").content


def test_controls_push_a_shareable_dashboard_url(viewer_client: Client) -> None:
    response = _panel(
        viewer_client,
        "low-stock",
        "low-stock-threshold=3",
        HTTP_HX_TRIGGER="low-stock-controls",
        HTTP_HX_CURRENT_URL="http://testserver/?trending-window=24h&low-stock-threshold=9",
    )
    assert response["HX-Push-Url"] == (
        "/?trending-window=24h&low-stock-every=15&low-stock-threshold=3"
    )
    on_its_page = _panel(
        viewer_client,
        "low-stock",
        "low-stock-threshold=3",
        HTTP_HX_TRIGGER="low-stock-controls",
        HTTP_HX_CURRENT_URL="http://testserver/panels/low-stock/",
    )
    assert (
        on_its_page["HX-Push-Url"] == "/panels/low-stock/?low-stock-every=15&low-stock-threshold=3"
    )
    polling = _panel(
        viewer_client, "low-stock", "low-stock-threshold=3", HTTP_HX_TRIGGER="panel-low-stock"
    )
    assert "HX-Push-Url" not in polling


def test_history_restore_gets_a_whole_page(viewer_client: Client) -> None:
    response = _panel(viewer_client, "trending", HTTP_HX_HISTORY_RESTORE_REQUEST="true")
    assert b"<html" in response.content


def test_panels_listen_for_their_events(viewer_client: Client) -> None:
    body = _panel(viewer_client, "low-stock").content.decode()
    assert "stock-changed from:body" in body
    # console.js polls every data-interval seconds by firing "refresh" (no eval'd filter).
    assert 'data-interval="15"' in body
    assert 'hx-trigger="refresh, stock-changed from:body' in body
    assert "order-paid from:body" in _panel(viewer_client, "trending").content.decode()


def test_viewer_and_operator_never_share_a_fragment(
    viewer_client: Client, operator_client: Client, small_store
) -> None:
    first_operator = _panel(operator_client, "low-stock").content.decode()
    first_viewer = _panel(viewer_client, "low-stock").content.decode()
    again_viewer = _panel(viewer_client, "low-stock").content.decode()
    again_operator = _panel(operator_client, "low-stock").content.decode()
    assert "data-opens-action>Adjust<" in first_operator
    assert "data-opens-action>Adjust<" in again_operator
    assert "data-opens-action>Adjust<" not in first_viewer
    assert "data-opens-action>Adjust<" not in again_viewer
    # The operator's data was reused, never the operator's fragment.
    assert 'data-cache="fragment miss, data hit"' in first_viewer
    assert 'data-cache="fragment hit"' in again_viewer


def test_adjust_button_fetches_its_form_and_embeds_no_token(
    operator_client: Client, small_store
) -> None:
    body = _panel(operator_client, "low-stock").content.decode()
    low = small_store["low"]
    assert f'hx-get="/products/{low.pk}/adjust/"' in body
    assert "csrfmiddlewaretoken" not in body
    assert "idempotency" not in body
    token = operator_client.cookies.get("csrftoken")
    assert token is None or token.value not in body


def test_a_revoked_permission_hides_the_button_at_the_next_render(
    operator, operator_client: Client, small_store, django_capture_on_commit_callbacks
) -> None:
    from django.contrib.auth.models import Group

    assert "data-opens-action>Adjust<" in _panel(operator_client, "low-stock").content.decode()
    assert 'data-cache="fragment hit"' in _panel(operator_client, "low-stock").content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        operator.groups.set([Group.objects.get(name="ops-viewer")])  # operator -> viewer
    body = _panel(operator_client, "low-stock").content.decode()
    assert "data-opens-action>Adjust<" not in body  # not after the fragment's TTL: now
    assert "Low hammer" in body


def test_second_request_runs_no_panel_query_and_a_write_recomputes(
    viewer_client: Client, small_store
) -> None:
    with sql_seen() as cold:
        first = _panel(viewer_client, "low-stock").content.decode()
    assert cold.panel
    assert "Low hammer" in first
    with sql_seen() as warm:
        second = _panel(viewer_client, "low-stock").content.decode()
    assert warm.panel == []
    assert 'data-cache="fragment hit"' in second
    # A write (the actions work bumps on commit; here the bump follows a plain update).
    Product.objects.filter(pk=small_store["plenty"].pk).update(stock=0)
    caching.bump_now("stock", "lowstock")
    with sql_seen() as after:
        third = _panel(viewer_client, "low-stock").content.decode()
    assert after.panel
    assert "Big saw" in third
    assert 'data-cache="miss"' in third


@pytest.fixture
def renders(monkeypatch) -> list[str]:
    """The templates the panel view renders (a warm poll should render none)."""
    from dashboard.views import panels as views

    seen: list[str] = []
    original = views.render_partial_or_page

    def counted(request, partial, *args, **kwargs):
        seen.append(partial)
        return original(request, partial, *args, **kwargs)

    monkeypatch.setattr(views, "render_partial_or_page", counted)
    return seen


def test_a_warm_poll_gets_the_panel_as_last_rendered_without_rendering_a_template(
    viewer_client: Client, small_store, renders: list[str]
) -> None:
    first = _panel(viewer_client, "low-stock")
    assert len(renders) == 1  # a miss renders
    second = _panel(viewer_client, "low-stock")
    assert len(renders) == 1
    assert second.content.decode() == first.content.decode().replace(
        'data-cache="miss"', 'data-cache="fragment hit"'
    )
    assert second["Cache-Control"] == first["Cache-Control"]
    assert second["Vary"] == first["Vary"]
    # New data is rendered (and kept) anew.
    Product.objects.filter(pk=small_store["plenty"].pk).update(stock=2)
    caching.bump_now("stock", "lowstock")
    third = _panel(viewer_client, "low-stock")
    assert len(renders) == 2
    assert "Big saw" in third.content.decode()
    assert _panel(viewer_client, "low-stock").content == third.content.replace(
        b'data-cache="miss"', b'data-cache="fragment hit"'
    )
    assert len(renders) == 2


def test_a_warm_poll_with_bad_parameters_or_as_a_page_is_rendered_whole(
    viewer_client: Client, superuser_client: Client, small_store, renders: list[str]
) -> None:
    _panel(viewer_client, "low-stock")  # keeps the panel for the default parameters
    # The same parameters once parsed, but the message must show.
    body = _panel(viewer_client, "low-stock", "low-stock-threshold=abc").content.decode()
    assert 'data-testid="param-problems"' in body
    assert "Enter a whole number" in body
    page = viewer_client.get("/panels/low-stock/")
    assert "<html" in page.content.decode()
    assert len(renders) == 3
    # A superuser's footer shows this request's cache state and counters: rendered.
    _panel(superuser_client, "low-stock")
    footer = _panel(superuser_client, "low-stock")
    assert len(renders) == 5
    assert 'data-cache="fragment hit"' in footer.content.decode()


def test_polls_after_the_panel_page_are_answered_without_rendering(
    viewer_client: Client, small_store, renders: list[str]
) -> None:
    viewer_client.get("/panels/low-stock/")  # the panel opened alone keeps its fragment
    first = _panel(viewer_client, "low-stock")
    second = _panel(viewer_client, "low-stock")
    assert len(renders) == 2  # the page and the first poll; the second is the kept answer
    assert second.content == first.content
    assert b'data-cache="fragment hit"' in second.content


def test_another_user_reuses_the_computed_data_and_its_rendering(
    viewer_client: Client, operator_client: Client, small_store
) -> None:
    # Trending shows no button: a viewer's and an operator's renderings are the same.
    first = _panel(viewer_client, "trending").content.decode()
    with sql_seen() as seen:
        body = _panel(operator_client, "trending").content.decode()
    assert seen.panel == []
    assert 'data-cache="fragment miss, rendering shared"' in body
    assert "Low hammer" in first
    assert "Low hammer" in body


def test_users_with_the_same_buttons_share_a_rendering_of_the_same_data_only(
    make_user, operator_client: Client, viewer_client: Client, small_store
) -> None:
    other = _client_for(make_user("operator2", groups=("ops-operator",)))
    assert "data-opens-action>Adjust<" in _panel(operator_client, "low-stock").content.decode()
    shared = _panel(other, "low-stock").content.decode()
    assert 'data-cache="fragment miss, rendering shared"' in shared
    assert "data-opens-action>Adjust<" in shared
    # A viewer has no Adjust button: never the operators' rendering.
    viewed = _panel(viewer_client, "low-stock").content.decode()
    assert 'data-cache="fragment miss, data hit"' in viewed
    assert "data-opens-action>Adjust<" not in viewed
    # New data is a new snapshot: rendered anew, for the first operator to ask.
    Product.objects.filter(pk=small_store["plenty"].pk).update(stock=2)
    caching.bump_now("stock", "lowstock")
    fresh = _panel(other, "low-stock").content.decode()
    assert 'data-cache="miss"' in fresh
    assert "Big saw" in fresh
    again = _panel(operator_client, "low-stock").content.decode()
    assert 'data-cache="fragment miss, rendering shared"' in again
    assert "Big saw" in again


def _grow(products: int) -> None:
    shop, category = Shop.objects.first(), Category.objects.first()
    start = Product.objects.count()
    Product.objects.bulk_create(
        Product(
            shop=shop,
            category=category,
            name=f"Bulk {n}",
            sku=f"B-{n:07d}",
            price=100 + n,
            stock=n % 7,
            initial_stock=n % 7,
        )
        for n in range(start, products)
    )


@pytest.mark.parametrize("name", list(PANELS))
@pytest.mark.parametrize("size", [10, 1000])
def test_query_count_is_constant(
    viewer_client: Client, small_store, django_assert_max_num_queries, name: str, size: int
) -> None:
    _grow(size)
    viewer_client.get("/")  # the session and permission caches are warm from here on
    sales_windows_advance()  # as any earlier trending compute this hour did
    with sql_seen() as seen:
        assert _panel(viewer_client, name).status_code == 200
    # Rollup reads: a few small queries per panel, whatever the size (trending's
    # five: are the rolling windows current, is its window, top rows, names, series).
    # ops-series reads the probes' samples from the cache: no query at all.
    assert (0 if name == "ops-series" else 1) <= len(seen.panel) <= 5
    cache.clear()
    with django_assert_max_num_queries(9):
        assert _panel(viewer_client, name).status_code == 200


def test_panel_sql_carries_the_panel_name(viewer_client: Client, small_store) -> None:
    with sql_seen() as seen:
        _panel(viewer_client, "shop-activity")
    assert seen.panel
    assert all(sql.startswith("/* panel:shop-activity */ SELECT") for sql in seen.panel)


def test_a_failing_query_shows_an_error_box_and_others_keep_working(
    viewer_client: Client, small_store
) -> None:
    def trending_fails(execute, sql, params, many, context):
        if "/* panel:trending */" in sql:
            raise OperationalError("canceling statement due to statement timeout")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(trending_fails):
        broken = _panel(viewer_client, "trending")
        fine = _panel(viewer_client, "low-stock")
    assert broken.status_code == 200
    assert b'data-testid="panel-error"' in broken.content
    assert b"statement timeout" in broken.content
    assert fine.status_code == 200
    assert b"Low hammer" in fine.content
    recovered = _panel(viewer_client, "trending").content
    assert b'data-testid="panel-error"' not in recovered  # the error was not cached
    assert b"Low hammer" in recovered


def test_panels_render_with_redis_down(
    viewer_client: Client, small_store, caplog: pytest.LogCaptureFixture
) -> None:
    with override_settings(CACHES=DEAD_REDIS, STOREOPS_CACHE_BREAKER_SECONDS=60):
        caches["default"].breaker.reset()
        with caplog.at_level(logging.WARNING, logger="store.caching"):
            for name in PANELS:
                response = _panel(viewer_client, name)
                assert response.status_code == 200, name
                assert f'data-panel="{name}"'.encode() in response.content
            assert viewer_client.get("/").status_code == 200
            assert viewer_client.get("/api/trending.json").status_code == 200
        assert b"Low hammer" in _panel(viewer_client, "low-stock").content
        assert len([r for r in caplog.records if "circuit open" in r.getMessage()]) == 1
        caches["default"].breaker.reset()


def test_counts_and_time_are_shown_and_sql_only_to_superusers(
    viewer_client: Client, superuser_client: Client, small_store
) -> None:
    # The cache and query footer is the superusers' (issue 12); others never see it.
    counted = _panel(superuser_client, "low-stock", "low-stock-threshold=4").content.decode()
    assert re.search(r'data-testid="query-count">2 queries, [\d.]+ ms', counted)
    body = _panel(viewer_client, "low-stock", "low-stock-threshold=4").content.decode()
    assert 'data-testid="query-count"' not in body
    assert "hits " not in body
    assert "/inspector/" not in body
    su_body = _panel(superuser_client, "low-stock").content.decode()
    log_url = re.search(r'hx-get="(/inspector/[^/]+/)"', su_body).group(1)
    assert viewer_client.get(log_url, **HX).status_code == 403
    listing = superuser_client.get(log_url, **HX)
    assert listing.status_code == 200
    assert b"/* panel:low-stock */" in listing.content
    explain_url = re.search(r'hx-get="(/inspector/[^"]+/explain/)"', listing.content.decode())
    plan = superuser_client.get(explain_url.group(1), **HX)
    assert plan.status_code == 200
    assert b'data-testid="plan"' in plan.content
    assert viewer_client.get(explain_url.group(1), **HX).status_code == 403
    assert superuser_client.get("/inspector/not-a-log/", **HX).status_code == 404


def test_explain_analyze_needs_postgresql_or_runs_rolled_back(
    superuser_client: Client, small_store
) -> None:
    su_body = _panel(superuser_client, "trending").content.decode()
    log_url = re.search(r'hx-get="(/inspector/[^/]+/)"', su_body).group(1)
    analyze = superuser_client.get(f"{log_url}0/explain/?analyze=on", **HX)
    if connection.vendor == "postgresql":
        assert analyze.status_code == 200
        assert b"actual time" in analyze.content
    else:
        assert analyze.status_code == 422
        assert b"needs PostgreSQL" in analyze.content


def test_slow_queries_are_logged_with_their_panel(
    viewer_client: Client, small_store, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        override_settings(STOREOPS_SLOW_QUERY_MS=0),
        caplog.at_level(logging.WARNING, logger="store.querylog"),
    ):
        _panel(viewer_client, "category-groups")
    assert any("slow query panel=category-groups" in r.getMessage() for r in caplog.records)


def test_trending_api_shares_the_panels_cache_entry(viewer_client: Client, small_store) -> None:
    _panel(viewer_client, "trending", "trending-window=24h")
    data = viewer_client.get("/api/trending.json?window=24h").json()
    assert data["cached"] is True
    assert [p["name"] for p in data["products"]] == ["Low hammer", "Big saw"]
    caching.bump_now("sales")  # what a payment or a refund bumps
    assert viewer_client.get("/api/trending.json?window=24h").json()["cached"] is False
    bad = viewer_client.get("/api/trending.json?window=1y")
    assert bad.status_code == 400
    assert "window" in bad.json()["errors"]


def test_unbound_forms_give_the_defaults() -> None:
    params, problems = PANELS["rank-window"].form().params()
    assert problems == []
    assert (params["by"], params["function"], params["top"], params["every"]) == (
        "price",
        "rank",
        3,
        30,
    )


def test_a_real_stock_adjustment_refreshes_low_stock(
    viewer_client: Client, operator, small_store, django_capture_on_commit_callbacks
) -> None:
    from store.services.stock import stock_adjust

    first = _panel(viewer_client, "low-stock").content.decode()
    assert "Big saw" not in first
    with django_capture_on_commit_callbacks(execute=True):
        stock_adjust(product=small_store["plenty"], delta=-79, actor=operator, reason="test")
    after = _panel(viewer_client, "low-stock").content.decode()
    assert "Big saw" in after
    assert 'data-cache="miss"' in after


def test_a_warm_panel_reads_the_cache_once_beyond_its_permission_check(
    viewer_client: Client, small_store, monkeypatch
) -> None:
    _panel(viewer_client, "low-stock")  # renders and keeps the fragment
    backend = caches["default"]
    reads: list[str] = []
    inside: list[str] = []  # local memory's get_many calls get once per key: count once
    for method in ("get", "get_many"):
        original = getattr(backend, method)

        def counted(*args, _original=original, _method=method, **kwargs):
            if not inside:
                reads.append(_method)
            inside.append(_method)
            try:
                return _original(*args, **kwargs)
            finally:
                inside.pop()

        monkeypatch.setattr(backend, method, counted)
    body = _panel(viewer_client, "low-stock").content.decode()
    assert 'data-cache="fragment hit"' in body
    assert "Low hammer" in body
    # The session (cached_db: from the cache, not a query); the permission check: the
    # "access" version and the user's permission set; then the panel's versions and its
    # kept rendering together. Each read is a round trip to Redis, on every poll of
    # every panel.
    assert len(reads) == 4, reads
