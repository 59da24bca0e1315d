"""One settings module for every environment, driven by environment variables.

It runs with no variables at all (SQLite + local-memory cache under ``var/``);
production sets ``DATABASE_URL``, ``REDIS_URL``, ``SECRET_KEY`` and friends.
A malformed value stops the process at start-up instead of surfacing later.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("STOREOPS_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), got {raw!r}")


def env_number(name: str, default: float, *, kind: type = int, minimum: float = 0) -> Any:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a {kind.__name__}, got {raw!r}") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {raw!r}")
    return value


def env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY") or "django-insecure-storeops-local-only-never-use-in-production"
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS") or ["127.0.0.1", "localhost", "[::1]"]
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

# Behind a TLS-terminating proxy in production; plain HTTP locally and in tests.
HTTPS = env_bool("STOREOPS_HTTPS", False)
SECURE_SSL_REDIRECT = HTTPS
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env_number("STOREOPS_HSTS_SECONDS", 31536000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
# Content-Security-Policy (django-csp): scripts and styles only from our own static
# files, so no inline script, inline style or eval anywhere (htmx's config is a meta
# tag; polling and per-page submits are hooked in console.js). img-src allows data:
# for the SVG icons inside Bootstrap's CSS (select arrows, close buttons). The admin
# (Django 5.2) needs nothing more.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "django_tables2",
    "django_filters",
    "template_partials",
    "axes",
    "csp",
    "store",
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    # Cache bumps are sent without waiting for Redis; their replies are read here,
    # after the view and every inner middleware, before the response leaves.
    "dashboard.middleware.SettleBumpsMiddleware",
    # Times every query and logs those over STOREOPS_SLOW_QUERY_MS with their panel.
    "dashboard.middleware.SlowQueryMiddleware",
    # Parses a POST body once, before anything else reads it: a body Django refuses
    # (charset=utf-16, too many fields) answers 400 instead of crashing its error views.
    "dashboard.middleware.UnreadableBodyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Inside the session middleware: session saves (primary-only) never pin a client.
    "dashboard.middleware.PrimaryStickinessMiddleware",
    # Safe by default: every view needs a login unless it opts out explicitly
    # (@login_not_required on the health probes; Django's login view already does).
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: turns a lockout into its page (429, the wait named).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dashboard.context_processors.console",
            ],
            "builtins": ["django_htmx.templatetags.django_htmx"],
        },
    }
]

# --- Databases -------------------------------------------------------------
# default = primary; replica_N = read replicas of default; shard_N = customer data.
CONN_MAX_AGE = env_number("STOREOPS_CONN_MAX_AGE", 60)


def _sqlite(path: Path) -> dict[str, Any]:
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            # IMMEDIATE takes the write lock at BEGIN, so two writers queue instead
            # of failing with "database is locked" on lock upgrade.
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": (
                "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL;PRAGMA foreign_keys=ON;"
            ),
        },
        # A file, not Django's default in-memory test database: an in-memory one is
        # shared by every thread of the browser tests' live server through a single
        # connection, and concurrent panel requests on it hung the suite in CI. With
        # a file each thread has its own connection, as under `manage.py demo`.
        "TEST": {"NAME": str(path.with_name(f"test_{path.name}"))},
    }


# Every wait on a database has a deadline (store/deadlines.py). Server side, per
# alias: statement_timeout (and lock_timeout, for writes on the primary); client side:
# connect timeout, TCP keepalives and tcp_user_timeout so a dead host is noticed, and
# the application's own deadline (statement timeout + 0.5 s) for a peer that accepts
# the connection and then stays silent. 0 turns an alias's timeouts off; manage.py
# commands run with STOREOPS_STATEMENT_TIMEOUT=0 unless it is set (bulk seeding and
# rollup rebuilds are long single statements).
STOREOPS_STATEMENT_TIMEOUT = env_number("STOREOPS_STATEMENT_TIMEOUT", 30.0, kind=float)
STOREOPS_LOCK_TIMEOUT = env_number("STOREOPS_LOCK_TIMEOUT", 10.0, kind=float)
STOREOPS_REPLICA_TIMEOUT = env_number("STOREOPS_REPLICA_TIMEOUT", 5.0, kind=float)
# Per-shard deadline of a cross-shard read (late shards make it partial), and of any
# statement on a shard (a customer's page answers 503 past it).
STOREOPS_SHARD_TIMEOUT = env_number("STOREOPS_SHARD_TIMEOUT", 2.0, kind=float)
# A CSV export is one COPY statement that lasts as long as the client reads: it gets
# this deadline instead of its alias's (which would cut the file short). 0: none.
STOREOPS_EXPORT_TIMEOUT = env_number("STOREOPS_EXPORT_TIMEOUT", 300.0, kind=float)


def _postgres_options(*, connect_timeout: int, statement_s: float, lock_s: float) -> dict[str, Any]:
    options: dict[str, Any] = {
        "connect_timeout": connect_timeout,
        "application_name": "storeops",
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        # Unacknowledged data for this long ends the connection (a dead host).
        "tcp_user_timeout": 10_000,
    }
    server = []
    if statement_s:
        server.append(f"-c statement_timeout={int(statement_s * 1000)}")
    if lock_s:
        server.append(f"-c lock_timeout={int(lock_s * 1000)}")
    if server:
        options["options"] = " ".join(server)
    return options


def _from_url(
    url: str, *, connect_timeout: int = 5, statement_s: float = 0.0, lock_s: float = 0.0
) -> dict[str, Any]:
    try:
        config: dict[str, Any] = dict(dj_database_url.parse(url))
    except (ValueError, KeyError) as exc:
        raise ImproperlyConfigured(f"Cannot parse database URL {url!r}: {exc}") from None
    if config["ENGINE"] == "django.db.backends.sqlite3":
        return _sqlite(Path(config["NAME"]))
    config["CONN_MAX_AGE"] = CONN_MAX_AGE
    config["CONN_HEALTH_CHECKS"] = True
    config.setdefault("OPTIONS", {})
    if "postgresql" in config["ENGINE"]:
        # Django's backend plus the application-side deadline (store/deadlines.py).
        config["ENGINE"] = "store.backends.postgresql"
        config["STOREOPS_DEADLINE"] = statement_s
        for key, value in _postgres_options(
            connect_timeout=connect_timeout, statement_s=statement_s, lock_s=lock_s
        ).items():
            config["OPTIONS"].setdefault(key, value)
    return config


DATABASE_URL = env_str("DATABASE_URL")
DATABASES: dict[str, dict[str, Any]] = {
    "default": _from_url(
        DATABASE_URL,
        statement_s=STOREOPS_STATEMENT_TIMEOUT,
        lock_s=STOREOPS_LOCK_TIMEOUT if STOREOPS_STATEMENT_TIMEOUT else 0.0,
    )
    if DATABASE_URL
    else _sqlite(VAR_DIR / "storeops.sqlite3")
}
# Replicas and shards follow the primary's switch: off for manage.py commands.
_bounded = bool(STOREOPS_STATEMENT_TIMEOUT)
for _i, _url in enumerate(env_list("DATABASE_REPLICA_URLS")):
    # A dead replica must cost about a second, not a request's worth of waiting.
    DATABASES[f"replica_{_i}"] = _from_url(
        _url, connect_timeout=1, statement_s=STOREOPS_REPLICA_TIMEOUT if _bounded else 0.0
    ) | {"TEST": {"MIRROR": "default"}}
_shard_urls = env_list("DATABASE_SHARD_URLS") or [
    f"sqlite:///{VAR_DIR / f'shard_{n}.sqlite3'}" for n in range(2)
]
for _i, _url in enumerate(_shard_urls):
    DATABASES[f"shard_{_i}"] = _from_url(
        _url,
        connect_timeout=2,
        statement_s=STOREOPS_SHARD_TIMEOUT if _bounded else 0.0,
        lock_s=STOREOPS_LOCK_TIMEOUT if _bounded else 0.0,
    )

REPLICA_ALIASES = [alias for alias in DATABASES if alias.startswith("replica_")]
SHARD_ALIASES = [alias for alias in DATABASES if alias.startswith("shard_")]
DATABASE_ROUTERS = ["store.routing.ShardRouter", "store.routing.PrimaryReplicaRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache -----------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {
            # django-redis behind a circuit breaker (store/cache_backend.py).
            "BACKEND": "store.cache_backend.BreakerRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "storeops",
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                # Short timeouts: a dead Redis must degrade to cache misses fast.
                "SOCKET_CONNECT_TIMEOUT": 0.5,
                "SOCKET_TIMEOUT": 0.5,
            },
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "storeops",
            "OPTIONS": {"MAX_ENTRIES": 5000},
        }
    }

# --- Console behaviour -----------------------------------------------------
STOREOPS_STICKY_SECONDS = env_number("STOREOPS_STICKY_SECONDS", 5)
STOREOPS_MAX_REPLICA_LAG = env_number("STOREOPS_MAX_REPLICA_LAG", 5.0, kind=float)
STOREOPS_SLOW_QUERY_MS = env_number("STOREOPS_SLOW_QUERY_MS", 200)
STOREOPS_CACHE_BREAKER_SECONDS = env_number("STOREOPS_CACHE_BREAKER_SECONDS", 5.0, kind=float)
# Threads per process that refresh stale panel data off the request path (0: in the
# request, as the lock winner). Keep it well under the request threads per worker.
STOREOPS_REFRESH_THREADS = env_number("STOREOPS_REFRESH_THREADS", 2)
# Panel data invalidated by a write is recomputed once it is this many seconds old
# (served stale meanwhile): under a stream of writes, one recompute per panel and
# interval instead of one per request that sees it stale.
STOREOPS_REFRESH_MIN_INTERVAL = env_number("STOREOPS_REFRESH_MIN_INTERVAL", 1.0, kind=float)
# A write's version bump is sent at once unless this process sent one less than this
# many seconds ago; then it joins the batch sent at the window's end (store/bump_batch.py).
# 0 sends every bump at once.
STOREOPS_BUMP_WINDOW = env_number("STOREOPS_BUMP_WINDOW", 0.1, kind=float)
STOREOPS_LOW_STOCK_THRESHOLD = env_number("STOREOPS_LOW_STOCK_THRESHOLD", 5)
# Every this many stock ledger ids, the writer folds the ledger into the category
# rollup after it commits (store/services/ledger_fold.py, stock_ledger_fold).
STOREOPS_LEDGER_FOLD_EVERY = env_number("STOREOPS_LEDGER_FOLD_EVERY", 500, minimum=1)
# A relay gives an event this many publish attempts, then dead-letters it
# (store/services/outbox.py; requeued from the outbox panel).
STOREOPS_OUTBOX_MAX_ATTEMPTS = env_number("STOREOPS_OUTBOX_MAX_ATTEMPTS", 5, minimum=1)
STOREOPS_SHARD_BUCKETS = 1024
# How long a process trusts its copy of the bucket map (a move waits this long).
STOREOPS_SHARD_MAP_SECONDS = env_number("STOREOPS_SHARD_MAP_SECONDS", 2.0, kind=float)
# A replica's health (reachable, lag) is re-checked at most this often per process.
STOREOPS_REPLICA_CHECK_SECONDS = env_number("STOREOPS_REPLICA_CHECK_SECONDS", 2.0, kind=float)
# The shard-health panel and /readyz share probe results for this long.
STOREOPS_HEALTH_CACHE_SECONDS = env_number("STOREOPS_HEALTH_CACHE_SECONDS", 1.0, kind=float)
STOREOPS_DEMO_PASSWORD = env_str("STOREOPS_DEMO_PASSWORD")

# --- Auth, sessions, messages ----------------------------------------------
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard-index"
# None: LogoutView says "You have been logged out" (registration/logged_out.html).
LOGOUT_REDIRECT_URL = None
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

# Login throttling (django-axes): STOREOPS_LOGIN_FAILURE_LIMIT failed logins per
# username and, separately, per client address lock that username or address for
# STOREOPS_LOGIN_LOCKOUT_SECONDS; each failure restarts the window. Counters live in
# the cache (Redis in production; per process with local memory): nothing is written
# to the database, and a Redis outage lets logins through unthrottled rather than
# refusing everyone. The address is REMOTE_ADDR: behind a proxy that hides it, set
# AXES_IPWARE_* accordingly, or every client shares one counter.
AUTHENTICATION_BACKENDS = [
    # First, so a locked-out login is refused before any password is checked.
    "axes.backends.AxesStandaloneBackend",
    # ModelBackend, with each user's permission set cached (dashboard/auth_backends.py).
    "dashboard.auth_backends.CachedPermissionsBackend",
]
AXES_HANDLER = "axes.handlers.cache.AxesCacheHandler"
AXES_FAILURE_LIMIT = env_number("STOREOPS_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(
    seconds=env_number("STOREOPS_LOGIN_LOCKOUT_SECONDS", 60, kind=float, minimum=1)
)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_LOCKOUT_CALLABLE = "dashboard.views.accounts.login_locked_out"
if not REDIS_URL:
    # axes warns that local memory is per process: true, and accepted for the embedded
    # default (one `demo` process); production sets REDIS_URL, shared by every worker.
    SILENCED_SYSTEM_CHECKS = ["axes.W001"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

# --- I18N / static -----------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise warns about a missing root
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve straight from the app/static folders: no collectstatic step for the demo.
WHITENOISE_USE_FINDERS = True

DJANGO_TABLES2_TEMPLATE = "django_tables2/bootstrap5.html"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("STOREOPS_LOG_LEVEL", "INFO")},
    "loggers": {
        # Django's own default adds a console handler to "django" under DEBUG; with
        # ours on the root every django.request warning printed twice.
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        "django.db.backends": {"level": "INFO", "propagate": True},
    },
}
