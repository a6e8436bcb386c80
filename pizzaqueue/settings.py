"""Settings for pizzaqueue: the one place that reads the environment.

Every variable goes through a small typed reader that raises
ImproperlyConfigured on a malformed value, so a typo in production fails at
start-up instead of silently turning a feature off. The defaults run on a
laptop: SQLite in the project folder, DEBUG on, a generated secret key.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

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

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_htmx",
    "channels",
    "orders",
    "workers",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
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
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
# SQLite by default: WAL so readers never block the writer, IMMEDIATE
# transactions so a transaction takes the write lock when it begins (two
# claimers then queue up on the busy timeout instead of deadlocking on a lock
# upgrade), and a busy timeout long enough to ride out a burst of writers.
SQLITE_PATH = BASE_DIR / "db.sqlite3"
DATABASES = {
    "default": dj_database_url.parse(
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

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]

REDIS_URL = env_str("REDIS_URL")

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
# A direct PostgreSQL URL for the LISTEN connections, when DATABASE_URL goes through
# PgBouncer in transaction mode (which cannot carry LISTEN). Default: DATABASE_URL.
PIZZAQUEUE_LISTEN_DATABASE_URL = env_str("PIZZAQUEUE_LISTEN_DATABASE_URL")
PIZZAQUEUE_POLL_INTERVAL = env_float("PIZZAQUEUE_POLL_INTERVAL", 0.25, minimum=0.001)
PIZZAQUEUE_SHUTDOWN_GRACE = env_float("PIZZAQUEUE_SHUTDOWN_GRACE", 30.0, minimum=0.0)
PIZZAQUEUE_CONCURRENCY = env_int("PIZZAQUEUE_CONCURRENCY", 4, minimum=1)
# Orders claimed beyond the free handler slots, to hide the claim round trip.
PIZZAQUEUE_PREFETCH = env_int("PIZZAQUEUE_PREFETCH", 0, minimum=0)
PIZZAQUEUE_HANDLER = env_str("PIZZAQUEUE_HANDLER", "orders.handlers.kitchen")
# Seconds of simulated kitchen time per second of recipe (0 = instant).
PIZZAQUEUE_KITCHEN_SPEED = env_float("PIZZAQUEUE_KITCHEN_SPEED", 1.0, minimum=0.0)
# A customer may cancel an order in the kitchen until it reaches this stage (empty: never).
PIZZAQUEUE_CUSTOMER_CANCEL_UNTIL = os.environ.get("PIZZAQUEUE_CUSTOMER_CANCEL_UNTIL", "oven").strip()
# How often a kitchen's handler looks at an order it holds while waiting (a staffed
# kitchen for its staff's taps, a simulated oven between stages): a cancelled or
# moved order is dropped within this many seconds.
PIZZAQUEUE_KITCHEN_CHECK_INTERVAL = env_float("PIZZAQUEUE_KITCHEN_CHECK_INTERVAL", 0.2, minimum=0.01)

# --- Stage deadlines --------------------------------------------------------------
# A stage may take its share of the order's estimated time times this factor before
# it is flagged as overdue on the board and the kitchen display (0 = no deadlines).
PIZZAQUEUE_STAGE_DEADLINE_FACTOR = env_float("PIZZAQUEUE_STAGE_DEADLINE_FACTOR", 3.0, minimum=0.0)
# Whether the monitor also gives an overdue delivery order to another kitchen.
PIZZAQUEUE_STAGE_RETRY = env_bool("PIZZAQUEUE_STAGE_RETRY", False)
# The function of an order that returns its current stage's limit in seconds (None: none).
PIZZAQUEUE_STAGE_LIMIT = env_str("PIZZAQUEUE_STAGE_LIMIT", "orders.deadlines.stage_limit")

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
        # Counted per process in the default (local-memory) cache.
        "order-create": env_str("PIZZAQUEUE_API_CREATE_RATE", "600/minute") or None,
        # Orders one client address may place through the web form; empty = unlimited.
        "order-form": env_str("PIZZAQUEUE_WEB_ORDER_RATE", "30/minute") or None,
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "pizzaqueue API",
    "DESCRIPTION": "Place, track and cancel orders; watch the kitchens. Every call needs a token: "
    "`Authorization: Token <key>` (`python manage.py drf_create_token USER`).",
    "VERSION": "1.0.0",
    # The schema and the docs need a login or a token too, like the rest of the API.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "OrderStatusEnum": "workers.models.Order.Status",
        "OrderKindEnum": "workers.models.Order.Kind",
        "EventKindEnum": "workers.models.OrderEvent.Kind",
        "WorkerStatusEnum": "workers.models.Worker.Status",
    },
}
