"""Settings for pizzaqueue: the one place that reads the environment.

Every variable goes through a small typed reader that raises
ImproperlyConfigured on a malformed value, so a typo in production fails at
start-up instead of silently turning a feature off. The defaults run on a
laptop: SQLite in the project folder, DEBUG on, a generated secret key.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from workers import database_url

BASE_DIR = Path(__file__).resolve().parent.parent

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


def _env_number(
    name: str, default: float, cast: type, noun: str, minimum: float | None, maximum: float | None = None
) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be {noun}, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, got {value}")
    return value


def env_int(name: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
    return int(_env_number(name, default, int, "an integer", minimum, maximum))


def env_float(name: str, default: float, minimum: float | None = None) -> float:
    return float(_env_number(name, default, float, "a number", minimum))


def env_money(name: str, default: str) -> Decimal:
    """An amount of money: a non-negative decimal with at most two places (`2.50`)."""
    raw = os.environ.get(name, default).strip()
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ImproperlyConfigured(f"{name} must be an amount like 2.50, got {raw!r}") from None
    if not value.is_finite() or value < 0 or value != value.quantize(Decimal("0.01")):
        raise ImproperlyConfigured(f"{name} must be a non-negative amount with at most two decimals, got {raw!r}")
    return value.quantize(Decimal("0.01"))


def env_networks(name: str, default: str = "") -> list[str]:
    """Comma-separated IP addresses or networks (CIDR), each checked."""
    entries = [entry.strip() for entry in os.environ.get(name, default).split(",") if entry.strip()]
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ImproperlyConfigured(f"{name} must list IP addresses or networks, got {entry!r}") from None
    return entries


def env_pairs(name: str) -> dict[str, str]:
    """`key=value` pairs, comma-separated; a pair without `=` or with an empty side is refused."""
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in env_str(name).split(","))):
        key, sep, value = (side.strip() for side in item.partition("="))
        if not (sep and key and value):
            raise ImproperlyConfigured(f"{name}: {item!r} is not name=value")
        pairs[key] = value
    return pairs


def env_seconds_by_key(name: str) -> dict[str, float]:
    """`key=seconds` pairs (`env_pairs`), each a number of seconds, at least 0."""
    seconds: dict[str, float] = {}
    for key, value in env_pairs(name).items():
        try:
            seconds[key] = float(value)
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {key}={value!r} is not a number of seconds") from None
        if not seconds[key] >= 0:
            raise ImproperlyConfigured(f"{name}: {key}={value!r} must be at least 0")
    return seconds


def _dev_secret_key() -> str:
    """A per-checkout key, kept in a git-ignored file so sessions survive restarts."""
    path = BASE_DIR / ".dev-secret-key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        key = secrets.token_urlsafe(50)
        path.write_text(key)
        return key


DEBUG = env_bool("DEBUG", True)
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY is required when DEBUG is off")
    SECRET_KEY = _dev_secret_key()

ALLOWED_HOSTS = [h.strip() for h in env_str("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in env_str("CSRF_TRUSTED_ORIGINS").split(",") if o.strip()]

# --- HTTPS ----------------------------------------------------------------------
# Redirects and secure cookies are on whenever DEBUG is off; HSTS is the deployment's
# promise and is only sent when asked for. Behind a proxy that terminates TLS, name
# the header it sets (SECURE_PROXY_SSL_HEADER=X-Forwarded-Proto: "https" means
# HTTPS), or every request looks like plain HTTP and is redirected for ever.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
# Load balancers' health checks and Prometheus come over plain HTTP from inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
_PROXY_SSL_HEADER = env_str("SECURE_PROXY_SSL_HEADER").strip()
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_" + _PROXY_SSL_HEADER.upper().replace("-", "_"), "https") if _PROXY_SSL_HEADER else None
)
# Every page is served from here and nothing runs inline (pizzaqueue/csp.py sets it).
# 'self' covers the pages' WebSockets to their own host; Swagger UI draws its icons as data: URLs.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

INSTALLED_APPS = [
    "daphne",
    "pizzaqueue.apps.PizzaqueueAdminConfig",  # django.contrib.admin: the shop's words, its door on the roles
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "channels",
    "orders",
    "workers",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "pizzaqueue.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Before anything that looks a URL's parts up in the database.
    "pizzaqueue.middleware.refuse_nul",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "pizzaqueue.urls"
ASGI_APPLICATION = "pizzaqueue.asgi.application"
WSGI_APPLICATION = None

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
                "orders.navigation.navigation",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
# SQLite by default: WAL so readers never block the writer, IMMEDIATE
# transactions so a transaction takes the write lock when it begins (two
# claimers then queue up on the busy timeout instead of deadlocking on a lock
# upgrade), and a busy timeout long enough to ride out a burst of writers.
# A PostgreSQL cluster is named by libpq's multi-host form
# (postgres://user@db1:5432,db2:5432/pizzaqueue?target_session_attrs=read-write):
# workers/database_url.py, and docs/operations.md "Running on a PostgreSQL cluster".
SQLITE_PATH = BASE_DIR / "db.sqlite3"
DATABASES = {
    "default": database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{SQLITE_PATH}"),
        # 0: each request closes its connection (back to the pool with
        # `?pool=true`, which web processes on PostgreSQL should use). Requests
        # run on a small pool of threads per process (pizzaqueue/asgi.py), and
        # a persistent connection per thread would need a health check per
        # request. Workers keep their connections regardless: they never close them.
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0, minimum=0),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": env_int("SQLITE_BUSY_TIMEOUT", 30, minimum=1),
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Tests share the database with worker subprocesses, so it must be a file:
    # a sibling of the main one, so two checkouts (or runs) never share it.
    _main = Path(DATABASES["default"]["NAME"])
    DATABASES["default"]["TEST"] = {"NAME": str(_main.with_name(f"test-{_main.name}"))}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault("application_name", "pizzaqueue")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True
# Times to the second with their zone, in admin and the pages (pizzaqueue/formats/).
FORMAT_MODULE_PATH = ["pizzaqueue.formats"]

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]

REDIS_URL = env_str("REDIS_URL")

# --- Cache ----------------------------------------------------------------------
# One cache every web process shares, so the throttles count across all of them
# (SPEC §9): a table in the database by default (made by migration orders/0006,
# or `manage.py createcachetable`), Redis when REDIS_URL is set.
CACHE_TABLE = "pizzaqueue_cache"
CACHES: dict[str, dict[str, Any]]
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": CACHE_TABLE,
            # A throttle entry lives a rate's period; past this many, a third are culled,
            # which would forget clients' counts: keep it above the clients of a minute.
            "OPTIONS": {"MAX_ENTRIES": env_int("PIZZAQUEUE_CACHE_MAX_ENTRIES", 10_000, minimum=100)},
        }
    }

# Bodies above this are refused before any parsing (SPEC §9).
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("PIZZAQUEUE_MAX_BODY_BYTES", 64 * 1024, minimum=1024)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "WARNING")},
}

# --- The queue ----------------------------------------------------------------
# Buckets that routing keys hash to; owned by workers through the hash ring.
PIZZAQUEUE_BUCKETS = env_int("PIZZAQUEUE_BUCKETS", 256, minimum=1)
# Load bound of the ring: no worker owns more than ceil((1 + epsilon) * mean).
PIZZAQUEUE_RING_EPSILON = env_float("PIZZAQUEUE_RING_EPSILON", 0.25, minimum=0.0)
# Priority points an order gains per minute of waiting (0 = strict priority).
PIZZAQUEUE_PRIORITY_AGING = env_float("PIZZAQUEUE_PRIORITY_AGING", 1.0, minimum=0.0)
# Attempts before an order is dead-lettered as failed.
PIZZAQUEUE_MAX_ATTEMPTS = env_int("PIZZAQUEUE_MAX_ATTEMPTS", 3, minimum=1)
# Retry delay: base * 2 ** (attempt - 1) seconds, capped.
PIZZAQUEUE_RETRY_BACKOFF = env_float("PIZZAQUEUE_RETRY_BACKOFF", 2.0, minimum=0.0)
PIZZAQUEUE_RETRY_BACKOFF_MAX = env_float("PIZZAQUEUE_RETRY_BACKOFF_MAX", 300.0, minimum=0.0)
# Work stealing: an order waiting longer than this may be claimed by any worker (0 = off).
PIZZAQUEUE_STEAL_AFTER = env_float("PIZZAQUEUE_STEAL_AFTER", 0.0, minimum=0.0)

# --- Workers and the monitor --------------------------------------------------
PIZZAQUEUE_HEARTBEAT_INTERVAL = env_float("PIZZAQUEUE_HEARTBEAT_INTERVAL", 5.0, minimum=0.01)
PIZZAQUEUE_HEARTBEAT_TIMEOUT = env_float("PIZZAQUEUE_HEARTBEAT_TIMEOUT", 15.0, minimum=0.05)
PIZZAQUEUE_MONITOR_INTERVAL = env_float("PIZZAQUEUE_MONITOR_INTERVAL", 1.0, minimum=0.01)
if PIZZAQUEUE_HEARTBEAT_TIMEOUT < 2 * PIZZAQUEUE_HEARTBEAT_INTERVAL:
    # A kitchen gives its leases up after three quarters of the timeout without a
    # heartbeat: one late beat must not make a healthy kitchen look (or feel) dead.
    raise ImproperlyConfigured(
        f"PIZZAQUEUE_HEARTBEAT_TIMEOUT ({PIZZAQUEUE_HEARTBEAT_TIMEOUT:g}) must be at least twice "
        f"PIZZAQUEUE_HEARTBEAT_INTERVAL ({PIZZAQUEUE_HEARTBEAT_INTERVAL:g})."
    )
# A direct PostgreSQL URL for the LISTEN connections, when DATABASE_URL goes through
# PgBouncer in transaction mode (which cannot carry LISTEN). Default: DATABASE_URL.
PIZZAQUEUE_LISTEN_DATABASE_URL = env_str("PIZZAQUEUE_LISTEN_DATABASE_URL")
# The kitchens' claim and completion as server-side prepared statements (PostgreSQL):
# off for a pooler in transaction mode that does not track them (PgBouncer before
# 1.21, or with max_prepared_statements = 0).
PIZZAQUEUE_PREPARED_STATEMENTS = env_bool("PIZZAQUEUE_PREPARED_STATEMENTS", True)
# How a delivery order placed on PostgreSQL waits for the disk. false: its one statement
# commits synchronously (fastest for each order). true: it commits without waiting and a
# second transaction in the same round trip waits for the flush, so that many producers
# share flushes on a disk whose flush, not the CPU, is the limit (docs/performance.md).
PIZZAQUEUE_INTAKE_SHARED_FLUSH = env_bool("PIZZAQUEUE_INTAKE_SHARED_FLUSH", False)
PIZZAQUEUE_POLL_INTERVAL = env_float("PIZZAQUEUE_POLL_INTERVAL", 0.25, minimum=0.001)
PIZZAQUEUE_SHUTDOWN_GRACE = env_float("PIZZAQUEUE_SHUTDOWN_GRACE", 30.0, minimum=0.0)
# A shop with no kitchen process up for this long is closed: its takeaway customers are
# told and offered a re-order elsewhere. Five minutes outlasts a restart, a redeploy, a
# rebooted machine or a database failover (seconds to a minute or two), and still tells
# a customer quoted 20-30 minutes early enough to order from another shop.
PIZZAQUEUE_SHOP_CLOSED_AFTER = env_float("PIZZAQUEUE_SHOP_CLOSED_AFTER", 300.0, minimum=0.0)
PIZZAQUEUE_CONCURRENCY = env_int("PIZZAQUEUE_CONCURRENCY", 4, minimum=1)
# A kitchen claims what it will start within this many seconds at its measured
# rate, never fewer than its free slots (0 = only the free slots).
PIZZAQUEUE_CLAIM_HORIZON = env_float("PIZZAQUEUE_CLAIM_HORIZON", 0.15, minimum=0.0)
# A fixed number of orders claimed beyond the free slots instead (unset = by the horizon).
PIZZAQUEUE_PREFETCH = env_int("PIZZAQUEUE_PREFETCH", 0, minimum=0) if env_str("PIZZAQUEUE_PREFETCH") else None
PIZZAQUEUE_HANDLER = env_str("PIZZAQUEUE_HANDLER", "orders.handlers.kitchen")
# Seconds of simulated kitchen time per second of recipe (0 = instant).
PIZZAQUEUE_KITCHEN_SPEED = env_float("PIZZAQUEUE_KITCHEN_SPEED", 1.0, minimum=0.0)
# A customer may cancel an order in the kitchen until it reaches this stage (empty: never).
PIZZAQUEUE_CUSTOMER_CANCEL_UNTIL = os.environ.get("PIZZAQUEUE_CUSTOMER_CANCEL_UNTIL", "oven").strip()
# How often a kitchen's handler looks at an order it holds while waiting (a staffed
# kitchen for its staff's taps, a simulated oven between stages): a cancelled or
# moved order is dropped within this many seconds.
PIZZAQUEUE_KITCHEN_CHECK_INTERVAL = env_float("PIZZAQUEUE_KITCHEN_CHECK_INTERVAL", 0.2, minimum=0.01)
# Seconds a staffed kitchen's ticket waits for a tap before a stand-in cook takes the
# step itself (0 = never: only people move it). The demo sets it, so no order waits
# on a display nobody works.
PIZZAQUEUE_STAFFED_STANDBY = env_float("PIZZAQUEUE_STAFFED_STANDBY", 0.0, minimum=0.0)

# What customers call each shop: "name=Display Name" pairs, comma-separated
# (orders/shops.py); a shop not listed is shown by its name in words.
PIZZAQUEUE_SHOP_NAMES = env_pairs("PIZZAQUEUE_SHOP_NAMES")

# --- Money -------------------------------------------------------------------------
# The one currency every price and total is in (ISO 4217 code; orders/money.py shows it).
PIZZAQUEUE_CURRENCY = env_str("PIZZAQUEUE_CURRENCY", "EUR").strip().upper()
if not re.fullmatch(r"[A-Z]{3}", PIZZAQUEUE_CURRENCY):
    raise ImproperlyConfigured(f"PIZZAQUEUE_CURRENCY must be a three-letter code, got {PIZZAQUEUE_CURRENCY!r}")
# The delivery fee of an area that has no fee of its own (`DeliveryFee` rows, edited in admin).
PIZZAQUEUE_DELIVERY_FEE = env_money("PIZZAQUEUE_DELIVERY_FEE", "0")

# --- Stage deadlines --------------------------------------------------------------
# A stage may take its share of the order's estimated time times this factor before
# it is flagged as overdue on the board and the kitchen display (0 = no deadlines).
PIZZAQUEUE_STAGE_DEADLINE_FACTOR = env_float("PIZZAQUEUE_STAGE_DEADLINE_FACTOR", 3.0, minimum=0.0)
# Whether the monitor also gives an overdue delivery order to another kitchen.
PIZZAQUEUE_STAGE_RETRY = env_bool("PIZZAQUEUE_STAGE_RETRY", False)
# The function of an order that returns its current stage's limit in seconds (None: none).
PIZZAQUEUE_STAGE_LIMIT = env_str("PIZZAQUEUE_STAGE_LIMIT", "orders.deadlines.stage_limit")

# --- Promises ---------------------------------------------------------------------
# The function that quotes new orders' promised times from the live queue (empty: no quotes).
PIZZAQUEUE_QUOTE = env_str("PIZZAQUEUE_QUOTE", "orders.promises.quote")
# A function of the time the monitor calls every round: the shop keeps its promises there.
PIZZAQUEUE_MONITOR_DUTY = env_str("PIZZAQUEUE_MONITOR_DUTY", "orders.promises.keep")
# Seconds from ready to the customer's hands, added to the promise: at the counter (a
# takeaway order is promised ready to collect), and on the road to an area (a delivery
# order is promised at the door: PIZZAQUEUE_DELIVERY_SECONDS, or the area's own in
# PIZZAQUEUE_AREA_DELIVERY_SECONDS "north=900,harbour=600").
PIZZAQUEUE_COLLECTION_SECONDS = env_float("PIZZAQUEUE_COLLECTION_SECONDS", 0.0, minimum=0.0)
PIZZAQUEUE_DELIVERY_SECONDS = env_float("PIZZAQUEUE_DELIVERY_SECONDS", 900.0, minimum=0.0)
PIZZAQUEUE_AREA_DELIVERY_SECONDS = env_seconds_by_key("PIZZAQUEUE_AREA_DELIVERY_SECONDS")
# A promise is revised when the queue says it will be off by more than this share of the
# time it has left, and at least PIZZAQUEUE_PROMISE_TOLERANCE seconds.
PIZZAQUEUE_PROMISE_THRESHOLD = env_float("PIZZAQUEUE_PROMISE_THRESHOLD", 0.25, minimum=0.0)
PIZZAQUEUE_PROMISE_TOLERANCE = env_float("PIZZAQUEUE_PROMISE_TOLERANCE", 60.0, minimum=0.0)

# --- Live updates ---------------------------------------------------------------
# The in-memory layer fans out only within one web process; events cross
# processes through the OrderEvent rows, read by each web process's relay.
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1000}}}
# Seconds between the relay's reads of new events where there is no LISTEN/NOTIFY
# (SQLite); on PostgreSQL it is a safety net behind NOTIFY.
PIZZAQUEUE_RELAY_POLL_INTERVAL = env_float("PIZZAQUEUE_RELAY_POLL_INTERVAL", 0.1, minimum=0.01)
# Events read (and fanned out) per round.
PIZZAQUEUE_RELAY_BATCH = env_int("PIZZAQUEUE_RELAY_BATCH", 500, minimum=1)
# Longest wait for a missing event id (PostgreSQL commits out of id order) before skipping it.
PIZZAQUEUE_RELAY_GAP_TIMEOUT = env_float("PIZZAQUEUE_RELAY_GAP_TIMEOUT", 10.0, minimum=0.0)

# --- Clients and proxies (SPEC §9) -----------------------------------------------
# The load balancers and proxies in front of daphne whose X-Forwarded-For is believed
# (addresses or networks); from anyone else the header is ignored (orders/clients.py).
PIZZAQUEUE_TRUSTED_PROXIES = env_networks("PIZZAQUEUE_TRUSTED_PROXIES")
# Who may scrape /metrics (worker names are in its labels): a request with
# `Authorization: Bearer <PIZZAQUEUE_METRICS_TOKEN>`, or from one of these addresses.
PIZZAQUEUE_METRICS_TOKEN = env_str("PIZZAQUEUE_METRICS_TOKEN")
PIZZAQUEUE_METRICS_ALLOW = env_networks("PIZZAQUEUE_METRICS_ALLOW", "127.0.0.1,::1")

# --- WebSocket limits (per web process) -----------------------------------------
# Streams one process holds in all (its file descriptors and memory), streams of one
# browser session and of one order. Not per address: a whole office, campus or
# carrier NAT shares one (docs/security.md has the figures).
PIZZAQUEUE_WS_MAX_STREAMS = env_int("PIZZAQUEUE_WS_MAX_STREAMS", 5000, minimum=1)
PIZZAQUEUE_WS_PER_SESSION = env_int("PIZZAQUEUE_WS_PER_SESSION", 20, minimum=1)
PIZZAQUEUE_WS_PER_ORDER = env_int("PIZZAQUEUE_WS_PER_ORDER", 20, minimum=1)
# New streams per client address: a burst of this many at once, then this many per second.
PIZZAQUEUE_WS_CONNECT_BURST = env_int("PIZZAQUEUE_WS_CONNECT_BURST", 300, minimum=1)
PIZZAQUEUE_WS_CONNECT_RATE = env_float("PIZZAQUEUE_WS_CONNECT_RATE", 5.0, minimum=0.01)
# Clients only listen: a stream is closed after this many messages from its client,
# or one longer than PIZZAQUEUE_WS_MAX_MESSAGE_BYTES.
PIZZAQUEUE_WS_MAX_CLIENT_MESSAGES = env_int("PIZZAQUEUE_WS_MAX_CLIENT_MESSAGES", 10, minimum=0)
PIZZAQUEUE_WS_MAX_MESSAGE_BYTES = env_int("PIZZAQUEUE_WS_MAX_MESSAGE_BYTES", 1024, minimum=1)
# Events replayed to a (re)connecting client; further behind, it is told to reload.
PIZZAQUEUE_WS_REPLAY_LIMIT = env_int("PIZZAQUEUE_WS_REPLAY_LIMIT", 200, minimum=1)
# Seconds a stream may carry nothing either way before it is closed (the page reconnects if still open).
PIZZAQUEUE_WS_IDLE_TIMEOUT = env_float("PIZZAQUEUE_WS_IDLE_TIMEOUT", 600.0, minimum=0.1)

# --- Intake limits (SPEC §9) --------------------------------------------------
PIZZAQUEUE_MAX_ITEMS = env_int("PIZZAQUEUE_MAX_ITEMS", 20, minimum=1)
PIZZAQUEUE_MAX_QUANTITY = env_int("PIZZAQUEUE_MAX_QUANTITY", 20, minimum=1)
PIZZAQUEUE_MAX_NOTE = env_int("PIZZAQUEUE_MAX_NOTE", 500, minimum=0)
# How far ahead an order may be scheduled (`not_before`), in days.
PIZZAQUEUE_MAX_SCHEDULE_DAYS = env_int("PIZZAQUEUE_MAX_SCHEDULE_DAYS", 90, minimum=0, maximum=3650)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "orders.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # Every 4xx as {"detail", "code", "errors"}; the queue's exceptions as 404/409.
    "EXCEPTION_HANDLER": "orders.api.exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        # Orders one API user may place (DRF rate: N/second|minute|hour|day); empty = unlimited.
        # Counted across every web process, in the shared cache.
        "order-create": env_str("PIZZAQUEUE_API_CREATE_RATE", "600/minute") or None,
        # Orders one client address may place through the web form; empty = unlimited.
        "order-form": env_str("PIZZAQUEUE_WEB_ORDER_RATE", "30/minute") or None,
        # Staff login attempts per client address and per username (`orders.logins`); empty = unlimited.
        "login": env_str("PIZZAQUEUE_LOGIN_RATE", "10/minute") or None,
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "pizzaqueue API",
    "DESCRIPTION": "Place, track and cancel orders; watch the kitchens. Every call needs a token: "
    "`Authorization: Token <key>` (`python manage.py drf_create_token USER`). In this page, "
    "press *Authorize* and enter `Token <key>`, then *Try it out* on any call.",
    "VERSION": "1.0.0",
    # The schema and the docs are public: an integrator has a token, not a password, and
    # reads them before using it (Swagger UI's Authorize takes `Token <key>`). Every
    # call they describe still needs the token.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from this project's static files (drf-spectacular-sidecar), never a CDN;
    # and no online validator, which would send the schema's address to another host.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "ENUM_NAME_OVERRIDES": {
        "OrderStatusEnum": "workers.models.Order.Status",
        "OrderKindEnum": "workers.models.Order.Fulfilment",
        "EventKindEnum": "workers.models.OrderEvent.Kind",
        "WorkerStatusEnum": "workers.models.Worker.Status",
    },
}
