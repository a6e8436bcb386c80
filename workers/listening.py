"""The dedicated LISTEN connections: their parameters, and whom a wake-up is for.

A worker and a web process's relay each keep one connection that only
LISTENs. Behind PgBouncer in transaction mode LISTEN cannot work (the server
connection goes back to the pool after each statement, and the notifications
with it), so PIZZAQUEUE_LISTEN_DATABASE_URL can point these connections
straight at PostgreSQL while everything else goes through the pooler.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connections

from workers import database_url
from workers.database_url import KEEPALIVES


def for_worker(payload: str, worker_id: int | None) -> bool:
    """Whether a notification on the orders channel should wake the worker `worker_id`.

    A placed order names the one worker that owns its bucket (the `place` statement);
    every other change (a release, a retry, a bulk intake) names nobody and
    wakes every worker. A worker passed over by mistake (its bucket moved
    while the order was placed) still finds the order at its next poll.
    """
    return not payload or worker_id is None or payload == str(worker_id)


def listen_params(application_name: str) -> dict[str, Any]:
    """psycopg.connect() keyword arguments for a LISTEN-only connection."""
    url = settings.PIZZAQUEUE_LISTEN_DATABASE_URL
    if url:
        # A cluster's node list and its options (target_session_attrs, timeouts) come along.
        parsed = database_url.parse(url, "PIZZAQUEUE_LISTEN_DATABASE_URL")
        params: dict[str, Any] = {
            "dbname": parsed["NAME"],
            "user": parsed["USER"],
            "password": parsed["PASSWORD"],
            "host": parsed["HOST"],
            "port": parsed["PORT"],
            **{key: value for key, value in parsed.get("OPTIONS", {}).items() if key != "pool"},
        }
        params = {key: value for key, value in params.items() if value}
    else:
        params = connections["default"].get_connection_params()
        # Django's cursor class and adapters are for its own connections; a listener needs none.
        for django_only in ("cursor_factory", "context", "prepare_threshold", "pool"):
            params.pop(django_only, None)
    params["application_name"] = application_name[:63]
    return {**params, **KEEPALIVES}
