"""`python manage.py demo`: the whole chain on one laptop.

1. Migrate the database (SQLite by default) and seed the menu.
2. Create (or reset) a staff account and print its credentials.
3. Start daphne and three simulated kitchens as child processes, with a kitchen
   speed that makes an order take 10-20 s, so every stage can be watched, and
   one staffed kitchen whose stages are tapped on its display.
4. Print the URLs, then wait. Ctrl-C or SIGTERM: forward one SIGTERM to every
   child (each stops gracefully), wait for them, exit.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from orders.handlers import STAFFED_HANDLER
from orders.menu import seed_menu
from orders.models import Pizza
from workers.arguments import non_negative_float, non_negative_int, positive_int

MANAGE_PY = Path(settings.BASE_DIR) / "manage.py"


class Command(BaseCommand):
    help = "Run a demo: migrate, seed the menu, create an operator, start daphne, three kitchens and a staffed one."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Address daphne listens on.")
        parser.add_argument("--port", type=positive_int, default=8000, help="Port daphne listens on.")
        parser.add_argument(
            "--kitchens", type=positive_int, default=3, help="How many simulated kitchens (workers) to start."
        )
        parser.add_argument(
            "--staffed",
            type=non_negative_int,
            default=1,
            help="How many staffed kitchens to start beside them (their display's taps drive the stages).",
        )
        parser.add_argument(
            "--kitchen-speed",
            type=non_negative_float,
            default=0.25,
            help="Seconds of kitchen time per recipe second (0.25: an order takes 10-20 s).",
        )
        parser.add_argument(
            "--grace",
            type=non_negative_float,
            default=5.0,
            help="Seconds a stopping kitchen may spend finishing its orders.",
        )
        parser.add_argument("--username", default="operator", help="The staff account to create.")

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        seed_menu(Pizza)
        password = self.operator(options["username"])

        # The children get this process's environment (DATABASE_URL included) plus
        # demo clocks: quick heartbeats, so a killed kitchen is noticed in seconds.
        env = {
            "PIZZAQUEUE_HEARTBEAT_INTERVAL": "1",
            "PIZZAQUEUE_HEARTBEAT_TIMEOUT": "5",
            **os.environ,
            "PIZZAQUEUE_KITCHEN_SPEED": str(options["kitchen_speed"]),
            "PIZZAQUEUE_SHUTDOWN_GRACE": str(options["grace"]),
        }
        host, port = options["host"], options["port"]
        names = [f"shop-{n}" for n in range(1, options["kitchens"] + 1)]
        commands = {
            "daphne": [sys.executable, "-m", "daphne", "-b", host, "-p", str(port), "pizzaqueue.asgi:application"]
        }
        commands |= {name: [sys.executable, str(MANAGE_PY), "worker", "--name", name] for name in names}
        staffed = [f"staffed-{n}" for n in range(1, options["staffed"] + 1)]
        commands |= {
            name: [sys.executable, str(MANAGE_PY), "worker", "--name", name, "--handler", STAFFED_HANDLER]
            for name in staffed
        }
        names += staffed

        stop = threading.Event()
        previous = {
            sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        # Own process groups: a Ctrl-C in the terminal reaches only this process, which
        # then sends each child exactly one SIGTERM (a second signal would force a worker out).
        children = {
            name: subprocess.Popen(command, env=env, process_group=0)  # noqa: S603 - our own fixed commands
            for name, command in commands.items()
        }
        try:
            self.announce(host, port, options["username"], password, names)
            crashed = self.wait(children, stop)
        finally:
            self.stop_children(children, timeout=options["grace"] + 10)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if crashed:
            raise SystemExit(1)

    def operator(self, username: str) -> str:
        """Create the staff account, or give it a new password; returns the password."""
        password = secrets.token_urlsafe(12)
        user, _created = get_user_model().objects.get_or_create(username=username)
        user.is_staff = user.is_superuser = user.is_active = True
        user.set_password(password)
        user.save()
        return password

    def announce(self, host: str, port: int, username: str, password: str, kitchens: list[str]) -> None:
        base = f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{port}"  # noqa: S104 - a URL, not a bind
        lines = [
            "",
            self.style.SUCCESS("pizzaqueue demo is starting"),
            f"  Order a pizza:      {base}/",
            f"  Operations board:   {base}/board/",
            *[f"  Kitchen {name}:     {base}/kitchen/{name}/" for name in kitchens],
            f"  Admin:              {base}/admin/",
            f"  Staff login:        {username} / {password}",
            "  Kitchens named staffed-N are run by people: tap each ticket through its stages on the display.",
            "",
            "  A dinner rush:      python manage.py rush --orders 30 --rate 2 --areas 6 --priority-mix",
            "  Press Ctrl-C to stop everything.",
            "",
        ]
        self.stdout.write("\n".join(lines))

    def wait(self, children: dict[str, subprocess.Popen[bytes]], stop: threading.Event) -> bool:
        """Wait for a stop signal; True if a child died on its own first."""
        while not stop.wait(0.5):
            for name, child in children.items():
                if child.poll() is not None:
                    self.stderr.write(f"{name} exited with code {child.returncode}; stopping the demo")
                    return True
        return False

    def stop_children(self, children: dict[str, subprocess.Popen[bytes]], timeout: float) -> None:
        self.stdout.write("Stopping: kitchens finish what they are baking…")
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children.values():
            try:
                child.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.stdout.write("Stopped.")
