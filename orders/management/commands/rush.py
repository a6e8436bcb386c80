"""`python manage.py rush`: a dinner rush of synthetic orders.

Orders go through the same validation and `queue.place` (or, with --bulk,
`queue.place_many`) as the API, so a rush exercises the real intake path.
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from orders.intake import clean_order_request
from orders.models import Pizza, Size
from workers import queue
from workers.arguments import positive_float, positive_int

PRIORITY_MIX = ((0, 0.7), (5, 0.2), (9, 0.1))


class Command(BaseCommand):
    help = "Place a burst of synthetic orders through the normal intake path."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--orders", type=positive_int, required=True, help="How many orders to place.")
        parser.add_argument(
            "--rate", type=positive_float, default=None, help="Orders per second (default: as fast as possible)."
        )
        parser.add_argument(
            "--areas",
            type=positive_int,
            default=None,
            help="Spread orders over this many delivery areas (default: route each by its id).",
        )
        parser.add_argument("--priority-mix", action="store_true", help="Mix normal, high and urgent priorities.")
        parser.add_argument(
            "--bulk",
            type=positive_int,
            default=None,
            metavar="N",
            help="Place in transactions of N orders instead of one by one.",
        )
        parser.add_argument("--seed", type=int, default=None, help="Random seed, for repeatable rushes.")

    def handle(self, *args: Any, **options: Any) -> None:
        rng = random.Random(options["seed"])  # noqa: S311 - synthetic data, not security
        slugs = list(Pizza.objects.filter(available=True).values_list("slug", flat=True))
        if not slugs:
            raise CommandError("The menu is empty: run `python manage.py migrate` first.")
        count, rate, bulk = options["orders"], options["rate"], options["bulk"]
        requests = []
        started = time.perf_counter()
        for n in range(count):
            data: dict[str, Any] = {
                "items": [
                    {"pizza": rng.choice(slugs), "size": rng.choice(Size.values), "quantity": rng.randint(1, 3)}
                    for _ in range(rng.randint(1, 3))
                ],
                "customer_name": f"Rush customer {n + 1}",
                # Synthetic, like the rest: a street of the demo's town, a number nobody answers.
                "address": f"{n + 1} Rush Street",
                "phone": f"+1555{n % 10_000_000:07d}",
            }
            if options["areas"]:
                data["area"] = f"area-{rng.randrange(options['areas'])}"
            if options["priority_mix"]:
                data["priority"] = rng.choices([p for p, _ in PRIORITY_MIX], [w for _, w in PRIORITY_MIX])[0]
            try:
                request = clean_order_request(data)
            except ValidationError as exc:
                raise CommandError(f"Invalid synthetic order: {exc.message_dict}") from exc
            if bulk:
                requests.append(request)
                if len(requests) >= bulk:
                    queue.place_many(requests)
                    requests = []
            else:
                queue.place(request)
            if rate:
                # Pace against the schedule, not per order, so slow commits do not drift the rate.
                delay = started + (n + 1) / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
        if requests:
            queue.place_many(requests)
        elapsed = time.perf_counter() - started
        self.stdout.write(f"placed {count} orders in {elapsed:.2f}s ({count / elapsed:.0f} orders/s)")
