"""`python manage.py standins`: stand-in counter staff and a stand-in driver for every shop.

A pass every `--every` seconds (`orders.standins.step`): takeaway orders
collected and paid, delivery orders taken off their shelf, driven for their
area's delivery time and delivered, each once a person has not done it within
`--standby` seconds. `manage.py demo` runs it, so a demo nobody works still
shows every order to its end; a real shop runs people instead.
"""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand
from django.db import DatabaseError, connections

from orders import standins
from workers.arguments import non_negative_float, positive_float


class Command(BaseCommand):
    help = "Stand in for the counter and the drivers: hand over every made order nobody hands over."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--standby",
            type=non_negative_float,
            default=4.0,
            help="Seconds a made order waits for a person before a stand-in takes its step.",
        )
        parser.add_argument("--every", type=positive_float, default=0.5, help="Seconds between passes.")

    def handle(self, *args: Any, **options: Any) -> None:
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: stop.set())
        driver = standins.stand_in_driver()
        self.stdout.write(f"Stand-ins at every counter and shelf, after {options['standby']:g} s.")
        while not stop.wait(options["every"]):
            try:
                standins.step(options["standby"], driver=driver)
            except DatabaseError:
                # The database is away (a restart, a failover): the next pass tries again.
                connections.close_all()
