"""`python manage.py shop down|up NAME`: a power cut at one of the demo's shops, and the power back.

`down` kills the shop's kitchen process with SIGKILL, as a power cut would:
it says goodbye to nobody, so its heartbeat stops, the monitor declares the
shop down after PIZZAQUEUE_HEARTBEAT_TIMEOUT, its delivery orders move to the
other shops and its takeaway customers are told. `up` starts it again as a
new incarnation of the same shop. The running `manage.py demo` does both
(`orders.power`); the command waits until the board would show the change.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from orders import power
from orders.management.commands.demo import command_line
from workers.arguments import non_negative_float
from workers.models import Worker

# How long to wait for a running demo to take the request.
TAKE_TIMEOUT = 5.0


class Command(BaseCommand):
    help = "Take one of the demo's shops down like a power cut (down), or bring it back (up)."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("action", choices=power.ACTIONS, help="down: cut its power; up: power it back.")
        parser.add_argument("name", help="The shop, e.g. shop-2 (as the board lists it).")
        parser.add_argument(
            "--wait",
            type=non_negative_float,
            default=30.0,
            help="Seconds to wait for the board to show the change (0: do not wait).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        action, name = options["action"], options["name"]
        known = sorted(set(Worker.objects.values_list("name", flat=True)))
        if name not in known:
            raise CommandError(f"No shop named {name!r}; the shops are: {', '.join(known) or 'none yet'}.")
        power.request(name, action)
        deadline = time.monotonic() + TAKE_TIMEOUT
        while power.waiting(name):
            if time.monotonic() > deadline:
                power.withdraw(name)
                raise CommandError(
                    f"No demo took the request: `manage.py shop` works with a running `manage.py demo` on this "
                    f"database. Elsewhere, cut a kitchen's power with `kill -9 PID` and start it again with "
                    f"`manage.py worker --name {name}`."
                )
            time.sleep(0.1)
        if action == power.DOWN:
            self.stdout.write(f"{name} lost its power. Waiting for the monitor to notice its silence…")
            if self._wait_for(name, live=False, timeout=options["wait"]):
                self.stdout.write(
                    f"{name} is down: its delivery orders moved to the other shops and its takeaway "
                    f"customers were told. Bring it back with `{command_line('shop up', name)}`."
                )
        else:
            self.stdout.write(f"{name} has its power back. Waiting for it to open…")
            if self._wait_for(name, live=True, timeout=options["wait"]):
                self.stdout.write(f"{name} is open again and takes its share of the orders.")

    def _wait_for(self, name: str, live: bool, timeout: float) -> bool:
        """Until the newest incarnation of the shop is live (or not), as the board reads it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            newest = Worker.objects.filter(name=name).order_by("-incarnation").first()
            if newest is not None and newest.is_live == live:
                return True
            time.sleep(0.2)
        if timeout:
            self.stdout.write(f"{name} has not changed after {timeout:g} s; see the demo's terminal.")
        return False
