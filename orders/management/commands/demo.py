"""`python manage.py demo`: the whole chain on one laptop.

1. Migrate the database (SQLite by default) and seed the menu.
2. Create one account per role and print their credentials: an operator,
   kitchen staff of the staffed shop, a driver of its shelf, an integrator with an API token. The
   passwords are derived from the checkout's SECRET_KEY and the token is kept,
   so a second run prints the same ones and a saved token still works.
3. Start daphne and three simulated kitchens as child processes, with a kitchen
   speed that makes an order take 10-20 s, so every stage can be watched, and
   one staffed kitchen whose stages are tapped on its display (a stand-in cook
   takes a step nobody taps within a few seconds, so no order waits on a
   display nobody watches). Stand-ins for the counter and a driver
   (`manage.py standins`) hand each made order over the same way, so every
   order runs to "delivered" or "collected". With `--web N` (N > 1), N daphne
   processes on the next ports behind HAProxy (deploy/haproxy.cfg) on the given port.
4. Print the URLs, then watch the children. A kitchen that dies (a crash, a
   `kill -9`, `manage.py shop down NAME`) is reported and the demo goes on
   serving: that is the story the demo is there to show, its orders moving to
   the other shops. `manage.py shop up NAME` starts it again. Only the web
   tier's death stops the demo. Ctrl-C or SIGTERM: forward one SIGTERM to
   every child (each stops gracefully), wait for them, exit.
"""

from __future__ import annotations

import argparse
import os
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
from django.db import DatabaseError, connections
from django.utils.crypto import salted_hmac
from rest_framework.authtoken.models import Token

from orders import power, roles
from orders.handlers import STAFFED_HANDLER
from orders.menu import seed_menu
from orders.models import Driver, KitchenStaff, Pizza
from pizzaqueue.haproxy import render, web_environment
from workers.arguments import non_negative_float, non_negative_int, positive_int

MANAGE_PY = Path(settings.BASE_DIR) / "manage.py"
# The web tier's processes: if one of them dies, nothing is served and the demo stops.
WEB_TIER = ("daphne", "haproxy")
# The stand-ins for the counter and the drivers: no shop of their own.
STAND_INS = "stand-ins"
# The demo's clocks: quick heartbeats, so a shop that goes down is noticed in seconds.
HEARTBEAT_INTERVAL = 1
HEARTBEAT_TIMEOUT = 5
# A shop down this long is closed and its takeaway customers told: long enough that
# `shop up` within it carries on as the same shop, short enough to watch the telling.
SHOP_CLOSED_AFTER = 30
# A drive to a customer, at the demo's pace (the kitchen's speed makes an order 10-20 s).
DELIVERY_SECONDS = 30
# What the demo's customers call its shops, in the order they are started.
DISPLAY_NAMES = ("Harbour Street", "Old Town", "Riverside", "Market Square", "Station Road", "Castle Hill")
# Labels of the printed lines are padded to this width, so the values line up.
LABEL_WIDTH = 20


def command_line(*args: str) -> str:
    """How to run `manage.py` from this terminal: this interpreter (the virtualenv's, e.g.
    `.venv/bin/python`) and manage.py, relative to the working directory where they sit under it."""

    def shown(path: Path) -> str:
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)

    return " ".join([shown(Path(sys.executable)), shown(MANAGE_PY), *args])


def shop_names(shops: list[str]) -> str:
    """PIZZAQUEUE_SHOP_NAMES for the demo's shops: what their customers call them."""
    return ",".join(f"{shop}={place}" for shop, place in zip(shops, DISPLAY_NAMES, strict=False))


def line(label: str, value: str) -> str:
    """One line of the demo's notice: the label, padded, then its value."""
    return f"  {label + ':':<{LABEL_WIDTH}}{value}"


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
        parser.add_argument(
            "--standby",
            type=non_negative_float,
            default=4.0,
            help=(
                "Seconds a staffed kitchen's ticket, or a made order at a counter or on a shelf, waits for a "
                "person's tap before a stand-in takes the step (0: never; only people move them)."
            ),
        )
        parser.add_argument(
            "--handover-standby",
            type=non_negative_float,
            default=None,
            help="Seconds a made order waits at a counter or on a shelf before a stand-in hands it over "
            "(default: --standby; 0: never).",
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
            "PIZZAQUEUE_SHOP_NAMES": shop_names([*names, *staffed]),
            "PIZZAQUEUE_HEARTBEAT_INTERVAL": str(HEARTBEAT_INTERVAL),
            "PIZZAQUEUE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
            "PIZZAQUEUE_SHOP_CLOSED_AFTER": str(SHOP_CLOSED_AFTER),
            "PIZZAQUEUE_DELIVERY_SECONDS": str(DELIVERY_SECONDS),
            **os.environ,
            "PIZZAQUEUE_KITCHEN_SPEED": str(options["kitchen_speed"]),
            "PIZZAQUEUE_SHUTDOWN_GRACE": str(options["grace"]),
            "PIZZAQUEUE_STAFFED_STANDBY": str(options["standby"]),
        }
        self.timeout = float(env["PIZZAQUEUE_HEARTBEAT_TIMEOUT"])
        self.standby = options["standby"]
        handover_standby = options["handover_standby"]
        self.handover_standby = self.standby if handover_standby is None else handover_standby
        self.drive = float(env["PIZZAQUEUE_DELIVERY_SECONDS"])
        host, port = options["host"], options["port"]
        commands = self.web_tier(host, port, options["web"], haproxy)
        if "haproxy" in commands:
            # Behind the proxy, as deploy/web.env says: each client is itself, not HAProxy.
            env = {**web_environment(), **env}
        commands |= {name: [sys.executable, str(MANAGE_PY), "worker", "--name", name] for name in names}
        commands |= {
            name: [sys.executable, str(MANAGE_PY), "worker", "--name", name, "--handler", STAFFED_HANDLER]
            for name in staffed
        }
        if self.handover_standby:
            commands[STAND_INS] = [sys.executable, str(MANAGE_PY), "standins", "--standby", str(self.handover_standby)]
        names += staffed

        stop = threading.Event()
        previous = {
            sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        # Own process groups: a Ctrl-C in the terminal reaches only this process, which
        # then sends each child exactly one SIGTERM (a second signal would force a worker out).
        children = {name: self.start(command, env) for name, command in commands.items()}
        try:
            self.announce(host, port, accounts, names)
            crashed = self.wait(children, stop, commands, env)
        finally:
            self.stop_children(children, timeout=options["grace"] + 10)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if crashed:
            raise SystemExit(1)

    def start(self, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """A child in its own process group: a Ctrl-C in the terminal reaches only the demo."""
        return subprocess.Popen(command, env=env, process_group=0)  # noqa: S603 - our own fixed commands

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
        """One account per role, each with the password of its name; returns the lines that present them."""
        user, password = self.account(operator, roles.OPERATORS, is_staff=True)
        operator_line = line("Operator login", f"{user.get_username()} / {password}  (board, admin, every action)")
        user, password = self.account("kitchen", roles.KITCHEN_STAFF)
        KitchenStaff.objects.get_or_create(user=user, shop=first_shop)
        kitchen_line = line("Kitchen staff", f"{user.get_username()} / {password}  (the {first_shop} display only)")
        user, password = self.account("driver", roles.DRIVERS)
        Driver.objects.get_or_create(user=user, shop=first_shop)
        driver_line = line("Driver", f"{user.get_username()} / {password}  (the {first_shop} shelf only)")
        user, _password = self.account("integrator", roles.INTEGRATORS)
        # Kept across runs: a token saved in a script or in Swagger UI goes on working.
        token, _created = Token.objects.get_or_create(user=user)
        token_line = line("Integrator token", f"{token.key}  (the API and its docs, for its own orders)")
        return [operator_line, kitchen_line, driver_line, token_line]

    def account(self, username: str, role: str, is_staff: bool = False) -> tuple[Any, str]:
        """A user in the role's group (and no other), with the demo's password for that name.

        The password is derived from the checkout's SECRET_KEY (kept in a file
        across runs), so every run prints the same one and a browser that saved
        it still logs in; a password changed since is set back to it.
        """
        password = self.demo_password(username)
        user, _created = get_user_model().objects.get_or_create(username=username)
        user.is_staff, user.is_superuser, user.is_active = is_staff, False, True
        if not user.check_password(password):
            user.set_password(password)
        user.save()
        user.groups.set([Group.objects.get(name=role)])
        return user, password

    @staticmethod
    def demo_password(username: str) -> str:
        """The demo's password for an account: the same on every run of this checkout."""
        return salted_hmac("pizzaqueue.demo.password", username).hexdigest()[:16]

    def announce(self, host: str, port: int, accounts: list[str], kitchens: list[str]) -> None:
        base = f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{port}"  # noqa: S104 - a URL, not a bind
        lines = [
            "",
            self.style.SUCCESS("pizzaqueue demo is starting"),
            line("Order a pizza", f"{base}/"),
            line("Operations board", f"{base}/board/"),
            *[line(f"Kitchen {name}", f"{base}/kitchen/{name}/") for name in kitchens],
            line("Admin", f"{base}/admin/"),
            line("API docs", f"{base}/api/docs/"),
            *accounts,
            "",
            *self.staffed_lines(kitchens),
            *self.handover_lines(),
            line("A dinner rush", command_line("rush --orders 30 --rate 2 --areas 6 --priority-mix")),
            line(
                "A power cut",
                command_line("shop down shop-2") + f"  (the board shows it down within {self.timeout:g} s)",
            ),
            line("Power back", command_line("shop up shop-2")),
            "  Press Ctrl-C to stop everything.",
            "",
        ]
        self.stdout.write("\n".join(lines))

    def staffed_lines(self, kitchens: list[str]) -> list[str]:
        """What the notice says about the staffed kitchens, if the demo runs any."""
        if not any(name.startswith("staffed-") for name in kitchens):
            return []
        cook = (
            f"(a stand-in cook takes a step nobody taps within {self.standby:g} s)."
            if self.standby
            else "(nobody else moves their tickets)."
        )
        return [
            "  Kitchens named staffed-N are run by people: tap each ticket through its stages on the display",
            f"  {cook}",
            "",
        ]

    def handover_lines(self) -> list[str]:
        """What the notice says about the made orders: who hands them over."""
        if not self.handover_standby:
            return ["  Made orders wait at the counter and on the shelves for people to hand them over.", ""]
        return [
            f"  Made orders wait at the counter and on the shelves: tap them through as the driver, or after "
            f"{self.handover_standby:g} s a stand-in does (a drive takes {self.drive:g} s).",
            "",
        ]

    def wait(
        self,
        children: dict[str, subprocess.Popen[bytes]],
        stop: threading.Event,
        commands: dict[str, list[str]],
        env: dict[str, str],
    ) -> bool:
        """Watch the children until a stop signal; True if the web tier died on its own first.

        A kitchen that exits is reported once, and the demo goes on: its orders
        move to the other shops, which is what a newcomer is here to watch.
        Power requests (`manage.py shop`) are taken here, as the children's parent.
        """
        reported: set[str] = set()
        kitchens = [name for name in children if not name.startswith(WEB_TIER) and name != STAND_INS]
        while not stop.wait(0.5):
            for name, child in children.items():
                if child.poll() is None or name in reported:
                    continue
                if name.startswith(WEB_TIER):
                    self.stderr.write(
                        f"{name} exited with code {child.returncode}: nothing is served; stopping the demo"
                    )
                    return True
                reported.add(name)
                if name == STAND_INS:
                    self.stderr.write(
                        f"The stand-ins exited ({self.how(child.returncode)}): made orders now wait for people."
                    )
                    continue
                self.stderr.write(
                    f"{name} went down ({self.how(child.returncode)}). The demo goes on: within {self.timeout:g} s "
                    f"the board shows it down, its delivery orders move to the other shops and its takeaway "
                    f"customers are told. Bring it back: {command_line('shop up', name)}"
                )
            try:
                requests = power.pending(kitchens)
            except DatabaseError:
                # The database is away (a restart, a failover): the kitchens and the web
                # tier ride it out on their own, and so does the demo: it asks again.
                connections.close_all()
                continue
            for name, action in requests.items():
                child = children[name]
                if action == power.DOWN and child.poll() is None:
                    child.kill()  # SIGKILL: no goodbye, no hand-back, like a power cut
                    child.wait()
                    self.stdout.write(f"Power cut at {name}.")
                elif action == power.UP and child.poll() is not None:
                    children[name] = self.start(commands[name], env)
                    reported.discard(name)
                    self.stdout.write(f"Power back at {name}: it opens as a new incarnation of the shop.")
                else:
                    self.stdout.write(f"{name} is already {'down' if action == power.DOWN else 'up'}.")
                power.taken(name)
        return False

    @staticmethod
    def how(returncode: int) -> str:
        if returncode < 0:
            return f"killed by {signal.Signals(-returncode).name}"
        return f"exit code {returncode}"

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
