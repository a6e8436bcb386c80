"""A newcomer's first minutes with `manage.py demo`: a shop goes down, its orders move, it comes back.

The demo runs as a real process with its real children (daphne, three
simulated kitchens and a staffed one); the power cut goes through
`manage.py shop`, as the README tells a newcomer to do it, and the board is
read as an operator reads it.
"""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from orders import power
from orders.management.commands.demo import Command as Demo
from tests.base import ROOT, make_worker, stop_the_demo, wait_until
from tests.conftest import database_url
from tests.factory import make_order
from workers.models import Order, OrderEvent, Worker

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]


class RunningDemo:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def serves(self) -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=10) as response:  # noqa: S310 - our own server
            return bool(response.status == 200)


@pytest.fixture
def demo(live_menu: None, tmp_path: Path) -> Iterator[RunningDemo]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "demo.log"
    with open(log, "wb") as output:
        proc = subprocess.Popen(
            # Quick kitchens and a quick stand-in cook, so the test's orders are made in seconds.
            [sys.executable, "manage.py", "demo", "--port", str(port), "--grace", "1"]
            + ["--kitchen-speed", "0.02", "--standby", "0.3"],
            cwd=ROOT,
            # A one-second drive, so the stand-in driver brings every order to its door in the test's time.
            env={**os.environ, "DATABASE_URL": database_url(), "PIZZAQUEUE_DELIVERY_SECONDS": "1"},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    running = RunningDemo(proc, port, log)
    try:
        wait_until(lambda: Worker.objects.live().count() == 4, what="four kitchens", timeout=60)
        yield running
    finally:
        stop_the_demo(proc)


def newest(name: str) -> Worker:
    found = Worker.objects.filter(name=name).order_by("-incarnation").first()
    assert found is not None
    return found


def board_row(client: Client, name: str) -> str:
    page = client.get("/board/").content.decode()
    rows = re.findall(rf'<tr data-worker="{name}".*?</tr>', page, re.S)
    assert len(rows) == 1, page  # one row per shop, whatever its incarnations
    return rows[0]


def test_a_power_cut_at_a_demo_shop_moves_its_orders_and_the_demo_goes_on_serving(demo: RunningDemo) -> None:
    operator = Client()
    assert operator.login(username="operator", password=Demo.demo_password("operator")) is True
    orders = [make_order(area=f"area-{n}") for n in range(24)]
    shop_2 = newest("shop-2")

    out = io.StringIO()
    call_command("shop", "down", "shop-2", "--wait", "20", stdout=out)
    assert "shop-2 is down" in out.getvalue(), demo.output()
    assert demo.proc.poll() is None
    assert demo.serves() is True
    assert "shop-2 went down (killed by SIGKILL). The demo goes on" in demo.output()
    assert "down</span>" in board_row(operator, "shop-2")
    # Nothing of the chain waits on the shop that is down: every order is made elsewhere,
    # the staffed kitchen's too (its stand-in cook takes the steps nobody taps).
    wait_until(
        lambda: Order.objects.filter(pk__in=[o.pk for o in orders], status=Order.Status.DONE).count() == len(orders),
        timeout=60,
        what="every order made",
    )
    # The orders it held or had queued were moved, each customer told which shop makes it now.
    assert OrderEvent.objects.filter(kind=OrderEvent.Kind.REASSIGNED, worker=shop_2).exists()
    # And no shelf piles up: the stand-in driver takes each one to its door, paid.
    wait_until(
        lambda: (
            Order.objects.filter(pk__in=[o.pk for o in orders], handover=Order.Handover.DELIVERED).count()
            == len(orders)
        ),
        timeout=30,
        what="every order delivered",
    )

    out = io.StringIO()
    call_command("shop", "up", "shop-2", "--wait", "20", stdout=out)
    assert "shop-2 is open again" in out.getvalue(), demo.output()
    assert newest("shop-2").incarnation == shop_2.incarnation + 1
    assert "open</span>" in board_row(operator, "shop-2")

    # A kill from outside the demo (a crash, `kill -9`) is a power cut too.
    os.kill(newest("shop-3").pid, signal.SIGKILL)
    wait_until(lambda: not newest("shop-3").is_live, timeout=20, what="shop-3 declared down")
    assert demo.proc.poll() is None
    assert demo.serves() is True
    assert "shop-3 went down (killed by SIGKILL)" in demo.output()


def test_the_demo_prints_the_virtualenvs_python_and_aligned_lines(demo: RunningDemo) -> None:
    output = demo.output()
    python = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable
    assert f"{python} manage.py rush --orders 30" in output
    assert f"{python} manage.py shop down shop-2" in output
    values = [m.start(2) - m.start(0) for m in re.finditer(r"^(  [A-Z][\w -]{1,17}:\s+)(\S)", output, re.M)]
    assert len(values) >= 10
    assert set(values) == {values[0]}  # every value starts in the same column


def test_a_second_demo_run_keeps_the_accounts_passwords_and_token(live_menu: None) -> None:
    first = Demo(stdout=io.StringIO()).accounts("operator", "staffed-1")
    token = re.search(r"Integrator token: +(\S+)", "\n".join(first))
    assert token is not None
    User.objects.filter(username="operator").update(password="changed-elsewhere")  # noqa: S106 - a hash nobody matches
    second = Demo(stdout=io.StringIO()).accounts("operator", "staffed-1")
    assert second == first
    assert Client().login(username="kitchen", password=Demo.demo_password("kitchen")) is True


def test_the_shop_command_names_the_shops_and_says_when_no_demo_takes_the_request(live_menu: None) -> None:
    with pytest.raises(CommandError, match=r"No shop named 'shop-9'; the shops are: none yet\."):
        call_command("shop", "down", "shop-9")
    make_worker("shop-1")
    with pytest.raises(CommandError, match="No demo took the request"):
        call_command("shop", "down", "shop-1")
    assert power.pending(["shop-1"]) == {}  # withdrawn: a demo started later does not act on it
