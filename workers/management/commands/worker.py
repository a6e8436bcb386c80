"""`python manage.py worker`: one worker process, a kitchen to the shop (SPEC §6)."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created
from django.utils.module_loading import import_string

from workers import sql
from workers.arguments import non_negative_int, positive_int
from workers.loop import WorkerLoop

VERBOSITY_LEVELS = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}


def worker_name(value: str) -> str:
    value = value.strip()
    if not value or len(value) > 100:
        raise argparse.ArgumentTypeError("must be 1 to 100 characters")
    return value


def end_idle_transactions(sender: object, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """A worker paused inside a transaction (SIGSTOP, a frozen VM, a long GC
    pause) holds row locks the monitor needs to declare it dead, so PostgreSQL
    ends such a session after half the heartbeat timeout: before the worker
    can even be judged stale, its locks are gone."""
    if connection.vendor == "postgresql":
        timeout = f"{round(settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT * 500)}ms"
        with connection.cursor() as cursor:
            cursor.execute(sql.queries["idle_in_transaction_timeout"], [timeout])


def link_timeouts(heartbeat_timeout: float) -> dict[str, int]:
    """libpq's connection options that bound how long a dead link can hold a call:
    connecting, and unacknowledged data or silence on an open connection, each
    give up within about half the heartbeat timeout."""
    half = max(1, round(heartbeat_timeout / 2))
    return {
        "connect_timeout": max(2, half),
        "keepalives": 1,
        "keepalives_idle": half,
        "keepalives_interval": 1,
        "keepalives_count": 3,
        "tcp_user_timeout": half * 1000,
    }


class Command(BaseCommand):
    help = "Run a kitchen: claim orders, bake them, heartbeat, and take the monitor duty when elected."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--name", type=worker_name, help="Shop name, shown to customers (default: kitchen-<6 random hex digits>)."
        )
        parser.add_argument(
            "--concurrency",
            type=positive_int,
            default=None,
            help="Orders baked at once (default: PIZZAQUEUE_CONCURRENCY).",
        )
        parser.add_argument(
            "--prefetch",
            type=non_negative_int,
            default=None,
            help=(
                "Orders claimed beyond the free slots, fixed (default: PIZZAQUEUE_PREFETCH, or if unset"
                " what will start within PIZZAQUEUE_CLAIM_HORIZON at the measured rate)."
            ),
        )
        parser.add_argument("--handler", default=None, help="Dotted path of handler(order, progress).")
        parser.add_argument("--burst", action="store_true", help="Drain what is claimable, then exit.")
        parser.add_argument("--max-orders", type=positive_int, default=None, help="Exit after this many orders.")

    def handle(self, *args: Any, **options: Any) -> None:
        self.configure_logging(options["verbosity"])
        path = options["handler"] or settings.PIZZAQUEUE_HANDLER
        try:
            handler = import_string(path)
        except ImportError as exc:
            raise CommandError(f"Cannot import handler {path!r}: {exc}") from exc
        if not callable(handler):
            raise CommandError(f"Handler {path!r} is not callable")
        worker = WorkerLoop(
            handler,
            name=options["name"],
            concurrency=options["concurrency"] or settings.PIZZAQUEUE_CONCURRENCY,
            prefetch=options["prefetch"] if options["prefetch"] is not None else settings.PIZZAQUEUE_PREFETCH,
            horizon=settings.PIZZAQUEUE_CLAIM_HORIZON,
            burst=options["burst"],
            max_orders=options["max_orders"],
        )
        default = connections["default"]
        # Each baking thread keeps its own connection for the life of the process,
        # so a pool smaller than the concurrency would starve them: no pool here.
        default.settings_dict["OPTIONS"].pop("pool", None)
        if default.vendor == "postgresql":
            # Lets an operator tell workers apart in pg_stat_activity.
            default.settings_dict["OPTIONS"]["application_name"] = f"pizzaqueue-worker-{worker.name}"[:63]
            # A cut link must fail a call within the lease, not after TCP's minutes of
            # retries, so the worker notices, gives its leases up and rejoins when it heals.
            default.settings_dict["OPTIONS"].update(link_timeouts(settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT))
            connection_created.connect(end_idle_transactions, weak=False)
            default.close()  # reopened with both
        code = worker.run()
        if worker.running:
            # Handlers overran the grace period; their orders were handed back. Their
            # threads cannot be interrupted, and a normal exit would wait for them.
            logging.shutdown()
            os._exit(code)
        if code:
            raise SystemExit(code)

    def configure_logging(self, verbosity: int) -> None:
        level = VERBOSITY_LEVELS.get(verbosity, logging.DEBUG)
        for name in ("workers", "orders"):
            logging.getLogger(name).setLevel(level)
        root = logging.getLogger()
        if not root.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
            root.addHandler(handler)
