from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, Permission
from django.core.cache import cache
from django.db import connection, connections
from django.test import Client
from playwright.sync_api import Browser, Page, sync_playwright
from websockets.sync.client import ClientConnection, connect

from orders.menu import seed_menu
from orders.models import Pizza
from orders.roles import create_roles
from tests.base import ROOT, logged_in, operator, superuser, wait_until

if TYPE_CHECKING:
    from tests.hosts import Hosts
    from tests.webtier import WebTier

# Fast clocks for worker subprocesses, so crash tests finish in seconds.
FAST_WORKER_ENV = {
    "PIZZAQUEUE_HEARTBEAT_INTERVAL": "0.2",
    "PIZZAQUEUE_HEARTBEAT_TIMEOUT": "1.5",
    "PIZZAQUEUE_MONITOR_INTERVAL": "0.2",
    "PIZZAQUEUE_POLL_INTERVAL": "0.05",
    "PIZZAQUEUE_KITCHEN_SPEED": "0",
    "PIZZAQUEUE_RETRY_BACKOFF": "0.1",
    "PIZZAQUEUE_SHUTDOWN_GRACE": "20",
}


def pytest_sessionstart(session: pytest.Session) -> None:
    # In CI a run that asked for PostgreSQL must really be on PostgreSQL: a
    # missing engine is a failure, never a quiet fall-back to SQLite.
    url = os.environ.get("DATABASE_URL", "")
    if os.environ.get("CI") and url.startswith(("postgres", "postgresql")):
        engine = settings.DATABASES["default"]["ENGINE"]
        if engine != "django.db.backends.postgresql":
            raise pytest.UsageError(f"DATABASE_URL asks for PostgreSQL but the engine is {engine}")


# Tests that stop, pause or restart the local PostgreSQL server's own processes
# (needs root and Debian's pg_ctlcluster); CI sets the variable.
signals_postgres = pytest.mark.skipif(
    not os.environ.get("PIZZAQUEUE_TEST_SIGNAL_POSTGRES"),
    reason="signals the PostgreSQL server's processes: opt in with PIZZAQUEUE_TEST_SIGNAL_POSTGRES=1",
)


def _transactional(request: pytest.FixtureRequest) -> bool:
    marker = request.node.get_closest_marker("django_db")
    by_marker = marker is not None and bool(marker.kwargs.get("transaction", marker.args[0] if marker.args else False))
    return by_marker or "transactional_db" in request.fixturenames


@pytest.fixture(autouse=True)
def _fresh_throttles(request: pytest.FixtureRequest, django_db_blocker: Any) -> Iterator[None]:
    """Throttle counters live in the shared cache, a table of the test database.

    A test in a rolled-back transaction leaves nothing there; one that commits
    (and its servers) starts with none spent and leaves none behind.
    """
    if not _transactional(request):
        yield
        return
    request.getfixturevalue("transactional_db")
    cache.clear()
    yield
    with django_db_blocker.unblock():  # the database fixture has already closed access
        cache.clear()


def seed() -> None:
    """What the data migrations made, again: a transactional test's flush empties every table."""
    seed_menu(Pizza)
    create_roles(Group, Permission)


@pytest.fixture
def menu(db: None) -> None:
    seed()


@pytest.fixture
def live_menu(transactional_db: None) -> None:
    seed()


@pytest.fixture
def staff(db: None) -> Client:
    """A browser logged in as a superuser (tests.base.superuser)."""
    return logged_in(superuser())


@pytest.fixture
def staff_client(client: Client) -> Client:
    """Django's `client` logged in as an operator (tests.base.operator): every kitchen's display, and the board."""
    return logged_in(operator(), client)


def database_url() -> str:
    """The URL of the test database, for worker subprocesses to share it."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class WorkerProcesses:
    """Starts real `manage.py worker` processes against the test database."""

    def __init__(self, tmp_path: Path, database: str = "") -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.tmp_path = tmp_path
        # Another database than the test database (a cluster's URL, tests/cluster.py).
        self.database = database

    def start(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        environment = {**os.environ, **FAST_WORKER_ENV, **env, "DATABASE_URL": self.database or database_url()}
        log = open(self.tmp_path / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115 - lives with the process
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "worker", "-v", "2", *args],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def start_on_cue(self, *args: str, **env: str) -> Callable[[], None]:
        """A worker process loaded now and started when the returned function is called
        (`tests/kitchen_on_cue.py`): its start is the moment of the call, not of its interpreter's start-up."""
        environment = {**os.environ, **FAST_WORKER_ENV, **env, "DATABASE_URL": database_url()}
        ready = self.tmp_path / f"worker-{len(self.procs)}.ready"
        log = open(self.tmp_path / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115 - lives with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.kitchen_on_cue", str(ready), "-v", "2", *args],
            cwd=ROOT,
            env=environment,
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        wait_until(lambda: ready.exists() or proc.poll() is not None, timeout=60, what="the cued worker to load")
        assert proc.poll() is None, self.logs()

        def cue() -> None:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()

        return cue

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.tmp_path.glob("worker-*.log")))

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def worker_processes(live_menu: None, tmp_path: Path) -> Iterator[WorkerProcesses]:
    # Depends on the transactional database, so the processes are killed
    # before the database is flushed at teardown.
    processes = WorkerProcesses(tmp_path)
    yield processes
    processes.stop_all()


class Daphne:
    """`daphne pizzaqueue.asgi:application` on a free port, sharing the test database."""

    def __init__(self, tmp_path: Path, name: str = "daphne", database: str = "") -> None:
        self.tmp_path = tmp_path
        self.name = name
        # Another database than the test database (a cluster's URL, tests/cluster.py).
        self.database = database
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, **env: str) -> None:
        """Start it; started again (after a kill), it serves on the same port."""
        # Bind here and hand the listening socket over: no race for the port, and
        # connections made before daphne is up simply wait in the backlog.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        environment = {
            **os.environ,
            **FAST_WORKER_ENV,
            "PIZZAQUEUE_RELAY_POLL_INTERVAL": "0.05",
            **env,
            "DATABASE_URL": self.database or database_url(),
        }
        # Set by the browser tests for their own process; the server must keep Django's guard.
        environment.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        log = open(self.tmp_path / f"{self.name}.log", "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "--fd", str(listener.fileno()), "pizzaqueue.asgi:application"],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=[listener.fileno()],
        )
        listener.close()
        wait_until(self._serving, timeout=30, interval=0.1, what="daphne to serve the menu")

    def _serving(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.logs()
        try:
            with urllib.request.urlopen(self.url("/"), timeout=5) as response:  # noqa: S310 - our own server
                return response.status == 200
        except OSError:
            return False

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.origin}{path}"

    def ws(self, path: str, **kw: Any) -> ClientConnection:
        return connect(f"ws://127.0.0.1:{self.port}{path}", origin=kw.pop("origin", self.origin), open_timeout=10, **kw)

    def logs(self) -> str:
        path = self.tmp_path / f"{self.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def daphne(live_menu: None, tmp_path: Path) -> Iterator[Daphne]:
    # Depends on the transactional database, so the server stops before it is flushed.
    server = Daphne(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def hosts(live_menu: None, tmp_path: Path) -> Iterator[Hosts]:
    """Kitchens on separate hosts (tests/hosts.py); skipped where hosts cannot be made,
    failed in CI. Depends on the transactional database, so every host's processes
    are gone before the database is flushed."""
    from tests import hosts as kit  # tests/hosts.py builds on this module

    if connection.vendor != "postgresql":
        pytest.skip("hosts reach the database over the network: PostgreSQL only")
    kit.require_hosts()
    kit.sweep_leftovers()
    made = kit.Hosts(tmp_path)
    try:
        yield made
    finally:
        made.teardown()


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def log_in(page: Page, base_url: str, path: str, username: str, password: str) -> None:
    """Through the login form, as a person would, landing on `path`."""
    page.goto(f"{base_url}/accounts/login/?next={path}")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(re.escape(path) + "$"))


async def forget_streams() -> None:
    """After a test of the WebSockets in this process: stop the relay, empty the channel
    layer, forget the streams it left open (they never disconnected, so they count no
    more), and close the consumers' database thread (a test database cannot be dropped
    while it is connected)."""
    from channels.db import database_sync_to_async
    from channels.layers import get_channel_layer

    from orders import consumers
    from workers.relay import stop_relay

    await stop_relay()
    await get_channel_layer().flush()
    for counts in (consumers.OPEN_BY_SESSION, consumers.OPEN_BY_ORDER, consumers.OPEN_TOTAL, consumers.CONNECT_RATE):
        counts.clear()
    await database_sync_to_async(connections.close_all)()


def sized_page(browser: Browser, viewport: dict[str, int]) -> Iterator[Page]:
    """A page in a browser context of its own at that size (a phone, a tablet, a laptop),
    closed after the test; screenshots of failures go to test-artifacts/."""
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    context = browser.new_context(viewport=viewport)
    yield context.new_page()
    context.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        message = "Chromium is missing: apt-get install chromium"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    # Playwright's sync API leaves its event loop marked as running in this thread
    # (it switches greenlets), which Django takes for an async context. The test's
    # own ORM calls are plain synchronous code, so allow them (daphne does not inherit this).
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def web_tier(live_menu: None, tmp_path: Path) -> Iterator[WebTier]:
    """HAProxy (deploy/haproxy.cfg) in front of two daphne processes; skipped without
    HAProxy, failed in CI. Stopped before the transactional database is flushed."""
    from tests.webtier import WebTier

    tier = WebTier(tmp_path)
    try:
        yield tier
    finally:
        tier.stop()
