"""`python manage.py requeue`: give failed (or named) orders another chance."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from orders import deadlines
from workers import queue
from workers.models import Order


class Command(BaseCommand):
    help = "Put failed orders (or the given orders) back in the queue with fresh attempts."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("order_ids", nargs="*", help="Order ids (UUIDs).")
        parser.add_argument("--all-failed", action="store_true", help="Requeue every failed order.")

    def handle(self, *args: Any, **options: Any) -> None:
        ids = options["order_ids"]
        if options["all_failed"]:
            if ids:
                raise CommandError("Give order ids or --all-failed, not both.")
            ids = list(Order.objects.filter(status=Order.Status.FAILED).values_list("id", flat=True).iterator())
        elif not ids:
            raise CommandError("Give order ids, or --all-failed.")
        requeued = refused = 0
        for order_id in ids:
            try:
                deadlines.requeue(order_id, "requeued from the command line")
            except (queue.OrderNotFoundError, queue.InvalidTransitionError) as exc:
                refused += 1
                self.stderr.write(f"{order_id}: {exc}")
            else:
                requeued += 1
        self.stdout.write(f"requeued {requeued} orders; {refused} refused")
        if refused and not requeued:
            raise CommandError("Nothing was requeued.")
