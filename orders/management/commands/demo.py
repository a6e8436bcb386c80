"""`python manage.py demo`: the whole chain on one laptop.

1. Migrate the database (SQLite by default) and seed the menu.
2. Create (or reset) one account per role and print their credentials: an
   operator, kitchen staff of the first shop, an integrator with an API token.
3. Start daphne and three simulated kitchens as child processes, with a kitchen
   speed that makes an order take 10-20 s, so every stage can be watched, and
   one staffed kitchen whose stages are tapped on its display. With `--web N`
   (N > 1), N daphne processes on the next ports behind HAProxy
   (deploy/haproxy.cfg) on the given port, as in production.
4. Print the URLs, then wait. Ctrl-C or SIGTERM: forward one SIGTERM to every
   child (each stops gracefully), wait for them, exit.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from rest_framework.authtoken.models import Token

from orders import roles
from orders.handlers import STAFFED_HANDLER
from orders.menu import seed_menu
from orders.models import KitchenStaff, Pizza
from pizzaqueue.haproxy import render
from workers.arguments import non_negative_float, non_negative_int, positive_int

MANAGE_PY = Path(settings.BASE_DIR) / "manage.py"


class Command(BaseCommand):
    help = (
        "Run a demo: migrate, seed the menu, create an account per role, start daphne, "
        "three kitchens and a staffed one."
    )

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
        parser.add_argument("--username", default="operator", help="The operator account to create.")
        parser.add_argument(
            "--web",
            type=positive_int,
            default=1,
            help="How many daphne processes; more than one runs them behind HAProxy (it must be installed).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        haproxy = shutil.which("haproxy")
        if options["web"] > 1 and haproxy is None:
            raise CommandError(
                "--web needs HAProxy to balance the daphne processes, and it is not installed "
                "(Debian: apt-get install haproxy). Run without --web for one daphne."
            )
        call_command("migrate", interactive=False, verbosity=0)
        seed_menu(Pizza)
        names = [f"shop-{n}" for n in range(1, options["kitchens"] + 1)]
        staffed = [f"staffed-{n}" for n in range(1, options["staffed"] + 1)]
        # The kitchen account works the display whose taps matter: the staffed kitchen's.
        accounts = self.accounts(options["username"], (staffed or names)[0])

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
        commands = self.web_tier(host, port, options["web"], haproxy)
        commands |= {name: [sys.executable, str(MANAGE_PY), "worker", "--name", name] for name in names}
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
            self.announce(host, port, accounts, names)
            crashed = self.wait(children, stop)
        finally:
            self.stop_children(children, timeout=options["grace"] + 10)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if crashed:
            raise SystemExit(1)

    def web_tier(self, host: str, port: int, size: int, haproxy: str | None) -> dict[str, list[str]]:
        """One daphne on the port; or `size` daphne on the next ports behind HAProxy on it."""
        daphne = [sys.executable, "-m", "daphne", "-b", host, "-p"]
        if size == 1 or haproxy is None:
            return {"daphne": [*daphne, str(port), "pizzaqueue.asgi:application"]}
        ports = [port + n for n in range(1, size + 1)]
        config = tempfile.NamedTemporaryFile("w", prefix="pizzaqueue-haproxy-", suffix=".cfg", delete=False)  # noqa: SIM115
        with config:
            config.write(render(f"{host}:{port}", [f"{host}:{p}" for p in ports]))
        self.stdout.write(f"HAProxy on {host}:{port} in front of daphne on ports {', '.join(map(str, ports))}")
        return {
            "haproxy": [haproxy, "-db", "-f", config.name],
            **{f"daphne-{n}": [*daphne, str(p), "pizzaqueue.asgi:application"] for n, p in enumerate(ports, start=1)},
        }

    def accounts(self, operator: str, first_shop: str) -> list[str]:
        """One account per role, created or given a new password; returns the lines that present them."""
        lines = []
        user, password = self.account(operator, roles.OPERATORS, is_staff=True)
        lines.append(f"  Operator login:     {user.get_username()} / {password}  (board, admin, every action)")
        user, password = self.account("kitchen", roles.KITCHEN_STAFF)
        KitchenStaff.objects.get_or_create(user=user, shop=first_shop)
        lines.append(f"  Kitchen staff:      {user.get_username()} / {password}  (the {first_shop} display only)")
        user, _password = self.account("integrator", roles.INTEGRATORS)
        Token.objects.filter(user=user).delete()
        token = Token.objects.create(user=user).key
        lines.append(f"  Integrator token:   {token}  (the API, for its own orders)")
        return lines

    def account(self, username: str, role: str, is_staff: bool = False) -> tuple[Any, str]:
        """A user in the role's group (and no other), with a fresh password."""
        password = secrets.token_urlsafe(12)
        user, _created = get_user_model().objects.get_or_create(username=username)
        user.is_staff, user.is_superuser, user.is_active = is_staff, False, True
        user.set_password(password)
        user.save()
        user.groups.set([Group.objects.get(name=role)])
        return user, password

    def announce(self, host: str, port: int, accounts: list[str], kitchens: list[str]) -> None:
        base = f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{port}"  # noqa: S104 - a URL, not a bind
        lines = [
            "",
            self.style.SUCCESS("pizzaqueue demo is starting"),
            f"  Order a pizza:      {base}/",
            f"  Operations board:   {base}/board/",
            *[f"  Kitchen {name}:     {base}/kitchen/{name}/" for name in kitchens],
            f"  Admin:              {base}/admin/",
            *accounts,
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
