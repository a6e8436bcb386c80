"""`python manage.py purge`: delete finished orders older than a date, in small batches.

Each batch is its own short transaction (`queue.purge`), so purging millions of
rows never holds a long lock or blocks claims; the events go with their orders,
and an order requeued while its batch is deleted is kept.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from workers import clock, queue
from workers.arguments import positive_int
from workers.models import Order


def cutoff(value: str) -> datetime | timedelta:
    """An ISO date/time, or an age such as 30d / 12h (counted back from the
    database's clock in `handle`: finished times are the database's, SPEC §4.8)."""
    if value[-1:] in ("d", "h") and value[:-1].isdigit():
        unit = "days" if value[-1] == "d" else "hours"
        return timedelta(**{unit: int(value[:-1])})
    try:
        parsed = parse_datetime(value) or parse_datetime(f"{value}T00:00:00")
    except ValueError:
        parsed = None
    if parsed is None:
        raise argparse.ArgumentTypeError(f"{value!r} is neither an ISO date nor an age like 30d or 12h")
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed)


class Command(BaseCommand):
    help = "Delete done, failed and cancelled orders (and their events) finished before a date."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--before", type=cutoff, required=True, help="ISO date/time, or an age: 30d, 12h.")
        parser.add_argument("--batch", type=positive_int, default=1000, help="Orders deleted per transaction.")
        parser.add_argument("--dry-run", action="store_true", help="Only count what would be deleted.")

    def handle(self, *args: Any, **options: Any) -> None:
        before = options["before"]
        if isinstance(before, timedelta):
            # An age is the database's: this machine's clock may be hours off the server's.
            before = clock.now() - before
        old = Order.objects.finished().filter(finished_at__lt=before)
        if options["dry_run"]:
            self.stdout.write(f"would delete {old.count()} orders finished before {before:%Y-%m-%d %H:%M}")
            return
        deleted = 0
        while batch := queue.purge(before, options["batch"]):
            deleted += batch
        self.stdout.write(f"deleted {deleted} orders finished before {before:%Y-%m-%d %H:%M}")
